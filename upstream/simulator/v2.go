package simulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits of a v2 submission (the vendor's submission-errors reference).
const (
	// MaxTextV2 is the most characters (runes) /moderate/text takes in `text`; more is 400 INVALID_REQUEST.
	MaxTextV2 = 20_000
	// MaxFieldV2 is the most bytes of any other form field; more is 400 INVALID_REQUEST.
	MaxFieldV2 = 16_384
	// MaxFieldsV2 is the most non-file form fields; more is 413 PAYLOAD_TOO_LARGE.
	MaxFieldsV2 = 8
)

// retiredV2 are the v1 submission endpoints the newer contract retired, folded into /moderate/text.
var retiredV2 = []string{"prompt", "chat"}

// renamedV2 maps a v2 modality to the v1 name of its field, refused with 400 naming it.
var renamedV2 = map[string]string{"text": "prompt", "image": "image_url", "video": "video_url"}

// mediaFieldsV2 are the v2 fields that carry a media URL (the v1 ones end in _url).
var mediaFieldsV2 = []string{"image", "video", "audio"}

// notMedia are URL path extensions of things that are not a media file (manifests, pages, documents,
// programs): a media URL ending in one is answered 415 UNSUPPORTED_MEDIA in v2.
var notMedia = []string{".m3u8", ".mpd", ".html", ".htm", ".php", ".txt", ".json", ".xml", ".pdf", ".exe", ".zip"}

// MarkerTooLarge in a v2 media URL makes the submission 413 PAYLOAD_TOO_LARGE, as media over the
// endpoint's size limit would be.
const MarkerTooLarge = "sim:too-large"

func (c *Config) setDefaultsV2() {
	if c.Modalities == nil {
		c.Modalities = map[string]string{"text": "text", "image": "image", "video": "video", "audio": "audio"}
	}
	if len(c.Keys) == 0 {
		scopes := slices.Clone(DefaultScopesV2)
		for m := range c.Modalities {
			if !slices.Contains(scopes, "moderate:"+m) {
				scopes = append(scopes, "moderate:"+m)
			}
		}
		c.Keys = []Key{{Token: DefaultKey, Account: DefaultAccount, Scopes: scopes}}
	}
	if c.WebhookRetrySchedule == nil {
		c.WebhookRetrySchedule = DefaultWebhookRetrySchedule
	}
	if c.WebhookRetryScale == 0 {
		c.WebhookRetryScale = 1
	}
	if c.WebhookSecret == "" {
		key := make([]byte, 32)
		rand.Read(key) //nolint:errcheck // crypto/rand.Read never fails
		c.WebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString(key)
	}
}

func (c *Config) validateContract() error {
	switch c.Contract {
	case ContractV1:
		if c.WebhookRetrySchedule != nil || c.WebhookRetryScale != 0 {
			return fmt.Errorf("%w: WebhookRetrySchedule/WebhookRetryScale: v1 never retries webhooks", ErrInvalidConfig)
		}
	case ContractV2:
		for _, m := range retiredV2 {
			if _, ok := c.Modalities[m]; ok {
				return fmt.Errorf("%w: Modalities[%q]: retired in v2", ErrInvalidConfig, m)
			}
		}
		if c.WebhookRetryScale < 0 {
			return fmt.Errorf("%w: WebhookRetryScale %v: must not be negative", ErrInvalidConfig, c.WebhookRetryScale)
		}
		for i, d := range c.WebhookRetrySchedule {
			if d < 0 {
				return fmt.Errorf("%w: WebhookRetrySchedule[%d] %v: must not be negative", ErrInvalidConfig, i, d)
			}
		}
	default:
		return fmt.Errorf("%w: Contract %q: must be %q or %q", ErrInvalidConfig, c.Contract, ContractV1, ContractV2)
	}
	return nil
}

// v2 reports whether the simulator speaks the newer contract.
func (s *Simulator) v2() bool { return s.cfg.Contract == ContractV2 }

// WebhookSecret is the secret webhooks are signed with ("whsec_…" when generated for v2), or "" when they
// are not signed.
func (s *Simulator) WebhookSecret() string { return s.cfg.WebhookSecret }

// Contract is the contract the simulator speaks, ContractV1 or ContractV2.
func (s *Simulator) Contract() string { return s.cfg.Contract }

// retired answers a submission to an endpoint the v2 contract retired: 410 Gone, no job, nothing billed.
func retired(w http.ResponseWriter, modality string) {
	writeErr(w, http.StatusGone, "ENDPOINT_RETIRED", "/moderate/"+modality+" is retired; use /moderate/text")
}

// submitError is a refused submission: its status, code and message.
type submitError struct {
	status    int
	code, msg string
}

func badRequest(msg string) *submitError {
	return &submitError{status: http.StatusBadRequest, code: "INVALID_REQUEST", msg: msg}
}

// checkFormV2 applies the v2 form rules to a parsed submission whose required field is field.
func checkFormV2(modality, field string, form url.Values) *submitError {
	if old := renamedV2[modality]; old != "" && form.Has(old) && old != field {
		return badRequest(old + " is not a field of /moderate/" + modality + "; send " + field)
	}
	if len(form) > MaxFieldsV2 {
		return &submitError{status: http.StatusRequestEntityTooLarge, code: "PAYLOAD_TOO_LARGE",
			msg: fmt.Sprintf("more than %d form fields", MaxFieldsV2)}
	}
	for name, vs := range form {
		for _, v := range vs {
			switch {
			case name == "text" && modality == "text":
				if utf8.RuneCountInString(v) > MaxTextV2 {
					return badRequest(fmt.Sprintf("text is over %d characters", MaxTextV2))
				}
			case len(v) > MaxFieldV2:
				return badRequest(fmt.Sprintf("%s is over %d bytes", name, MaxFieldV2))
			}
		}
	}
	return nil
}

// probeV2 stands in for the upstream's probe of a media URL at submission time (which it does without
// any network access): a host under the reserved TLD .invalid is unreachable (422), a path ending in
// a non-media extension is unsupported (415), and MarkerTooLarge anywhere in the URL is too large (413).
func probeV2(field, raw string) *submitError {
	u, err := url.Parse(raw)
	if err != nil {
		return badRequest(field + ": not a URL")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "invalid" || strings.HasSuffix(host, ".invalid") {
		return &submitError{status: http.StatusUnprocessableEntity, code: "MEDIA_UNREACHABLE",
			msg: "the origin of " + field + " refused the URL"}
	}
	if ext := strings.ToLower(path.Ext(u.Path)); slices.Contains(notMedia, ext) {
		return &submitError{status: http.StatusUnsupportedMediaType, code: "UNSUPPORTED_MEDIA",
			msg: field + " does not point to a media file (" + ext + ")"}
	}
	if strings.Contains(raw, MarkerTooLarge) {
		return &submitError{status: http.StatusRequestEntityTooLarge, code: "PAYLOAD_TOO_LARGE",
			msg: "the media behind " + field + " is over the endpoint's limit"}
	}
	return nil
}

func isMediaFieldV2(field string) bool { return slices.Contains(mediaFieldsV2, field) }

// window is the v2 per-account rate limit: at most limit requests in a fixed one-minute window that
// starts at the first request after the previous one ended.
type window struct {
	mu    sync.Mutex // mu guards start and n
	start time.Time
	n     int
}

// limitState is what the rate-limit headers report.
type limitState struct {
	limit, remaining int
	reset            time.Duration // until the window resets (v1: until the bucket is full)
	retryAfter       time.Duration // > 0: this request is refused
}

// take counts one request at now against limit (peek: only reports) and returns the state after it.
func (w *window) take(now time.Time, limit int, peek bool) limitState {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.start.IsZero() || !now.Before(w.start.Add(time.Minute)) {
		if peek {
			return limitState{limit: limit, remaining: limit, reset: time.Minute}
		}
		w.start, w.n = now, 0
	}
	st := limitState{limit: limit, reset: w.start.Add(time.Minute).Sub(now)}
	switch {
	case peek:
	case w.n >= limit:
		st.retryAfter = st.reset
	default:
		w.n++
	}
	st.remaining = max(0, limit-w.n)
	return st
}

// bucketState reports the v1 token bucket as rate-limit headers: remaining is the whole tokens left,
// reset the time until the bucket is full again.
func (s *Simulator) bucketState(a *account, now time.Time) limitState {
	tokens := a.limiter.TokensAt(now)
	st := limitState{limit: s.cfg.RPM, remaining: max(0, int(math.Floor(tokens)))}
	if missing := float64(s.cfg.Burst) - tokens; missing > 0 {
		st.reset = time.Duration(missing / (float64(s.cfg.RPM) / 60) * float64(time.Second))
	}
	return st
}

// limitHeaders reports whether rate-limit headers are sent.
func (s *Simulator) limitHeaders() bool { return s.cfg.RPM > 0 && (s.v2() || s.cfg.RateLimitHeaders) }

// setLimitHeaders writes x-ratelimit-limit, -remaining and -reset (whole seconds, rounded up).
func setLimitHeaders(h http.Header, st limitState) {
	h.Set("X-Ratelimit-Limit", strconv.Itoa(st.limit))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(st.remaining))
	h.Set("X-Ratelimit-Reset", strconv.Itoa(int(math.Ceil(st.reset.Seconds()))))
}

// peekLimit writes the headers of the account's current state without counting a request.
func (s *Simulator) peekLimit(h http.Header, a *account) {
	if !s.limitHeaders() || a == nil {
		return
	}
	now := s.cfg.Now()
	if s.v2() {
		setLimitHeaders(h, a.window.take(now, s.cfg.RPM, true))
		return
	}
	setLimitHeaders(h, s.bucketState(a, now))
}

// webhookIDV2 is the Standard Webhooks message id of a job's result, also its delivery_id and
// X-Omnifence-Delivery-Id: the same on every attempt and on a duplicate.
func webhookIDV2(jobID string) string { return "wh_" + jobID }

// webhookJSONV2 renders the v2 webhook body: {is_prohibited, reason?, job_id, status, completed_at,
// delivery_id}, nsfw on completed image and video jobs, error_code on failed ones. Called with mu held.
func (s *Simulator) webhookJSONV2(j *job) []byte {
	var nsfw *bool
	if j.media && j.status == statusCompleted {
		v := j.categories["nsfw"]
		nsfw = &v
	}
	b, _ := json.Marshal(struct {
		IsProhibited *bool  `json:"is_prohibited"`
		Reason       string `json:"reason,omitempty"`
		JobID        string `json:"job_id"`
		Status       string `json:"status"`
		CompletedAt  string `json:"completed_at"`
		DeliveryID   string `json:"delivery_id"`
		NSFW         *bool  `json:"nsfw,omitempty"`
		ErrorCode    string `json:"error_code,omitempty"`
	}{j.decision(), j.reason, j.id, j.status, stamp(j.completed), webhookIDV2(j.id), nsfw, j.errorCode})
	return b
}

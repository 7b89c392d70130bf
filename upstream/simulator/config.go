package simulator

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
)

// Endpoint names, for [Simulator.SetFault], [Simulator.Calls] and the stats.
const (
	EndpointSubmit   = "submit"   // POST /api/v1/moderate/{modality}
	EndpointJob      = "job"      // GET /api/v1/job/{id}
	EndpointJobs     = "jobs"     // GET /api/v1/jobs
	EndpointExport   = "export"   // GET /api/v1/jobs/export
	EndpointRegister = "register" // POST /api/v1/webhook/register (and DELETE in v2)
	EndpointHealth   = "health"   // GET /health
	EndpointOther    = "other"    // anything else (404)
	// EndpointModerationConfig is GET /api/v1/me/moderation-config.
	EndpointModerationConfig = "moderation_config"
	// EndpointAll as a SetFault endpoint applies to every API endpoint without a fault of its own.
	EndpointAll = "*"
)

// Scopes the simulator checks.
const (
	ScopePrompt = "moderate:prompt"
	ScopeImage  = "moderate:image"
	ScopeVideo  = "moderate:video"
	ScopeChat   = "moderate:chat"
	ScopeJobs   = "job:read"
	ScopeUsage  = "usage:read"
	// ScopeText and ScopeAudio are the newer contract's (v2) submission scopes.
	ScopeText  = "moderate:text"
	ScopeAudio = "moderate:audio"
)

// DefaultScopes are the scopes of a client-created key: no moderate:chat.
var DefaultScopes = []string{ScopePrompt, ScopeImage, ScopeVideo, ScopeJobs, ScopeUsage}

// DefaultScopesV2 are the scopes of the default key of a v2 simulator.
var DefaultScopesV2 = []string{ScopeText, ScopeImage, ScopeVideo, ScopeAudio, ScopeJobs, ScopeUsage}

// Contracts of the upstream the simulator can speak (Config.Contract): [contract.ContractV1], unsigned
// webhooks sent once, and [contract.ContractV2], signed and retried webhooks and rate-limit headers on
// every response; see the package doc for which behaviour belongs to which.
const (
	ContractV1 = contract.ContractV1
	ContractV2 = contract.ContractV2
)

// DefaultWebhookRetrySchedule is the v2 wait before each retry of a webhook that was not answered 2xx
// in time: exponential from 9 s, doubling, 11 retries, so 12 attempts over about 5 h 7 min.
var DefaultWebhookRetrySchedule = []time.Duration{
	9 * time.Second, 18 * time.Second, 36 * time.Second, 72 * time.Second, 144 * time.Second,
	288 * time.Second, 576 * time.Second, 1152 * time.Second, 2304 * time.Second, 4608 * time.Second,
	9216 * time.Second,
}

// DefaultKey is the bearer key of the default account when Config.Keys is empty.
const DefaultKey = "sim_test_key_0123456789abcdef"

// DefaultAccount is the account of [DefaultKey].
const DefaultAccount = "default"

// Key is one API key.
type Key struct {
	Token   string
	Account string
	// Scopes granted; a submission needs "moderate:<modality>", reads need job:read.
	Scopes []string
	// Terminated makes every request with this key 403 ACCOUNT_TERMINATED.
	Terminated bool
	// ID and Name are shown as api_key_id and api_key_name on v2 jobs; empty means "key_<n>" (n counting
	// from 1 in Config.Keys) and "<Account> key".
	ID, Name string
}

// Fault is the injected misbehaviour of one endpoint. Rates are probabilities in [0,1] per request.
type Fault struct {
	// ErrorRate answers ErrorStatus (default 503 SERVICE_UNAVAILABLE; 500 is INTERNAL_ERROR).
	ErrorRate   float64
	ErrorStatus int
	// RateLimitRate answers 429 RATE_LIMITED with Retry-After: RetryAfter (default 1s, rounded up to
	// whole seconds).
	RateLimitRate float64
	RetryAfter    time.Duration
	// StatusUnknownRate (submissions only) answers 503 SUBMISSION_STATUS_UNKNOWN with a job_id, as the
	// newer contract does (offered in both contracts). The job is created, unless StatusUnknownLostRate
	// says otherwise.
	StatusUnknownRate float64
	// StatusUnknownLostRate is the share of those 503s whose job was not created: GET /job/{job_id} then
	// answers 404 JOB_NOT_FOUND.
	StatusUnknownLostRate float64
	// Latency delays the answer (cut short when the client goes away).
	Latency time.Duration
}

// Config configures a [Simulator]. The zero value is usable.
type Config struct {
	// Contract is ContractV1 (the default when empty) or ContractV2.
	Contract string
	// RateLimitHeaders makes a v1 simulator send the x-ratelimit-* headers on every response too (a v2
	// one always does); without it v1 sends only Retry-After and X-Ratelimit-Reset on a 429. Headers are
	// sent only when RPM is set: there is no limit to report otherwise.
	RateLimitHeaders bool
	// Keys are the accepted keys. Empty: one key [DefaultKey] of [DefaultAccount] with [DefaultScopes]
	// plus moderate:<m> for every extra modality of Modalities.
	Keys []Key
	// GrantChat adds moderate:chat to the default key.
	GrantChat bool
	// RPM is the per-account request limit per minute; 0 is unlimited. In v1 it is a token bucket and
	// Burst defaults to RPM/12 (5 seconds' worth), at least 1. In v2 it is a fixed window of one minute
	// that starts at the account's first request after the previous window ended, and Burst is unused.
	RPM   int
	Burst int
	// PaymentRequired makes every submission 402 PAYMENT_REQUIRED (see SetPaymentRequired).
	PaymentRequired bool
	// Modalities maps a modality of POST /moderate/{modality} to its required form field; the job type
	// is the modality. Default in v1 prompt→prompt, image→image_url, video→video_url, chat→prompt; in
	// v2 text→text, image→image, video→video, audio→audio (prompt and chat are retired there and may
	// not be listed). In v1, adding "text"→"text" models only that part of the newer contract.
	Modalities map[string]string
	// CustomCategories are the slugs of the custom categories every account starts with (see
	// [Simulator.SetCustomCategories]): 1 to 64 of a-z, 0-9, _ and -, none twice, none a built-in
	// category, custom or text.
	CustomCategories []string
	// ExtraFields are added to every job object (GET /job, GET /jobs), to model unknown fields.
	ExtraFields map[string]any

	// QueueDelay is how long a job stays queued, ProcessDelay how long it processes. Zero means the
	// default (10ms, 50ms); a negative value means no delay.
	QueueDelay   time.Duration
	ProcessDelay time.Duration

	// Seed seeds every random decision; 0 picks a random seed (see Simulator.Seed).
	Seed uint64
	// Per-job fault rates, in [0,1].
	DropRate        float64 // the webhook is never sent
	DuplicateRate   float64 // the webhook is sent twice
	NeverFinishRate float64 // the job stays processing forever
	FailRate        float64 // the job ends failed
	ProhibitedRate  float64 // the job is rejected (is_prohibited true)
	// WebhookDelay delays each webhook after completion.
	WebhookDelay time.Duration
	// Faults are the initial per-endpoint faults (keys: Endpoint… constants).
	Faults map[string]Fault

	// WebhookWorkers sending webhooks (default 32) and the queue in front of them (default 10000; a
	// webhook finding it full is recorded as failed, never blocking).
	WebhookWorkers int
	WebhookQueue   int
	// WebhookTimeout is the webhook client's timeout (default 10s, as the upstream).
	WebhookTimeout time.Duration
	// WebhookSecret, when set, signs every webhook with Standard Webhooks headers (webhook-id,
	// webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>"), as the newer
	// upstream contract does. "whsec_<base64>" is the base64-decoded key, any other value the key itself.
	// Empty: in v1 webhooks are unsigned, as the documented upstream sends them; in v2 a random
	// whsec_ secret is generated (see Simulator.WebhookSecret).
	WebhookSecret string
	// WebhookRetrySchedule (v2 only) is the wait before each retry of a webhook whose attempt was not
	// answered 2xx within WebhookTimeout; nil means DefaultWebhookRetrySchedule, an empty non-nil slice
	// no retry. WebhookRetryScale multiplies every wait (0 means 1), so tests can run the 5 h schedule in
	// milliseconds. v1 never retries, and setting either in v1 is a config error.
	WebhookRetrySchedule []time.Duration
	WebhookRetryScale    float64
	// HTTP sends webhooks; default a pooled client with WebhookTimeout.
	HTTP *http.Client
	// JobRetention, when positive, forgets finished jobs that were created longer ago than that (checked
	// every 1024 submissions), so a long-running simulator keeps bounded memory; GET /job then answers
	// 404 for them, as an upstream past its retention would. Zero keeps every job.
	JobRetention time.Duration
	// MaxCalls is how many recent calls are kept per endpoint for Calls (default 100000); counts are
	// always complete.
	MaxCalls int
	Log      zerolog.Logger
	// Now stamps created_at/completed_at and drives the rate limiter; job timers use real time.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Contract == "" {
		c.Contract = ContractV1
	}
	if c.Contract == ContractV2 {
		c.setDefaultsV2()
	}
	if c.Modalities == nil {
		c.Modalities = map[string]string{"prompt": "prompt", "image": "image_url", "video": "video_url", "chat": "prompt"}
	}
	if len(c.Keys) == 0 {
		scopes := slices.Clone(DefaultScopes)
		if c.GrantChat {
			scopes = append(scopes, ScopeChat)
		}
		for m := range c.Modalities { // extra modalities (newer contract) are granted too
			if !slices.Contains([]string{"prompt", "image", "video", "chat"}, m) {
				scopes = append(scopes, "moderate:"+m)
			}
		}
		c.Keys = []Key{{Token: DefaultKey, Account: DefaultAccount, Scopes: scopes}}
	}
	c.Keys = slices.Clone(c.Keys) // IDs and names are filled in below, never in the caller's slice
	for i := range c.Keys {
		if c.Keys[i].ID == "" {
			c.Keys[i].ID = "key_" + strconv.Itoa(i+1)
		}
		if c.Keys[i].Name == "" {
			c.Keys[i].Name = c.Keys[i].Account + " key"
		}
	}
	if c.Burst == 0 && c.RPM > 0 {
		c.Burst = max(1, c.RPM/12)
	}
	c.QueueDelay = delay(c.QueueDelay, 10*time.Millisecond)
	c.ProcessDelay = delay(c.ProcessDelay, 50*time.Millisecond)
	if c.WebhookWorkers == 0 {
		c.WebhookWorkers = 32
	}
	if c.WebhookQueue == 0 {
		c.WebhookQueue = 10_000
	}
	if c.WebhookTimeout == 0 {
		c.WebhookTimeout = 10 * time.Second
	}
	if c.HTTP == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = c.WebhookWorkers * 2
		t.MaxIdleConnsPerHost = c.WebhookWorkers
		c.HTTP = &http.Client{Transport: t, Timeout: c.WebhookTimeout}
	}
	if c.MaxCalls == 0 {
		c.MaxCalls = 100_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func delay(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Validate checks the configuration after defaults; errors wrap [ErrInvalidConfig] and name the field.
func (c *Config) Validate() error {
	if err := c.validateContract(); err != nil {
		return err
	}
	rates := map[string]float64{"DropRate": c.DropRate, "DuplicateRate": c.DuplicateRate,
		"NeverFinishRate": c.NeverFinishRate, "FailRate": c.FailRate, "ProhibitedRate": c.ProhibitedRate}
	for name, r := range rates {
		if r < 0 || r > 1 {
			return fmt.Errorf("%w: %s %v: must be in [0,1]", ErrInvalidConfig, name, r)
		}
	}
	for ep, f := range c.Faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("%w: Faults[%q]: %v", ErrInvalidConfig, ep, err)
		}
	}
	seen := map[string]bool{}
	for i, k := range c.Keys {
		switch {
		case k.Token == "" || strings.ContainsAny(k.Token, " \t\r\n"):
			return fmt.Errorf("%w: Keys[%d].Token: empty or contains white space", ErrInvalidConfig, i)
		case k.Account == "":
			return fmt.Errorf("%w: Keys[%d].Account: required", ErrInvalidConfig, i)
		case seen[k.Token]:
			return fmt.Errorf("%w: Keys[%d].Token: duplicate", ErrInvalidConfig, i)
		}
		seen[k.Token] = true
	}
	for m, field := range c.Modalities {
		if m == "" || field == "" || strings.Contains(m, "/") {
			return fmt.Errorf("%w: Modalities[%q]=%q: modality and field must be non-empty", ErrInvalidConfig, m, field)
		}
	}
	if err := checkSlugs(c.CustomCategories); err != nil {
		return fmt.Errorf("%w: CustomCategories: %v", ErrInvalidConfig, err)
	}
	if _, err := webhookKey(c.WebhookSecret); err != nil {
		return fmt.Errorf("%w: WebhookSecret: %v", ErrInvalidConfig, err)
	}
	switch {
	case c.RPM < 0:
		return fmt.Errorf("%w: RPM %d: must not be negative", ErrInvalidConfig, c.RPM)
	case c.Burst < 0:
		return fmt.Errorf("%w: Burst %d: must not be negative", ErrInvalidConfig, c.Burst)
	case c.WebhookWorkers < 0 || c.WebhookQueue < 0:
		return fmt.Errorf("%w: WebhookWorkers/WebhookQueue: must not be negative", ErrInvalidConfig)
	case c.MaxCalls < 0:
		return fmt.Errorf("%w: MaxCalls %d: must not be negative", ErrInvalidConfig, c.MaxCalls)
	case c.WebhookDelay < 0 || c.WebhookTimeout < 0:
		return fmt.Errorf("%w: WebhookDelay/WebhookTimeout: must not be negative", ErrInvalidConfig)
	}
	return nil
}

func (f Fault) validate() error {
	for _, r := range []float64{f.ErrorRate, f.RateLimitRate, f.StatusUnknownRate, f.StatusUnknownLostRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("rate %v: must be in [0,1]", r)
		}
	}
	if f.ErrorStatus != 0 && (f.ErrorStatus < 500 || f.ErrorStatus > 599) {
		return fmt.Errorf("ErrorStatus %d: must be 5xx", f.ErrorStatus)
	}
	if f.Latency < 0 || f.RetryAfter < 0 {
		return fmt.Errorf("Latency/RetryAfter: must not be negative")
	}
	return nil
}

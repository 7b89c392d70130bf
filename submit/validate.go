package submit

import (
	"encoding/json"
	"net"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/text"
)

// fieldWebhookURL is the form field the bridge sets itself.
const fieldWebhookURL = "webhook_url"

// validate checks a submit request body for a modality whose required form field is field, and returns
// the form fields. The checks are the ones the upstream would make (so a bad request never spends
// budget) plus the bridge's own: only the modality's field is accepted and webhook_url is refused.
func (s *Service) validate(data []byte, field string) (map[string]string, *replyError) {
	if len(data) > s.cfg.MaxRequestBytes {
		return nil, badRequest("request body of %d bytes is over %d", len(data), s.cfg.MaxRequestBytes)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return nil, badRequest("body must be a JSON object of string fields, e.g. {%q: \"...\"}", field)
	}
	if _, ok := raw[fieldWebhookURL]; ok {
		return nil, badField(fieldWebhookURL, "%s is set by the bridge and must not be given", fieldWebhookURL)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fields := make(map[string]string, len(raw))
	for _, k := range keys {
		if k != field {
			return nil, badField(text.Truncate(k, 64), "unknown field %q: this modality takes %q", text.Truncate(k, 64), field)
		}
		v := raw[k]
		if len(v) == 0 || v[0] != '"' {
			return nil, badField(k, "field %q must be a string", k)
		}
		var str string
		if err := json.Unmarshal(v, &str); err != nil {
			return nil, badField(k, "field %q must be a string", k)
		}
		fields[k] = str
	}
	val := fields[field]
	if strings.TrimSpace(val) == "" {
		return nil, badField(field, "field %q is required and must not be empty", field)
	}
	if !utf8.ValidString(val) {
		return nil, badField(field, "field %q must be valid UTF-8", field)
	}
	if contract.MediaField(field) {
		if err := s.checkURL(field, val); err != nil {
			return nil, err
		}
	} else if n := utf8.RuneCountInString(val); n > s.cfg.MaxTextChars {
		return nil, badField(field, "field %q has %d characters, over %d", field, n, s.cfg.MaxTextChars)
	}
	return fields, nil
}

// checkURL requires an http(s) URL with a public host, as the upstream does for media URLs. Only literal
// addresses and localhost are checked: no DNS lookups on the request path.
func (s *Service) checkURL(field, raw string) *replyError {
	if len(raw) > s.cfg.MaxURLChars {
		return badField(field, "field %q is over %d bytes", field, s.cfg.MaxURLChars)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return badField(field, "field %q is not a URL", field)
	case u.Scheme != "http" && u.Scheme != "https":
		return badField(field, "field %q must be an http or https URL", field)
	case u.Host == "" || u.Hostname() == "":
		return badField(field, "field %q has no host", field)
	case u.User != nil:
		return badField(field, "field %q must not carry credentials", field)
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return badField(field, "field %q must be a public URL", field)
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast()) {
		return badField(field, "field %q must be a public URL", field)
	}
	return nil
}

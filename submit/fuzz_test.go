package submit

import (
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSubmitRequest feeds arbitrary bodies to the submit decoder and validator for each modality: it must
// not panic, a refusal is a 400, and an accepted request must satisfy every validation invariant as an
// independent decoder sees it: a JSON object holding exactly the modality's field as a non-empty string
// within limits (a public http(s) URL for a _url field), and no webhook_url.
func FuzzSubmitRequest(f *testing.F) {
	for _, tt := range badSubmits() {
		f.Add(tt.modality, []byte(tt.body))
	}
	for _, good := range []struct{ modality, body string }{
		{"prompt", `{"prompt": "is this ok?"}`},
		{"chat", `{"prompt": "hi \u00e9\ud83d\ude00"}`},
		{"image", `{"image_url": "https://cdn.example.com/a.png?x=1"}`},
		{"video", `{"video_url": "http://[2001:db8::1]:8080/v.mp4"}`},
		{"image", `{"image_url": "https://8.8.8.8/a.png"}`},
		{"prompt", `{"prompt": "a", "prompt": "b"}`},
	} {
		f.Add(good.modality, []byte(good.body))
	}
	s := &Service{}
	s.cfg.setDefaults()
	f.Fuzz(func(t *testing.T, modality string, body []byte) {
		field, ok := s.cfg.Modalities[modality]
		if !ok {
			field = "prompt"
		}
		fields, rerr := s.validate(body, field)
		if rerr != nil {
			if rerr.code != "400" || !strings.HasPrefix(rerr.desc, "INVALID_REQUEST: ") {
				t.Fatalf("refusal %q %q, want 400 INVALID_REQUEST", rerr.code, rerr.desc)
			}
			return
		}
		if len(body) > s.cfg.MaxRequestBytes {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
			t.Fatalf("accepted a body that is not a JSON object: %v", err)
		}
		if _, ok := obj[fieldWebhookURL]; ok {
			t.Fatal("accepted webhook_url")
		}
		if len(obj) != 1 || len(fields) != 1 {
			t.Fatalf("accepted keys %v (fields %v), want only %q", obj, fields, field)
		}
		want, ok := obj[field].(string)
		if !ok || fields[field] != want {
			t.Fatalf("field %q = %q, independent decoder says %#v", field, fields[field], obj[field])
		}
		if strings.TrimSpace(want) == "" || !utf8.ValidString(want) {
			t.Fatalf("accepted empty or invalid value %q", want)
		}
		if !strings.HasSuffix(field, "_url") {
			if n := utf8.RuneCountInString(want); n > s.cfg.MaxTextChars {
				t.Fatalf("accepted %d characters", n)
			}
			return
		}
		u, err := url.Parse(want)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
			len(want) > s.cfg.MaxURLChars {
			t.Fatalf("accepted URL %q", want)
		}
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if host == "localhost" || strings.HasSuffix(host, ".localhost") {
			t.Fatalf("accepted local URL %q", want)
		}
		if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
			ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast()) {
			t.Fatalf("accepted non-public URL %q", want)
		}
	})
}

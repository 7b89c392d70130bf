package simulator

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzPublicURL: publicURL never panics, and what it accepts is an http(s) URL whose host is not a
// literal private, loopback or link-local address nor localhost.
func FuzzPublicURL(f *testing.F) {
	for _, s := range []string{"https://example.com/a.png", "http://127.0.0.1/", "http://[::ffff:10.0.0.1]/",
		"ftp://x", "http://localhost./", "https://LOCALHOST/", "http://169.254.169.254/", "http://[fe80::1%25eth0]/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if publicURL(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			t.Fatalf("accepted %q", raw)
		}
		h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if h == "localhost" {
			t.Fatalf("accepted localhost %q", raw)
		}
		if a, err := netip.ParseAddr(h); err == nil && (a.Unmap().IsLoopback() || a.Unmap().IsPrivate()) {
			t.Fatalf("accepted private %q", raw)
		}
	})
}

// Package text holds the small string rules that several packages share.
package text

import "unicode/utf8"

// Truncate shortens s to at most n bytes plus an ellipsis, for echoing untrusted or long input in
// messages and logs. It never cuts a UTF-8 character in two; s is returned unchanged when it fits.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // never cut a character in two
	}
	return s[:n] + "…"
}

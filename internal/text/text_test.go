package text

import "testing"

func TestTruncateKeepsCharactersWhole(t *testing.T) {
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"multi-byte character at the cut", "ab€cd", 3, "ab…"},
		{"fits", "short", 10, "short"},
		{"exact", "short", 5, "short"},
		{"ascii", "abcdef", 3, "abc…"},
		{"zero", "abc", 0, "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Truncate(tt.s, tt.n); got != tt.want {
				t.Fatalf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
			}
		})
	}
}

package main

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestTestFailpointParse(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		opts    int
		wantErr string
	}{
		{"unset", "", 0, ""},
		{"before publish", "before-publish:/tmp/f", 1, ""},
		{"after publish", "after-publish:/tmp/f", 1, ""},
		{"after history", "compact-after-history:/tmp/f", 1, ""},
		{"after remove", "compact-after-remove:/tmp/f", 1, ""},
		{"no file", "before-publish:", 0, "BRIDGE_TEST_FAILPOINT: want <point>:<file>, the point one of before-publish, after-publish, compact-after-history, compact-after-remove;"},
		{"no colon", "after-publish", 0, "BRIDGE_TEST_FAILPOINT: want <point>:<file>, the point one of before-publish, after-publish, compact-after-history, compact-after-remove;"},
		{"unknown point", "mid-publish:/tmp/f", 0, "BRIDGE_TEST_FAILPOINT: want <point>:<file>, the point one of before-publish, after-publish, compact-after-history, compact-after-remove;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := testFailpoint(map[string]string{envTestFailpoint: tt.value}, zerolog.Nop())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if len(opts) != tt.opts {
				t.Fatalf("%d options, want %d", len(opts), tt.opts)
			}
		})
	}
}

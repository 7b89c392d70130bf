package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
)

// TestBenchInProcess runs bridge bench in its default in-process mode, webhooks and submissions: every
// accepted operation's job ends in a result, and the report has every figure.
func TestBenchInProcess(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"webhooks", []string{"--count", "200", "--concurrency", "8", "--duplicates", "0.2", "--floor"},
			[]string{"results       ", "owed", "end to end", "per result", "errors        none", "ingest / floor:"}},
		{"rounds", []string{"--roles", "ingest", "--floor", "--rounds", "2", "--count", "100", "--concurrency", "4"},
			[]string{"round  first", "ingest / floor over 2 rounds: median", "medians: floor"}},
		{"submissions", []string{"--submit", "--count", "40", "--concurrency", "8"},
			[]string{"submissions to", "results       40 of 40 owed", "request latency", "per result", "errors        none"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out, errb bytes.Buffer
			args := append([]string{"bench", "--settle", "60s"}, tt.args...)
			if err := run(ctx, args, nil, &out, &errb); err != nil {
				t.Fatalf("bench: %v\n%s%s", err, out.String(), errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			// Every accepted job's result arrived: "results N of N owed".
			for line := range strings.SplitSeq(out.String(), "\n") {
				if f := strings.Fields(line); len(f) >= 5 && f[0] == "results" && f[1] != f[3] {
					t.Errorf("not every result arrived: %s", line)
				}
			}
		})
	}
}

func TestBenchFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"remote target", []string{"--target", "http://example.com:8080"}},
		{"remote nats", []string{"--target", "http://127.0.0.1:1", "--nats", "nats://10.1.2.3:4222"}},
		{"nats without target", []string{"--nats", "nats://127.0.0.1:4222"}},
		{"floor with target, no nats", []string{"--target", "http://127.0.0.1:1", "--floor"}},
		{"rounds without floor", []string{"--target", "http://127.0.0.1:1", "--rounds", "3"}},
		{"floor-only without nats", []string{"--floor-only"}},
		{"floor-only with target", []string{"--floor-only", "--nats", "nats://127.0.0.1:1", "--target", "http://127.0.0.1:1"}},
		{"floor-serve remote", []string{"--floor-serve", "0.0.0.0:8090", "--nats", "nats://127.0.0.1:1"}},
		{"floor-target without target", []string{"--floor-target", "http://127.0.0.1:1"}},
		{"floor with submit", []string{"--floor", "--submit"}},
		{"bad duplicates", []string{"--target", "http://127.0.0.1:1", "--duplicates", "1.5"}},
		{"argument", []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), append([]string{"bench"}, tt.args...), nil, &out, &errb)
			if err == nil || exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want a usage error", err, exitCode(err))
			}
		})
	}
}

// TestBenchFloorAgainstExternalServer runs the floor alone and the alternating comparison against a NATS
// server outside the bridge's process, as the production shape (BRIDGE_NATS_URL) has it.
func TestBenchFloorAgainstExternalServer(t *testing.T) {
	n := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"bench", "--floor-only", "--nats", n.ClientURL(), "--count", "100", "--concurrency", "4"},
		nil, &out, &errb); err != nil {
		t.Fatalf("floor-only: %v\n%s%s", err, out.String(), errb.String())
	}
	for _, w := range []string{"floor (bare net/http", "accepted      100", "errors        none"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("floor-only output lacks %q:\n%s", w, out.String())
		}
	}
}

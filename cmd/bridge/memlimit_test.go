package main

import (
	"errors"
	"os"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/rs/zerolog"
)

// TestMemoryLimitFollowsTheContainer: bridge run gives the runtime 90% of the container's memory limit as
// its soft limit; it keeps GOMEMLIMIT when one is set, and changes nothing when no limit can be read.
func TestMemoryLimitFollowsTheContainer(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	const known = 123_456_789
	for _, tt := range []struct {
		name      string
		env       string
		provider  memlimit.Provider
		wantLimit int64
	}{
		// 256 MiB, the chart's default limit: 90% of 268,435,456 bytes.
		{"container limit", "", memlimit.Limit(256 << 20), 241_591_910},
		{"GOMEMLIMIT kept", "230MiB", memlimit.Limit(256 << 20), known},
		{"no cgroup", "", func() (uint64, error) { return 0, errors.New("no cgroup here") }, known},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tt.env)
			t.Setenv("AUTOMEMLIMIT", "") // restored after the test; unset during it
			os.Unsetenv("AUTOMEMLIMIT")
			debug.SetMemoryLimit(known)
			setMemoryLimit(zerolog.Nop(), tt.provider)
			if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
				t.Errorf("the runtime's memory limit is %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

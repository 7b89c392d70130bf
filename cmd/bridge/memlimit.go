package main

import (
	"math"
	"os"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/rs/zerolog"
)

// memoryLimitRatio is the share of the container's memory limit that bridge run gives the Go runtime as its
// soft limit: the rest is for what the runtime does not count (the embedded nats-server's file buffers
// are the kernel's) and for the collector's headroom.
const memoryLimitRatio = 0.9

// setMemoryLimit sets the Go runtime's soft memory limit to memoryLimitRatio of the container's memory
// limit (its cgroup's, from provider), so that the collector works harder before the kernel's OOM killer
// acts, and no second setting has to follow the container's limit. GOMEMLIMIT, when set, is kept (the
// runtime applied it at start), and AUTOMEMLIMIT=off turns this off (or gives another ratio): the
// memlimit package's own variables.
func setMemoryLimit(log zerolog.Logger, provider memlimit.Provider) {
	limit, err := memlimit.Set(memlimit.WithProvider(provider), memlimit.WithRatio(memoryLimitRatio))
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		log.Info().Str("GOMEMLIMIT", os.Getenv("GOMEMLIMIT")).Msg("memory limit from GOMEMLIMIT")
	case err != nil:
		log.Debug().Err(err).Msg("memory limit: none read from a cgroup; GOMEMLIMIT left unset")
	case limit == math.MaxInt64:
		log.Debug().Msg("memory limit: the container's memory is not limited")
	default:
		log.Info().Int64("gomemlimit_bytes", limit).Float64("ratio", memoryLimitRatio).
			Msg("memory limit: GOMEMLIMIT set from the container's memory limit")
	}
}

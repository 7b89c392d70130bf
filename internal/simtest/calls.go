package simtest

import (
	"slices"
	"time"

	"github.com/evershield/bridge/upstream/simulator"
)

// Calls are the simulator's answered API calls, health checks aside, oldest first.
func Calls(sim *simulator.Simulator) []simulator.Call {
	var out []simulator.Call
	for _, ep := range []string{simulator.EndpointSubmit, simulator.EndpointJob, simulator.EndpointJobs,
		simulator.EndpointExport, simulator.EndpointModerationConfig, simulator.EndpointRegister, simulator.EndpointOther} {
		out = append(out, sim.Calls(ep)...)
	}
	slices.SortFunc(out, func(a, b simulator.Call) int { return a.At.Compare(b.At) })
	return out
}

// MostInWindow is the largest number of calls, sorted oldest first, in any window w.
func MostInWindow(calls []simulator.Call, w time.Duration) int {
	most := 0
	for i := range calls {
		j := i
		for j < len(calls) && calls[j].At.Sub(calls[i].At) < w {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/evershield/bridge/loadgen"
)

// roundResult is one side of one round of the floor comparison.
type roundResult struct {
	perSec float64
	p50    float64 // ms
	p99    float64 // ms
	errors int
}

func resultOf(rep *loadgen.Report) roundResult {
	n := 0
	for _, v := range rep.Errors {
		n += v
	}
	return roundResult{perSec: rep.AcceptedPerSec(), p50: ms(loadgen.Quantile(rep.Latency, .5)),
		p99: ms(loadgen.Quantile(rep.Latency, .99)), errors: n}
}

// compareRounds drives the floor at floorURL and ingest at ingestURL with the same load in alternating
// rounds (floor first in odd rounds, ingest first in even ones, so neither always runs on a warmer or
// quieter box), prints each round, and then the median ingest/floor ratios with their range.
func (b *benchFlags) compareRounds(ctx context.Context, floorURL string, stdout io.Writer) error {
	cfg, ingestURL, rounds := b.cfg, strings.TrimRight(b.target, "/"), b.rounds
	fmt.Fprintf(stdout, "alternating rounds: ingest %s vs floor %s, concurrency %d, each side up to %d requests or %v a round\n",
		ingestURL, floorURL, cfg.Concurrency, cfg.Count, cfg.Duration)
	fmt.Fprintln(stdout, "round  first   floor/s  ingest/s  ratio  floor p50/p99 ms  ingest p50/p99 ms  p99 ratio  errors f/i")
	var ratios, p99Ratios []float64
	var floors, ingests []roundResult
	for i := 1; i <= rounds; i++ {
		order := []string{"floor", "ingest"}
		if i%2 == 0 {
			order = []string{"ingest", "floor"}
		}
		var f, in roundResult
		for _, side := range order {
			c := cfg
			c.Target = ingestURL
			if side == "floor" {
				c.Target = floorURL
			}
			rep, err := loadgen.Run(ctx, c)
			if err != nil {
				return usageError{err}
			}
			if side == "floor" {
				f = resultOf(rep)
			} else {
				in = resultOf(rep)
			}
		}
		if f.perSec == 0 || f.p99 == 0 {
			return errors.New("bridge bench: the floor accepted nothing; is the NATS server up?")
		}
		ratios, p99Ratios = append(ratios, in.perSec/f.perSec), append(p99Ratios, in.p99/f.p99)
		floors, ingests = append(floors, f), append(ingests, in)
		fmt.Fprintf(stdout, "%5d  %-6s  %8.0f  %8.0f  %5.2f  %6.2f / %-7.2f  %6.2f / %-7.2f  %9.2f  %d/%d\n",
			i, order[0], f.perSec, in.perSec, ratios[i-1], f.p50, f.p99, in.p50, in.p99, p99Ratios[i-1], f.errors, in.errors)
	}
	med := func(f func(roundResult) float64, rs []roundResult) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return median(v)
	}
	perSec := func(r roundResult) float64 { return r.perSec }
	p99 := func(r roundResult) float64 { return r.p99 }
	fmt.Fprintf(stdout, "ingest / floor over %d rounds: median %.2f (range %.2f–%.2f) of the floor's accepted/s; "+
		"p99 median %.2f× the floor's (range %.2f–%.2f)\n", rounds, median(ratios), slices.Min(ratios), slices.Max(ratios),
		median(p99Ratios), slices.Min(p99Ratios), slices.Max(p99Ratios))
	fmt.Fprintf(stdout, "medians: floor %.0f/s p99 %.2fms, ingest %.0f/s p99 %.2fms\n",
		med(perSec, floors), med(p99, floors), med(perSec, ingests), med(p99, ingests))
	return nil
}

// median is the middle of v (the mean of the two middles when even); 0 when empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

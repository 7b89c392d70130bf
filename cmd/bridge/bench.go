package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/loadgen"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

var benchCommand = &command{
	name: "bench", args: "[flags]", summary: "drive webhooks or submissions at a bridge and measure (in-process by default)",
	run: runBench,
}

const benchUsage = `bridge bench [flags]

Drives webhooks (or submissions) into a bridge and measures it.

Without --target it starts everything in-process: an embedded nats-server, the upstream simulator
(jobs finish at once, no faults) and every role, as bridge demo does. With --target it drives a running
bridge; --nats lets it observe results (end-to-end latency) and is needed for --submit.

Webhook mode first submits the jobs its webhooks carry over moderate.prompt (not measured), so the bridge
knows them: webhooks for jobs it does not know are verified only within its small unknown-job budget.
In-process, the simulator then sends no webhooks of its own and polling waits an hour, so every result
comes from a webhook the bench sent. Against --target without --nats, webhooks carry made-up job ids
(ingest is measured; the bridge dead-letters them). Only loopback targets. The run ends at --count or
--duration, whichever comes first, then waits up to --settle for the results.

The floor is a bare net/http handler that publishes each body with nats.go and answers after the ack.
Comparing ingest with it, same server, same load, alternating rounds (webhooks carry made-up ids):

  bridge bench --roles ingest --floor --rounds 7 ...          in-process, embedded server
  bridge bench --target URL --nats NATS --floor --rounds 7    a running bridge; the floor runs in this
                                                              process against the same NATS server
  bridge bench --target URL --floor-target URL2 --rounds 7    a floor running elsewhere (--floor-serve)
  bridge bench --floor-serve 127.0.0.1:8090 --nats NATS        serve a floor until interrupted
  bridge bench --floor-only --nats NATS                       measure the floor alone

With --rate, latency is timed from each request's slot in the schedule, not from its send.`

// benchFlags are bridge bench's flags.
type benchFlags struct {
	cfg             loadgen.Config
	target, natsURL string
	apiRPM          int
	keep, floor     bool
	roles           string
	jobLatency      time.Duration
	// floorOnly, floorServe and floorTarget drive, serve or name a floor against an external server;
	// rounds alternates ingest and floor.
	floorOnly   bool
	floorServe  string
	floorTarget string
	rounds      int
	// embedded is the in-process bridge's server, once started, and natsUser the bridge's own user the
	// bench connects to it as (its floor creates a stream of its own, which the ops user may not).
	embedded *server.Server
	natsUser nats.Option
}

func (b *benchFlags) register(fs *flagSet) {
	cfg := &b.cfg
	fs.StringVar(&b.target, "target", "", "base URL of a running bridge's HTTP listener (loopback); empty starts one in-process")
	fs.StringVar(&b.natsURL, "nats", "", "NATS URL of the --target bridge, to observe results and for --submit")
	fs.Float64Var(&cfg.Rate, "rate", 0, "operations per second; 0 = flat out")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "operations in flight at once")
	fs.IntVar(&cfg.Count, "count", 10000, "operations, at most")
	fs.DurationVar(&cfg.Duration, "duration", time.Minute, "load phase, at most")
	fs.DurationVar(&cfg.Settle, "settle", 30*time.Second, "wait for outstanding results after the load, at most")
	fs.BoolVar(&cfg.Submit, "submit", false, "submit over NATS (moderate.prompt) instead of posting webhooks; the upstream sends the webhooks")
	fs.Float64Var(&cfg.Duplicates, "duplicates", 0, "share of webhooks that repeat an earlier job's (with --submit in-process: the simulator's duplicate rate)")
	fs.IntVar(&b.apiRPM, "api-rpm", 6_000_000, "in-process: the bridge's upstream budget per minute (the real default is 60)")
	fs.DurationVar(&b.jobLatency, "job-latency", 0, "in-process: the simulator answers GET /job after this long (e.g. 50ms, a remote upstream)")
	fs.BoolVar(&b.keep, "keep", false, "in-process: keep the data directory and bridge.log")
	fs.StringVar(&b.roles, "roles", "", "in-process: BRIDGE_ROLES of the bridge (default all); ingest alone measures the webhook path without the verifier competing for CPU")
	fs.BoolVar(&b.floor, "floor", false, "also drive a bare net/http + nats.go handler on the same server (the embedded one, or --nats with --target) the same way, and print ingest's ratio to it")
	fs.BoolVar(&b.floorOnly, "floor-only", false, "drive only a floor connected to --nats, no bridge")
	fs.StringVar(&b.floorServe, "floor-serve", "", "serve a floor connected to --nats on this loopback address until interrupted, for --floor-target")
	fs.StringVar(&b.floorTarget, "floor-target", "", "base URL of a floor served elsewhere (--floor-serve) to compare --target with")
	fs.IntVar(&b.rounds, "rounds", 0, "with a floor: alternate this many ingest and floor runs and print the median ratio with its range")
}

// comparing reports whether ingest is compared with a floor in alternating rounds.
func (b *benchFlags) comparing() bool {
	return b.rounds > 0 || b.floorTarget != "" || (b.floor && b.target != "")
}

func (b *benchFlags) check() error {
	if b.natsURL != "" {
		for u := range strings.SplitSeq(b.natsURL, ",") {
			if err := loadgen.CheckLoopback(strings.Replace(strings.TrimSpace(u), "nats://", "http://", 1)); err != nil {
				return usageError{fmt.Errorf("--nats: %w", err)}
			}
		}
	}
	floorOwn := b.floorOnly || b.floorServe != ""
	switch {
	case floorOwn && b.natsURL == "":
		return usageError{errors.New("bridge bench: --floor-only and --floor-serve need --nats")}
	case floorOwn && (b.target != "" || b.floor || b.floorTarget != ""):
		return usageError{errors.New("bridge bench: --floor-only and --floor-serve run a floor alone")}
	case b.floorServe != "":
		if err := loadgen.CheckLoopback("http://" + b.floorServe); err != nil {
			return usageError{fmt.Errorf("--floor-serve: %w", err)}
		}
	case b.target == "" && b.natsURL != "" && !floorOwn:
		return usageError{errors.New("bridge bench: --nats goes with --target")}
	case (b.floor || b.floorTarget != "" || b.rounds > 0) && b.cfg.Submit:
		return usageError{errors.New("bridge bench: the floor is for webhooks, not --submit")}
	case b.floor && b.target != "" && b.natsURL == "":
		return usageError{errors.New("bridge bench: --floor with --target needs --nats, the bridge's NATS server")}
	case b.floorTarget != "" && (b.target == "" || b.floor):
		return usageError{errors.New("bridge bench: --floor-target goes with --target, instead of --floor")}
	case b.rounds > 0 && !b.floor && b.floorTarget == "":
		return usageError{errors.New("bridge bench: --rounds needs a floor: --floor or --floor-target")}
	case b.rounds < 0:
		return usageError{errors.New("bridge bench: --rounds must not be negative")}
	}
	if b.jobLatency != 0 && b.target != "" {
		return usageError{errors.New("bridge bench: --job-latency is for the in-process bridge")}
	}
	if b.floorTarget != "" {
		return loadgen.CheckLoopback(b.floorTarget)
	}
	return nil
}

// runBench is bridge bench.
func runBench(ctx context.Context, c *cli, args []string) error {
	stdout := c.stdout
	fs := newFlagSet("bridge bench", benchUsage, c)
	var b benchFlags
	b.register(fs)
	if err := fs.noArgs(args); err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bridge bench: %d CPUs (GOMAXPROCS %d), %s, count %d, duration %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), b.cfg.Count, b.cfg.Duration)
	if b.floorOnly || b.floorServe != "" {
		return b.runFloorAlone(ctx, stdout)
	}
	if b.comparing() {
		return b.runCompare(ctx, stdout)
	}
	var floorRep *loadgen.Report
	if b.target == "" {
		stop, frep, err := b.startInProcess(ctx, stdout)
		if err != nil {
			return err
		}
		defer stop()
		floorRep = frep
	}
	b.cfg.Target = strings.TrimRight(b.target, "/")
	if b.natsURL != "" {
		opts := []nats.Option{nats.Name("bridge-bench")}
		if b.natsUser != nil {
			opts = append(opts, b.natsUser)
		}
		nc, err := nats.Connect(b.natsURL, opts...)
		if err != nil {
			return fmt.Errorf("connect %s: %w", b.natsURL, err)
		}
		defer nc.Close()
		if err := b.prepare(ctx, nc, stdout); err != nil {
			return err
		}
	}
	rep, err := loadgen.Run(ctx, b.cfg)
	if err != nil {
		return usageError{err}
	}
	rep.Print(stdout)
	if floorRep != nil && floorRep.AcceptedPerSec() > 0 {
		q := loadgen.Quantile
		fmt.Fprintf(stdout, "ingest / floor: %.2f of the floor's accepted/s; p50 %.2fms vs %.2fms, p99 %.2fms vs %.2fms\n",
			rep.AcceptedPerSec()/floorRep.AcceptedPerSec(), ms(q(rep.Latency, .5)), ms(q(floorRep.Latency, .5)),
			ms(q(rep.Latency, .99)), ms(q(floorRep.Latency, .99)))
	}
	return nil
}

// runFloorAlone is --floor-serve (serve until ctx is done) and --floor-only (drive the floor once).
func (b *benchFlags) runFloorAlone(ctx context.Context, stdout io.Writer) error {
	addr := "127.0.0.1:0"
	if b.floorServe != "" {
		addr = b.floorServe
	}
	f, err := startFloorURL(ctx, b.natsURL, addr)
	if err != nil {
		return err
	}
	defer f.close()
	if b.floorServe != "" {
		fmt.Fprintf(stdout, "floor at %s, publishing to %s; interrupt to stop\n", f.url, b.natsURL)
		<-ctx.Done()
		return nil
	}
	b.cfg.Target = f.url
	rep, err := loadgen.Run(ctx, b.cfg)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintf(stdout, "floor (bare net/http + nats.go publish and ack) on %s: ", b.natsURL)
	rep.Print(stdout)
	return nil
}

// runCompare drives ingest and a floor on the same NATS server in alternating rounds.
func (b *benchFlags) runCompare(ctx context.Context, stdout io.Writer) error {
	b.rounds = max(b.rounds, 1)
	b.floor = b.floor && b.floorTarget == ""
	var floorURL string
	switch {
	case b.floorTarget != "":
		floorURL = strings.TrimRight(b.floorTarget, "/")
	case b.target != "":
		f, err := startFloorURL(ctx, b.natsURL, "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer f.close()
		floorURL = f.url
		fmt.Fprintf(stdout, "floor in this process at %s, publishing to %s over TCP\n", floorURL, b.natsURL)
	default:
		b.floor = false // the in-process bridge measures no floor of its own; the rounds do
		stop, _, err := b.startInProcess(ctx, stdout)
		if err != nil {
			return err
		}
		defer stop()
		lbFloor, err := startFloor(ctx, b.embedded, b.natsUser)
		if err != nil {
			return err
		}
		defer lbFloor.close()
		floorURL = lbFloor.url
	}
	return b.compareRounds(ctx, floorURL, stdout)
}

// startInProcess starts the embedded nats-server, the simulator and a bridge, points the bench at them
// and, with --floor, first measures the floor. stop releases them.
func (b *benchFlags) startInProcess(ctx context.Context, stdout io.Writer) (stop func(), floorRep *loadgen.Report, err error) {
	simCfg := simulator.Config{Seed: 1, QueueDelay: -1, ProcessDelay: -1, GrantChat: true}
	if b.jobLatency > 0 {
		simCfg.Faults = map[string]simulator.Fault{simulator.EndpointJob: {Latency: b.jobLatency}}
	}
	env := map[string]string{"BRIDGE_API_RPM": fmt.Sprint(b.apiRPM), "BRIDGE_RETENTION": "24h"}
	if b.roles != "" {
		env["BRIDGE_ROLES"] = b.roles
	}
	if b.cfg.Submit {
		simCfg.DuplicateRate = b.cfg.Duplicates
	} else {
		// The bench sends every webhook: the simulator sends none, and polling does not race it.
		simCfg.DropRate = 1
		env["BRIDGE_WEBHOOK_GRACE"] = "1h"
	}
	lb, err := startLocal(ctx, localSpec{name: "bench", sim: simCfg, env: env, keep: b.keep})
	if err != nil {
		return nil, nil, err
	}
	b.target, b.natsURL, b.embedded = lb.app.PublicURL(), lb.app.Server().ClientURL(), lb.app.Server()
	if b.natsUser, err = lb.bridgeUser(); err != nil {
		lb.close()
		return nil, nil, err
	}
	if b.floor {
		if floorRep, err = b.measureFloor(ctx, lb, stdout); err != nil {
			lb.close()
			return nil, nil, err
		}
	}
	fmt.Fprintf(stdout, "in-process: embedded NATS at %s, bridge at %s, simulator at %s (GET /job in %v), budget %d/min, logs %s\n",
		b.natsURL, b.target, lb.sim.URL(), b.jobLatency, b.apiRPM, lb.logFile.Name())
	return lb.close, floorRep, nil
}

// measureFloor drives a bare net/http + nats.go handler on the same server the same way.
func (b *benchFlags) measureFloor(ctx context.Context, lb *localBridge, stdout io.Writer) (*loadgen.Report, error) {
	user, err := lb.bridgeUser()
	if err != nil {
		return nil, err
	}
	f, err := startFloor(ctx, lb.app.Server(), user)
	if err != nil {
		return nil, err
	}
	defer f.close()
	fcfg := b.cfg
	fcfg.Target = f.url
	frep, err := loadgen.Run(ctx, fcfg)
	if err != nil {
		return nil, usageError{err}
	}
	fmt.Fprint(stdout, "floor (bare net/http + nats.go publish and ack, same server): ")
	frep.Print(stdout)
	return frep, nil
}

// prepare gives the load generator the connection, waits for the submit service, and in webhook mode
// submits the jobs the webhooks carry (not measured).
func (b *benchFlags) prepare(ctx context.Context, nc *nats.Conn, stdout io.Writer) error {
	b.cfg.NC = nc
	hasSubmit := b.roles == "" || slices.Contains(strings.Split(b.roles, ","), bridge.RoleSubmit)
	if b.cfg.Submit || hasSubmit {
		if err := waitForService(ctx, nc, 10*time.Second); err != nil {
			return err
		}
	}
	if b.cfg.Submit || !hasSubmit {
		return nil
	}
	n := int(float64(b.cfg.Count)*(1-b.cfg.Duplicates)) + 1
	start := time.Now()
	ids, err := createJobs(ctx, nc, n, 32)
	if err != nil {
		return err
	}
	b.cfg.Jobs = ids
	fmt.Fprintf(stdout, "submitted %d jobs over %sprompt for the webhooks to carry in %.1fs (not measured)\n",
		len(ids), contract.Default.SubjectSubmit, time.Since(start).Seconds())
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// createJobs submits n prompt jobs over moderate.prompt, conc at once, and returns their ids.
func createJobs(ctx context.Context, nc *nats.Conn, n, conc int) ([]string, error) {
	ids := make([]string, n) // each goroutine writes its own element
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for i := range n {
		g.Go(func() error {
			sctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			rep, _, err := ops.Submit(sctx, nc, ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": "bridge bench"}})
			if err != nil {
				return fmt.Errorf("submit job %d: %w", i, err)
			}
			ids[i] = rep.JobID
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return ids, nil
}

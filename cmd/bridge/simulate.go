package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/evershield/bridge/upstream/simulator"
)

// simFlags are the simulator's knobs shared by bridge simulate and bridge demo.
type simFlags struct {
	rpm                                             int
	seed                                            uint64
	drop, duplicate, neverFinish, fail, prohibited  float64
	errorRate, rateLimitRate                        float64
	queueDelay, processDelay, webhookDelay, latency time.Duration
	grantChat                                       bool
}

func (s *simFlags) register(fs *flag.FlagSet, d simFlags) {
	fs.IntVar(&s.rpm, "rpm", d.rpm, "per-account request limit per minute (0 = unlimited)")
	fs.Uint64Var(&s.seed, "seed", d.seed, "seed of every random decision (0 = random)")
	fs.Float64Var(&s.drop, "drop", d.drop, "share of webhooks never sent")
	fs.Float64Var(&s.duplicate, "duplicate", d.duplicate, "share of webhooks sent twice")
	fs.Float64Var(&s.neverFinish, "never-finish", d.neverFinish, "share of jobs that stay processing forever")
	fs.Float64Var(&s.fail, "fail", d.fail, "share of jobs that end failed")
	fs.Float64Var(&s.prohibited, "prohibited", d.prohibited, "share of jobs rejected")
	fs.Float64Var(&s.errorRate, "error-rate", d.errorRate, "share of API calls answered 503")
	fs.Float64Var(&s.rateLimitRate, "429-rate", d.rateLimitRate, "share of API calls answered 429")
	fs.DurationVar(&s.queueDelay, "queue-delay", d.queueDelay, "how long a job stays queued")
	fs.DurationVar(&s.processDelay, "process-delay", d.processDelay, "how long a job processes")
	fs.DurationVar(&s.webhookDelay, "webhook-delay", d.webhookDelay, "delay of each webhook after completion")
	fs.DurationVar(&s.latency, "latency", d.latency, "added latency of every API call")
	fs.BoolVar(&s.grantChat, "chat", d.grantChat, "grant moderate:chat to the default key")
}

func (s simFlags) config() simulator.Config {
	cfg := simulator.Config{
		RPM: s.rpm, Seed: s.seed, DropRate: s.drop, DuplicateRate: s.duplicate, NeverFinishRate: s.neverFinish,
		FailRate: s.fail, ProhibitedRate: s.prohibited, QueueDelay: s.queueDelay, ProcessDelay: s.processDelay,
		WebhookDelay: s.webhookDelay, GrantChat: s.grantChat,
	}
	if s.errorRate > 0 || s.rateLimitRate > 0 || s.latency > 0 {
		cfg.Faults = map[string]simulator.Fault{simulator.EndpointAll: {
			ErrorRate: s.errorRate, RateLimitRate: s.rateLimitRate, Latency: s.latency,
		}}
	}
	return cfg
}

var simulateCommand = &command{
	name: "simulate", args: "[flags]", summary: "run the upstream API simulator",
	run: func(ctx context.Context, c *cli, args []string) error { return runSimulate(ctx, c, args) },
}

const simulateUsage = `bridge simulate [flags]

Runs the upstream moderation API simulator on -addr until interrupted: the documented contract (v1) or
the newer one (v2), with the faults the flags ask for. Point a bridge at it with
BRIDGE_API_URL=http://<addr>/api/v1 and BRIDGE_API_KEY=<the key it prints>.`

func runSimulate(ctx context.Context, c *cli, args []string) error {
	stdout, stderr := c.stdout, c.stderr
	fs := newFlagSet("bridge simulate", simulateUsage, c)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	logFormat := fs.String("log-format", "console", "json or console")
	retention := fs.Duration("job-retention", time.Hour, "forget finished jobs created longer ago than this (0 keeps every job)")
	contract := fs.String("contract", simulator.ContractV1, "upstream contract to speak: v1 (documented: prompt/chat, unsigned webhooks sent once) or v2 (newer: text/audio, signed and retried webhooks, rate-limit headers)")
	secret := fs.String("webhook-secret", "", "Standard Webhooks signing secret (whsec_<base64>); v2 generates one and prints it when empty, v1 signs only when it is set")
	var sf simFlags
	sf.register(fs.FlagSet, simFlags{rpm: 60, queueDelay: 200 * time.Millisecond, processDelay: 2 * time.Second, grantChat: true})
	if err := fs.noArgs(args); err != nil {
		return err
	}
	log, err := newLogger("info", *logFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	cfg := sf.config()
	cfg.Log, cfg.JobRetention = log, *retention
	cfg.Contract, cfg.WebhookSecret = *contract, *secret
	sim, err := simulator.New(cfg)
	if err != nil {
		return usageError{err}
	}
	if err := sim.Start(*addr); err != nil {
		return err
	}
	defer sim.Close()
	fmt.Fprintf(stdout, "simulator (contract %s) at %s  (key %s)\n", sim.Contract(), sim.URL(), simulator.DefaultKey)
	if sim.Contract() == simulator.ContractV2 {
		if *secret == "" { // generated: the bridge needs it as BRIDGE_WEBHOOK_SECRET
			fmt.Fprintf(stdout, "webhook secret: %s\n", sim.WebhookSecret())
		}
		fmt.Fprintf(stdout, "try: curl -H 'Authorization: Bearer %s' -F text=hello %s/moderate/text\n", simulator.DefaultKey, sim.URL())
	} else {
		fmt.Fprintf(stdout, "try: curl -H 'Authorization: Bearer %s' -F prompt=hello %s/moderate/prompt\n", simulator.DefaultKey, sim.URL())
	}
	<-ctx.Done()
	return nil
}

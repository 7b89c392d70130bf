package main

import (
	"context"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
)

var runCommand = &command{
	name: "run", summary: "run the roles in BRIDGE_ROLES (default all); the default command",
	run: func(ctx context.Context, c *cli, args []string) error {
		fs := newFlagSet("bridge run", `bridge run

Runs the roles in BRIDGE_ROLES (ingest, verify, reconcile, submit; default all) until SIGINT or SIGTERM,
(or just bridge) with the configuration in BRIDGE_* variables (bridge help config lists them). A bad variable stops
start-up with one line per variable, and exit code 2. Traces follow the standard OTEL_* variables (docs/OPERATIONS.md,
Traces); with none set, tracing is off.`, c)
		if err := fs.noArgs(args); err != nil {
			return err
		}
		cfg, err := parseConfig(c.env)
		if err != nil {
			return usageError{err}
		}
		log, err := newLogger(cfg.LogLevel, cfg.LogFormat, c.stderr)
		if err != nil {
			return usageError{err}
		}
		setMemoryLimit(log, memlimit.FromCgroup)
		opts, err := testFailpoint(c.env, log)
		if err != nil {
			return usageError{err}
		}
		tracing, err := bridge.TracingFromEnv(ctx, c.env, buildVersion(), log)
		if err != nil {
			return usageError{err}
		}
		// After Run: every span has ended. The signal ended ctx, not the flush's time.
		defer flushTraces(context.WithoutCancel(ctx), tracing, log)
		a, err := bridge.New(ctx, cfg, log, append(opts, bridge.WithVersion(buildVersion()), tracing.Option())...)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	},
}

// flushTraces sends the last spans, within bridge.TracingShutdownTimeout; a failure is only logged.
func flushTraces(ctx context.Context, t *bridge.Tracing, log zerolog.Logger) {
	if err := t.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("tracing: the last spans were not all sent")
	}
}

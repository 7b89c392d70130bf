package main

import (
	"context"

	"github.com/evershield/bridge/bridge"
)

var runCommand = &command{
	name: "run", summary: "run the roles in BRIDGE_ROLES (default all); the default command",
	run: func(ctx context.Context, c *cli, args []string) error {
		fs := newFlagSet("bridge run", `bridge run

Runs the roles in BRIDGE_ROLES (ingest, verify, reconcile, submit; default all) until SIGINT or SIGTERM,
(or just bridge) with the configuration in BRIDGE_* variables (bridge help config lists them). A bad variable stops
start-up with one line per variable, and exit code 2.`, c)
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
		opts, err := testFailpoint(c.env, log)
		if err != nil {
			return usageError{err}
		}
		a, err := bridge.New(ctx, cfg, log, append(opts, bridge.WithVersion(buildVersion()))...)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	},
}

package main

import "context"

// The demo's entry in the command table; the demo itself is in demo.go.
var demoCommand = &command{
	name: "demo", args: "[flags]", summary: "run everything in-process against the simulator with faults, print a table",
	run: func(ctx context.Context, c *cli, args []string) error { return runDemo(ctx, args, c.stdout, c.stderr) },
}

const demoUsage = `bridge demo [flags]

Starts an embedded nats-server, the upstream simulator with realistic faults (dropped, duplicated and
forged webhooks, upstream 5xx and 429, jobs that never finish) and every role, submits a workload over
moderate.*, and prints what became of it. Exits 0 only when nothing was lost and nothing doubled.`

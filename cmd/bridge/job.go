package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ops"
)

var jobCommand = &command{
	name: "job", args: "<id>", summary: "a job's JOBS record (or history entry) and result, over jobs.status", run: runJobClient,
}

const jobSynopsis = `bridge job <job_id> [-wait] [-timeout D]

A small client of jobs.status: prints {"job": <JOBS record>, "result": <result message or null>}.`

// runJobClient is bridge job.
func runJobClient(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge job", jobSynopsis, c)
	var nf natsFlags
	nf.register(fs)
	wait := fs.Bool("wait", false, "wait until the job's result is out")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.fail(errors.New("bridge job: want one job id"))
	}
	if _, err := uuid.Parse(pos[0]); err != nil {
		return usageError{fmt.Errorf("bridge job: %q is not a job id (UUID)", pos[0])}
	}
	get := ops.JobStatus
	if *wait {
		get = waitResult
	}
	return c.withClient(ctx, nf, *timeout, func(ctx context.Context, nc *nats.Conn, names contract.Names) error {
		raw, err := get(ctx, nc, names, pos[0])
		if err != nil {
			return fmt.Errorf("bridge job %s: %w", pos[0], err)
		}
		return printRaw(c.stdout, raw)
	})
}

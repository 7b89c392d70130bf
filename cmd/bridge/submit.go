package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ops"
)

var submitCommand = &command{
	name: "submit", args: "<modality> [value]", summary: "submit a job over moderate.<modality>", run: runSubmitClient,
}

const submitSynopsis = `bridge submit <modality> [TEXT_OR_URL] [-field k=v]... [-body JSON] [-idempotency-key K] [-wait] [-timeout D]

A small client of moderate.<modality>: the positional value fills prompt (prompt, chat), image_url or
video_url. Prints the reply {"job_id": ..., "status": "queued"}; with -wait, polls jobs.status until the
result is out and prints that.`

// runSubmitClient is bridge submit.
func runSubmitClient(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge submit", submitSynopsis, c)
	var nf natsFlags
	nf.register(fs)
	var fieldArgs listFlag
	fs.Func("field", "a form field k=v (repeatable)", func(v string) error {
		fieldArgs = append(fieldArgs, v)
		return nil
	})
	body := fs.String("body", "", "the whole request as a JSON object of form fields")
	key := fs.String("idempotency-key", "", "makes a retried submission return the first job")
	wait := fs.Bool("wait", false, "wait for the result and print the job status")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the reply, and with -wait for the result")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 || len(pos) > 2 {
		return fs.fail(errors.New("bridge submit: want a modality and at most one value"))
	}
	modality := pos[0]
	fields := map[string]string{}
	if *body != "" {
		if err := json.Unmarshal([]byte(*body), &fields); err != nil {
			return usageError{fmt.Errorf("bridge submit -body: want a JSON object of string fields: %v", err)}
		}
	}
	for _, f := range fieldArgs {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return usageError{fmt.Errorf("bridge submit -field %q: want k=v", f)}
		}
		fields[k] = v
	}
	if len(pos) == 2 {
		m, ok := contract.LookupModality(modality)
		if !ok {
			return usageError{fmt.Errorf("bridge submit: no default field for modality %q; use -field name=value", modality)}
		}
		fields[m.Field] = pos[1]
	}
	if len(fields) == 0 {
		return usageError{fmt.Errorf("bridge submit %s: nothing to moderate; give a value or -field", modality)}
	}
	if *wait && *key == "" {
		*key = uuid.NewString() // a retry after a lost reply must not submit twice
	}
	return c.withClient(ctx, nf, *timeout, func(ctx context.Context, nc *nats.Conn, names contract.Names) error {
		rep, raw, err := ops.Submit(ctx, nc, ops.SubmitRequest{Modality: modality, Fields: fields, IdempotencyKey: *key, Names: names})
		if se, ok := errors.AsType[*ops.ServiceError](err); ok && se.Busy() {
			return fmt.Errorf("bridge submit %s: refused, the account's upstream budget is busy with accepted work; "+
				"nothing was submitted. Retry in %ds (%s)", modality, max(1, se.RetryAfter), se.Description)
		}
		if err != nil {
			return fmt.Errorf("bridge submit %s: %w", modality, err)
		}
		if *wait {
			if raw, err = waitResult(ctx, nc, names, rep.JobID); err != nil {
				return fmt.Errorf("bridge submit: job %s: %w", rep.JobID, err)
			}
		}
		return printRaw(c.stdout, raw)
	})
}

// withClient runs f, the work of bridge submit or bridge job, with a connection and within timeout.
func (c *cli) withClient(ctx context.Context, nf natsFlags, timeout time.Duration, f func(context.Context, *nats.Conn, contract.Names) error) error {
	nc, _, conn, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(ctx, nc, conn.names)
}

// waitResult polls jobs.status until the job has a result or ctx ends.
func waitResult(ctx context.Context, nc *nats.Conn, names contract.Names, id string) (json.RawMessage, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		raw, err := ops.JobStatus(ctx, nc, names, id)
		if err == nil && ops.HasResult(raw) {
			return raw, nil
		}
		var se *ops.ServiceError
		if errors.As(err, &se) && se.Code != "503" {
			return nil, err
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("no result yet")
			}
			return raw, fmt.Errorf("%w (%v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func printRaw(w io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		_, err := fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	_, err := fmt.Fprintln(w, b.String())
	return err
}

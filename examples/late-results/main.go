// Command late-results listens on results.late.>: the verified results of jobs that the bridge had
// already timed out (a BRIDGE_TIMEOUT result on results.<type>) and that the upstream completed afterwards.
// Each job gets at most one late result. A service that acted on the timeout (e.g. held a post for a human)
// can use it to settle the job with the real verdict.
//
// This is a plain core subscription: it sees late results published while it runs. To miss none across
// restarts, read them with a durable consumer on RESULTS filtered to results.late.> instead (see
// examples/consume-results).
//
// Usage:
//
//	late-results [-s nats://127.0.0.1:4222] [-n 0]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
)

func main() {
	fs := flag.NewFlagSet("late-results", flag.ExitOnError)
	url := fs.String("s", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (also NATS_URL)")
	n := fs.Int("n", 0, "stop after this many late results (0: run until interrupted)")
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("late-results example"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer nc.Close()
	if err := Listen(ctx, nc, Config{N: *n, Out: os.Stdout}); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Config configures [Listen].
type Config struct {
	// N stops Listen after N late results; 0 runs until ctx ends.
	N int
	// Out receives one line per late result.
	Out io.Writer
	// Ready, when set, is closed once the subscription is registered with the server.
	Ready chan<- struct{}
}

// LateResult is the part of a late result this listener prints.
type LateResult struct {
	JobID        string `json:"job_id"`
	Type         string `json:"type"`
	Status       string `json:"status"`
	IsProhibited *bool  `json:"is_prohibited"`
	Bridge       struct {
		Source string `json:"source"`
	} `json:"bridge"`
}

// Listen subscribes to results.late.> and prints each late result until N were seen or ctx ends.
func Listen(ctx context.Context, nc *nats.Conn, cfg Config) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("results.late.>", ch)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.FlushWithContext(ctx); err != nil { // the server has the subscription from here on
		return err
	}
	if cfg.Ready != nil {
		close(cfg.Ready)
	}
	for seen := 0; cfg.N == 0 || seen < cfg.N; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg := <-ch:
			var r LateResult
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				fmt.Fprintf(os.Stderr, "%s: not a result: %v\n", msg.Subject, err)
				continue
			}
			verdict := "failed"
			if r.IsProhibited != nil {
				verdict = map[bool]string{true: "prohibited", false: "allowed"}[*r.IsProhibited]
			}
			fmt.Fprintf(cfg.Out, "late %s %s %s %s (Nats-Msg-Id %s, source %s)\n", msg.Subject, r.JobID, r.Status,
				verdict, msg.Header.Get("Nats-Msg-Id"), r.Bridge.Source)
			seen++
		}
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Command consume-results is a downstream service that reads the bridge's verified results from the RESULTS
// stream with a durable pull consumer.
//
// What it shows:
//   - a durable consumer (it resumes where it stopped, across restarts) with explicit acks;
//   - redelivery: a result whose handling fails is naked with a delay and comes back, nothing is lost;
//   - dedupe by job_id: the bridge publishes one result per job (plus at most one late result), but delivery
//     is at least once, so a handler must tolerate seeing a job again (see seen below).
//
// Usage:
//
//	consume-results [-s nats://127.0.0.1:4222] [-durable results-example] [-n 0]
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
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	fs := flag.NewFlagSet("consume-results", flag.ExitOnError)
	url := fs.String("s", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (also NATS_URL)")
	durable := fs.String("durable", "results-example", "durable consumer name")
	n := fs.Int("n", 0, "stop after this many distinct results (0: run until interrupted)")
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("consume-results example"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer nc.Drain()
	err = Consume(ctx, nc, Config{Durable: *durable, N: *n, Out: os.Stdout})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Result is the part of a result message this service reads; the message has every field of the
// upstream's job object (docs/schema/result.v1.schema.json).
type Result struct {
	JobID        string `json:"job_id"`
	Type         string `json:"type"`
	Status       string `json:"status"`
	IsProhibited *bool  `json:"is_prohibited"`
	ErrorCode    string `json:"error_code"`
	Bridge       struct {
		Source string `json:"source"`
	} `json:"bridge"`
	// Late is set for a message on results.late.<type>: the verified result of a job the bridge had timed out.
	Late bool `json:"-"`
}

// Config configures [Consume].
type Config struct {
	// Durable is the consumer's name; the same name resumes where the last run stopped.
	Durable string
	// N stops Consume after N distinct results; 0 runs until ctx ends.
	N int
	// Handle does the work for one result; an error naks the message, which is redelivered later.
	// Default: print one line to Out.
	Handle func(Result) error
	// Out receives the default handler's lines; default io.Discard.
	Out io.Writer
}

// Consume creates (or resumes) the durable consumer on RESULTS and handles results until N distinct ones
// were handled or ctx ends.
func Consume(ctx context.Context, nc *nats.Conn, cfg Config) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Handle == nil {
		cfg.Handle = func(r Result) error {
			_, err := fmt.Fprintf(cfg.Out, "%s %s %s prohibited=%s source=%s late=%v\n", r.JobID, r.Type, r.Status,
				prohibited(r.IsProhibited), r.Bridge.Source, r.Late)
			return err
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "RESULTS", jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "example downstream service",
		FilterSubject: "results.>",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		// Retry a failing result for a while, then leave it: a poison message must not block the rest.
		MaxDeliver: 20,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on RESULTS: %w", cfg.Durable, err)
	}

	// seen dedupes by job_id (a late result is a second, wanted, message of the same job, so it has its
	// own key). Delivery is at least once: if this process handles a result and dies before its ack
	// reaches the server, the message is delivered again after AckWait. An in-memory set covers
	// redeliveries within one run; a real service records the job_id where it records the work, in the
	// same transaction (a unique key in its database), or with a KV Create, which fails when the key
	// exists, so that the dedupe survives restarts.
	seen := map[string]bool{}
	done := 0
	for cfg.N == 0 || done < cfg.N {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		for msg := range batch.Messages() {
			handled, err := handle(ctx, msg, seen, cfg.Handle)
			if err != nil {
				fmt.Fprintln(os.Stderr, "result not handled, redelivered later:", err)
			}
			if handled {
				done++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// handle processes one message and settles it: ack when handled (or a duplicate), nak with a delay when the
// handler failed, term when the message is not a result at all. It reports whether a new result was handled.
func handle(ctx context.Context, msg jetstream.Msg, seen map[string]bool, fn func(Result) error) (bool, error) {
	var r Result
	if err := json.Unmarshal(msg.Data(), &r); err != nil || r.JobID == "" {
		_ = msg.Term() // never valid: redelivering it would not help
		return false, fmt.Errorf("%s: not a result: %v", msg.Subject(), err)
	}
	r.Late = strings.HasPrefix(msg.Subject(), "results.late.")
	key := r.JobID
	if r.Late {
		key += ".late"
	}
	if seen[key] {
		return false, msg.Ack() // handled before: only acknowledge
	}
	if err := fn(r); err != nil {
		_ = msg.NakWithDelay(time.Second)
		return false, fmt.Errorf("job %s: %w", r.JobID, err)
	}
	seen[key] = true
	// DoubleAck waits for the server to confirm the ack, so a handled result is not redelivered.
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return true, msg.DoubleAck(actx)
}

func prohibited(p *bool) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

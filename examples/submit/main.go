// Command submit submits one moderation job to the bridge over NATS request-reply (micro service
// moderation, subject moderate.<modality>) and prints the reply.
//
// What it shows:
//   - an Idempotency-Key header: the bridge maps the key to one job, so a retry after a lost reply or a
//     refusal never creates a second job;
//   - the BUSY refusal: when the shared upstream budget cannot carry a new job, the bridge answers a micro
//     error with code 429 (header Nats-Service-Error-Code), a description starting "BUSY" (header
//     Nats-Service-Error) and a Retry-After header in seconds. The submitter waits that long and retries
//     with the same key.
//
// Usage:
//
//	submit [-s nats://127.0.0.1:4222] [-m prompt] [-key KEY] TEXT-OR-URL
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// fields maps each modality to the request field that carries the content.
var fields = map[string]string{"prompt": "prompt", "chat": "prompt", "image": "image_url", "video": "video_url"}

func main() {
	fs := flag.NewFlagSet("submit", flag.ExitOnError)
	url := fs.String("s", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (also NATS_URL)")
	modality := fs.String("m", "prompt", "modality: prompt, image, video or chat")
	key := fs.String("key", uuid.NewString(), "Idempotency-Key (reuse it to retry the same submission)")
	_ = fs.Parse(os.Args[1:])
	field, ok := fields[*modality]
	if !ok || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: submit [-s url] [-m prompt|image|video|chat] [-key key] TEXT-OR-URL")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	nc, err := nats.Connect(*url, nats.Name("submit example"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer nc.Close()
	reply, err := Submit(ctx, nc, Request{Modality: *modality, Fields: map[string]string{field: fs.Arg(0)}, Key: *key})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("job_id=%s status=%s idempotency_key=%s\n", reply.JobID, reply.Status, *key)
}

// Request is one submission.
type Request struct {
	Modality string
	// Fields are the request's fields, e.g. {"prompt": "..."}.
	Fields map[string]string
	// Key is the Idempotency-Key, the same on every try.
	Key string
	// Tries bounds the tries, BUSY refusals included; default 10.
	Tries int
	// OnBusy, when set, is told about each BUSY refusal and the wait before the next try.
	OnBusy func(wait time.Duration)
}

// Reply is the bridge's answer to a submission (docs/schema/submit-reply.schema.json).
type Reply struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
}

// ServiceError is a micro error reply other than BUSY.
type ServiceError struct {
	Code        string
	Description string
}

func (e *ServiceError) Error() string { return "bridge refused (" + e.Code + "): " + e.Description }

// errBusy is a BUSY refusal.
var errBusy = errors.New("BUSY")

// Submit sends the request to moderate.<modality> and returns the reply. On BUSY it waits Retry-After
// seconds (1 s when absent) and tries again with the same Idempotency-Key, until Tries or ctx run out.
func Submit(ctx context.Context, nc *nats.Conn, req Request) (Reply, error) {
	if req.Tries == 0 {
		req.Tries = 10
	}
	body, err := json.Marshal(req.Fields)
	if err != nil {
		return Reply{}, err
	}
	for try := 1; ; try++ {
		reply, wait, err := submitOnce(ctx, nc, req, body)
		if !errors.Is(err, errBusy) || try == req.Tries {
			return reply, err
		}
		if req.OnBusy != nil {
			req.OnBusy(wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Reply{}, fmt.Errorf("waiting to retry after BUSY: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// submitOnce is one try. On BUSY it returns errBusy and how long to wait.
func submitOnce(ctx context.Context, nc *nats.Conn, req Request, body []byte) (Reply, time.Duration, error) {
	msg := nats.NewMsg("moderate." + req.Modality)
	msg.Data = body
	msg.Header.Set("Idempotency-Key", req.Key)
	rctx, cancel := context.WithTimeout(ctx, 70*time.Second) // the bridge may wait up to 60 s for budget
	defer cancel()
	resp, err := nc.RequestMsgWithContext(rctx, msg)
	if err != nil {
		return Reply{}, 0, fmt.Errorf("request moderate.%s: %w", req.Modality, err)
	}
	if code := resp.Header.Get(micro.ErrorCodeHeader); code != "" {
		desc := resp.Header.Get(micro.ErrorHeader)
		if code == "429" && strings.HasPrefix(desc, "BUSY") {
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
			return Reply{}, wait, errBusy
		}
		return Reply{}, 0, &ServiceError{Code: code, Description: desc}
	}
	var r Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return Reply{}, 0, fmt.Errorf("reply %q: %w", resp.Data, err)
	}
	return r, 0, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

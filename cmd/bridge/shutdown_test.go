package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/ingesttest"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testlog"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestSIGTERMUnderLoadLosesNoWebhook is issue 23's rolling restart: `bridge run` with every role and
// BRIDGE_SHUTDOWN_DELAY=5s, 8 clients posting webhooks continuously, and a real SIGTERM sent to the process
// 2 s in, received through main's own signal context. /readyz answers 503 at once; every request begun
// before the delay ended (the delay starts once the signal is received, after the test sent it; less the
// 100 ms in which the listener closes) gets 2xx, none a connection error; every webhook answered 2xx is in
// WEBHOOKS; and run returns nil. It takes about 8 s.
func TestSIGTERMUnderLoadLosesNoWebhook(t *testing.T) {
	const (
		clients   = 8
		termAfter = 2 * time.Second
		delay     = 5 * time.Second
		// closing is the instant around the delay's end in which a request may meet the listener closing: a
		// connection dialled then waits in the kernel's accept queue and is reset when the listener closes, as
		// with any server. Requests begun before it must get 2xx; the clients post on through it and after.
		closing = 100 * time.Millisecond
	)
	srv := natstest.RunServer(t)
	sim := simtest.Run(t, simulator.Config{Log: zerolog.Nop()})
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	env := map[string]string{
		"BRIDGE_NATS_URL": srv.ClientURL(), "BRIDGE_HTTP_ADDR": httpAddr, "BRIDGE_PUBLIC_URL": base,
		"BRIDGE_API_URL": sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey, "BRIDGE_SHUTDOWN_DELAY": delay.String(),
		// The load's webhooks are of jobs nobody submitted: they wait in the slow lane, never refused.
		"BRIDGE_UNKNOWN_BACKLOG": "0", "BRIDGE_UNKNOWN_JOB_RPM": "0",
	}
	ctx, stop := signalContext()
	defer stop()
	logs := &testlog.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, env, io.Discard, logs) }()
	waitReady(t, http.DefaultClient, base)

	l := startPosting(base, clients)
	<-time.After(termAfter) // the load runs: this is the moment of SIGTERM, not a synchronisation
	sentAt := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Second, func() error {
		if st := ingesttest.Status(base + "/readyz"); st != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d after SIGTERM, want 503", st)
		}
		return nil
	})
	// The clients post on past the delay's end, until the listener has closed.
	l.stopAt(sentAt.Add(delay + 500*time.Millisecond))
	if err := natstest.RecvWithin(t, done, 60*time.Second); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
	accepted, during, late, firstErr := 0, 0, 0, time.Hour
	for _, p := range l.posts {
		if p.err != nil {
			late++
			firstErr = min(firstErr, p.began.Sub(sentAt))
		}
		if p.began.Before(sentAt.Add(delay-closing)) && (p.err != nil || p.status/100 != 2) {
			t.Fatalf("a webhook begun %v after SIGTERM, before the delay ended, got %d %v",
				p.began.Sub(sentAt).Round(time.Millisecond), p.status, p.err)
		}
		if p.status/100 == 2 {
			accepted++
			if p.began.After(sentAt) {
				during++
			}
		}
	}
	if during < clients {
		t.Fatalf("%d webhooks accepted after SIGTERM: the load did not run through the delay", during)
	}
	stored := map[string]bool{}
	_, js := natstest.Connect(t, srv.ClientURL())
	for _, m := range natstest.StreamMsgs(t, js, contract.Default.StreamWebhooks) {
		stored[m.Header.Get(jetstream.MsgIDHeader)] = true
	}
	for _, p := range l.posts {
		if p.status/100 == 2 && !stored[p.id] {
			t.Fatalf("webhook %s answered %d but not in %s", p.id, p.status, contract.Default.StreamWebhooks)
		}
	}
	t.Logf("%d requests: %d accepted, %d of them after SIGTERM through the %v delay, all stored; %d connection errors, the first begun %v after SIGTERM",
		len(l.posts), accepted, during, delay, late, firstErr.Round(time.Millisecond))
}

// post is one webhook request of a posting load.
type post struct {
	id     string
	began  time.Time
	status int
	err    error
}

// posting is clients posting webhooks one after another, each on its own keep-alive client, pausing pace
// between two (8 clients: well over a thousand a second, far beyond an account's real load), until stopAt's
// instant.
type posting struct {
	mu    sync.Mutex
	until time.Time
	posts []post
	wg    sync.WaitGroup
}

const pace = 5 * time.Millisecond

func startPosting(base string, clients int) *posting {
	l := &posting{until: time.Now().Add(time.Minute)}
	for range clients {
		l.wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{}, Timeout: 15 * time.Second}
			defer client.CloseIdleConnections()
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for p := (post{began: time.Now()}); p.began.Before(l.deadline()); p = (post{began: time.Now()}) {
				p.id = uuid.NewString()
				p.status, p.err = postWebhook(client, base, p.id)
				l.mu.Lock()
				l.posts = append(l.posts, p)
				l.mu.Unlock()
				<-tick.C
			}
		})
	}
	return l
}

func (l *posting) deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// stopAt ends the load at t and waits for the requests in flight.
func (l *posting) stopAt(t time.Time) {
	l.mu.Lock()
	l.until = t
	l.mu.Unlock()
	l.wg.Wait()
}

// postWebhook posts a webhook of job id and returns the status.
func postWebhook(client *http.Client, base, id string) (int, error) {
	resp, err := client.Post(base+"/webhook/prompt", "application/json",
		strings.NewReader(`{"job_id":"`+id+`","status":"completed"}`))
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

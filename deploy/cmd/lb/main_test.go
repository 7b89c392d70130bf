package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBridge is a backend: /readyz answers readyz, every other path webhook, and it records what it got.
type fakeBridge struct {
	srv     *httptest.Server
	readyz  atomic.Int32
	webhook atomic.Int32
	mu      sync.Mutex // mu guards got
	got     []string
}

func newFakeBridge(t *testing.T, name string) *fakeBridge {
	t.Helper()
	f := &fakeBridge{}
	f.readyz.Store(http.StatusOK)
	f.webhook.Store(http.StatusOK)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(int(f.readyz.Load()))
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.got = append(f.got, r.Method+" "+r.URL.RequestURI()+" "+string(body)+" sig="+r.Header.Get("Webhook-Signature")+
			" conn="+r.Header.Get("X-Hop"))
		f.mu.Unlock()
		w.Header().Set("X-Bridge", name)
		w.WriteHeader(int(f.webhook.Load()))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBridge) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

// start runs a balancer over the fakes with a 10 ms probe and waits until its readiness matches theirs.
func start(t *testing.T, fakes ...*fakeBridge) (*balancer, *httptest.Server) {
	t.Helper()
	var urls []*url.URL
	for _, f := range fakes {
		u, _ := url.Parse(f.srv.URL)
		urls = append(urls, u)
	}
	b := newBalancer(urls, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.probeEach(ctx, "/readyz", 10*time.Millisecond)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	waitReady(t, b, fakes)
	return b, srv
}

// waitReady waits until every backend's readiness is what its fake answers.
func waitReady(t *testing.T, b *balancer, fakes []*fakeBridge) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < len(fakes); {
		if b.backends[i].ready.Load() == (fakes[i].readyz.Load() == http.StatusOK) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d's readiness is not its /readyz's within 5s", i)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// post sends one webhook through the balancer and returns its status and the answering bridge.
func post(t *testing.T, srv *httptest.Server, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhook/prompt?token=t", strings.NewReader(body))
	req.Header.Set("Webhook-Signature", "v1,abc")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // drained
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Bridge")
}

func TestSpreadsOverReadyBackends(t *testing.T) {
	a, b := newFakeBridge(t, "a"), newFakeBridge(t, "b")
	_, srv := start(t, a, b)
	for i := range 10 {
		if code, _ := post(t, srv, `{"job_id":"j`+string(rune('0'+i))+`"}`); code != http.StatusOK {
			t.Fatalf("webhook %d: %d", i, code)
		}
	}
	if na, nb := len(a.requests()), len(b.requests()); na != 5 || nb != 5 {
		t.Errorf("backends got %d and %d webhooks, want 5 each", na, nb)
	}
	want := `POST /webhook/prompt?token=t {"job_id":"j0"} sig=v1,abc conn=`
	if got := append(a.requests(), b.requests()...); !strings.Contains(strings.Join(got, "\n"), want) {
		t.Errorf("forwarded %q, want among them %q (path, query, body, headers; hop-by-hop dropped)", got, want)
	}
}

func TestTriesTheNextBackend(t *testing.T) {
	tests := []struct {
		name  string
		setup func(a *fakeBridge)
		want  []string     // the two webhooks' answers, sorted: status and bridge
		wantA BackendState // a's state and counts; Unreached is at most this
	}{
		{"a unready", func(a *fakeBridge) { a.readyz.Store(http.StatusServiceUnavailable) },
			[]string{"200 b", "200 b"}, BackendState{Ready: false}},
		{"a answers 503", func(a *fakeBridge) { a.webhook.Store(http.StatusServiceUnavailable) },
			[]string{"200 b", "200 b"}, BackendState{Ready: true, Refused: 1}},
		// The probe may find it down before a webhook does.
		{"a unreachable", func(a *fakeBridge) { a.srv.Close() },
			[]string{"200 b", "200 b"}, BackendState{Ready: false, Unreached: 1}},
		{"a answers 400", func(a *fakeBridge) { a.webhook.Store(http.StatusBadRequest) },
			[]string{"200 b", "400 a"}, BackendState{Ready: true, Answered: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newFakeBridge(t, "a"), newFakeBridge(t, "b")
			lb, srv := start(t, a, b)
			tt.setup(a)
			if tt.name == "a unready" {
				waitReady(t, lb, []*fakeBridge{a, b})
			}
			// Two webhooks: one of them starts at a, whichever backend is first in turn.
			var got []string
			for range 2 {
				code, bridge := post(t, srv, "{}")
				got = append(got, fmt.Sprintf("%d %s", code, bridge))
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("answers %q, want %q", got, tt.want)
			}
			be := lb.backends[0]
			st := BackendState{Ready: be.ready.Load(), Answered: be.answered.Load(), Refused: be.refused.Load(),
				Unreached: min(be.unreached.Load(), tt.wantA.Unreached)}
			if st != tt.wantA {
				t.Errorf("backend a: %+v, want %+v", st, tt.wantA)
			}
		})
	}
}

func TestNoBackendAnswers(t *testing.T) {
	a, b := newFakeBridge(t, "a"), newFakeBridge(t, "b")
	lb, srv := start(t, a, b)
	a.srv.Close()
	b.srv.Close()
	if code, _ := post(t, srv, "{}"); code != http.StatusBadGateway {
		t.Errorf("answered %d with every backend down, want 502", code)
	}
	resp, err := srv.Client().Get(srv.URL + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Failed != 1 || len(st.Backends) != 2 || st.Backends[0].Ready || st.Backends[1].Ready {
		t.Errorf("status %+v, want 1 failed and both backends unready", st)
	}
	if lb.failed.Load() != 1 {
		t.Errorf("failed %d, want 1", lb.failed.Load())
	}
}

func TestRunFlags(t *testing.T) {
	a := newFakeBridge(t, "a")
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"check 200", []string{"-check", a.srv.URL + "/readyz"}, ""},
		{"no backend", []string{"-listen", "127.0.0.1:0"}, "no -backend"},
		{"backend with a path", []string{"-backend", "http://bridge-1:8080/webhook"}, "want http(s)://host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("run(%q) = %v, want %q", tt.args, err, tt.wantErr)
			}
		})
	}
	a.readyz.Store(http.StatusServiceUnavailable)
	if err := run(context.Background(), []string{"-check", a.srv.URL + "/readyz"}, io.Discard); err == nil {
		t.Error("-check of a 503 succeeded")
	}
}

// TestHoldsAWebhookEveryBackendRefused: while every bridge answers 503 (a NATS leader election), a
// webhook is tried again in rounds and gets the first bridge that takes it; past -hold, the last 503 is
// passed on. Without a hold, one round.
func TestHoldsAWebhookEveryBackendRefused(t *testing.T) {
	a, b := newFakeBridge(t, "a"), newFakeBridge(t, "b")
	lb, srv := start(t, a, b)
	a.webhook.Store(http.StatusServiceUnavailable)
	b.webhook.Store(http.StatusServiceUnavailable)
	lb.hold = time.Minute
	type answer struct {
		code   int
		bridge string
	}
	done := make(chan answer, 1)
	go func() {
		code, bridge := post(t, srv, "{}")
		done <- answer{code, bridge}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(a.requests()) < 2 || len(b.requests()) < 2 { // a second round began at both
		if time.Now().After(deadline) {
			t.Fatalf("a got %d and b %d tries within 10s, want a second round", len(a.requests()), len(b.requests()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.webhook.Store(http.StatusOK)
	select {
	case got := <-done:
		if got != (answer{http.StatusOK, "b"}) {
			t.Errorf("held webhook answered %d by %q, want 200 by b", got.code, got.bridge)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held webhook not answered within 10s of b taking webhooks")
	}

	b.webhook.Store(http.StatusServiceUnavailable)
	lb.hold = 300 * time.Millisecond
	before := len(a.requests()) + len(b.requests())
	if code, _ := post(t, srv, "{}"); code != http.StatusServiceUnavailable {
		t.Errorf("answered %d once the hold ran out, want the bridges' 503", code)
	}
	if tries := len(a.requests()) + len(b.requests()) - before; tries < 4 {
		t.Errorf("%d tries within a 300ms hold, want rounds of 2 at 100 and 200 ms", tries)
	}
	lb.hold = 0
	before = len(a.requests()) + len(b.requests())
	if code, _ := post(t, srv, "{}"); code != http.StatusServiceUnavailable {
		t.Errorf("answered %d without a hold, want 503", code)
	}
	if tries := len(a.requests()) + len(b.requests()) - before; tries != 2 {
		t.Errorf("%d tries without a hold, want one round of 2", tries)
	}
	if lb.failed.Load() != 0 {
		t.Errorf("failed %d: a 503 passed on is an answer", lb.failed.Load())
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// StatusPath is where the balancer answers its own state instead of forwarding.
const StatusPath = "/_lb"

// maxBody is the largest request body forwarded: the bridge's ceiling for BRIDGE_MAX_BODY. The body is
// held in memory so that a request can be tried at the next backend.
const maxBody = 8 << 20

// backend is one bridge's webhook listener.
type backend struct {
	url   *url.URL
	ready atomic.Bool
	// answered counts the requests it answered (503s passed on included), refused its 503s that were
	// tried elsewhere, unreached the requests that could not reach it.
	answered, refused, unreached atomic.Int64
}

// BackendState is one backend in the status answer.
type BackendState struct {
	URL       string `json:"url"`
	Ready     bool   `json:"ready"`
	Answered  int64  `json:"answered"`
	Refused   int64  `json:"refused"`
	Unreached int64  `json:"unreached"`
}

// Status is the answer of GET /_lb; Failed counts the requests that no backend answered (502).
type Status struct {
	Backends []BackendState `json:"backends"`
	Failed   int64          `json:"failed"`
}

// balancer forwards each request to the next ready backend.
type balancer struct {
	backends []*backend
	next     atomic.Uint64
	failed   atomic.Int64
	hc       *http.Client
	log      *slog.Logger
	// hold is how long a request that every backend refused (503) or could not take is tried again, in
	// rounds over all backends, before its failure is passed on: a NATS leader election makes every bridge
	// answer 503 for a few seconds, and the upstream never sends a webhook twice. 0: one round.
	hold time.Duration
}

// Waits between rounds of one held request: from firstWait, doubling to maxWait.
const (
	firstWait = 100 * time.Millisecond
	maxWait   = time.Second
)

func newBalancer(urls []*url.URL, log *slog.Logger) *balancer {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 15 * time.Second
	t.MaxIdleConnsPerHost = 32
	b := &balancer{log: log, hc: &http.Client{Transport: t,
		// The upstream follows no redirect of ours, and neither does the balancer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	for _, u := range urls {
		b.backends = append(b.backends, &backend{url: u})
	}
	return b
}

// order is the backends to try for one request: the ready ones from the next in turn, then the others
// (when none is ready, trying beats refusing).
func (b *balancer) order() []*backend {
	n := len(b.backends)
	start := int(b.next.Add(1) % uint64(n))
	var ready, rest []*backend
	for i := range n {
		be := b.backends[(start+i)%n]
		if be.ready.Load() {
			ready = append(ready, be)
		} else {
			rest = append(rest, be)
		}
	}
	return append(ready, rest...)
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == StatusPath {
		b.status(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "request body unreadable or over 8 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	deadline := time.Now().Add(b.hold)
	for wait := firstWait; ; wait = min(2*wait, maxWait) {
		last := !time.Now().Add(wait).Before(deadline)
		if resp := b.round(r, body, last); resp != nil {
			relay(w, resp)
			return
		}
		if r.Context().Err() != nil || last {
			break
		}
		select {
		case <-r.Context().Done():
		case <-time.After(wait):
		}
	}
	if r.Context().Err() != nil {
		return // the client went away: no fault of the backends'
	}
	b.failed.Add(1)
	http.Error(w, "no backend answered", http.StatusBadGateway)
}

// round tries the request at each backend in turn and returns the first answer that is not a 503; in the
// last round, the last backend's 503 is returned too, to be passed on. Nil: nothing answered.
func (b *balancer) round(r *http.Request, body []byte, last bool) *http.Response {
	order := b.order()
	for i, be := range order {
		resp, err := b.forward(r, be, body)
		if err != nil && r.Context().Err() != nil {
			return nil
		}
		if err != nil {
			be.unreached.Add(1)
			if be.ready.Swap(false) {
				b.log.Warn("backend unreachable", "backend", be.url.String(), "err", err.Error())
			}
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable && (!last || i < len(order)-1) {
			// Nothing was stored there: the next backend, or the next round, may take it.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // drained for reuse
			resp.Body.Close()
			be.refused.Add(1)
			continue
		}
		be.answered.Add(1)
		return resp
	}
	return nil
}

// forward sends r, with body, to be.
func (b *balancer) forward(r *http.Request, be *backend, body []byte) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = be.url.Scheme, be.url.Host, be.url.Host
	out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	dropHop(out.Header)
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		out.Header.Set("X-Forwarded-For", ip)
	}
	return b.hc.Do(out)
}

// relay writes a backend's answer.
func relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	dropHop(resp.Header)
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body) //nolint:errcheck // the client went away; nothing to tell
}

// status answers the backends' state and counts.
func (b *balancer) status(w http.ResponseWriter) {
	st := Status{Failed: b.failed.Load()}
	for _, be := range b.backends {
		st.Backends = append(st.Backends, BackendState{URL: be.url.String(), Ready: be.ready.Load(),
			Answered: be.answered.Load(), Refused: be.refused.Load(), Unreached: be.unreached.Load()})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st) //nolint:errcheck // the client went away
}

// probeEach asks every backend's path each interval, concurrently, until ctx is cancelled.
func (b *balancer) probeEach(ctx context.Context, path string, interval time.Duration) {
	hc := &http.Client{Transport: b.hc.Transport, Timeout: interval}
	for _, be := range b.backends {
		go func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				err := probe(ctx, hc, be.url.JoinPath(path).String())
				if ready := err == nil; be.ready.Swap(ready) != ready {
					b.log.Info("backend readiness", "backend", be.url.String(), "ready", ready, "err", errString(err))
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

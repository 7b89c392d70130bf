package simtest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// Option adjusts the simulator's config before [Run] starts it; an error fails the test.
type Option func(*simulator.Config) error

// WithContract makes the simulator speak contract: simulator.ContractV1 ("v1") or simulator.ContractV2
// ("v2"), whatever cfg.Contract says.
func WithContract(contract string) Option {
	return func(c *simulator.Config) error {
		if contract != simulator.ContractV1 && contract != simulator.ContractV2 {
			return fmt.Errorf("WithContract(%q): must be %q or %q", contract, simulator.ContractV1, simulator.ContractV2)
		}
		c.Contract = contract
		return nil
	}
}

// Run starts a simulator for cfg, adjusted by opts, on 127.0.0.1:0 and closes it when the test ends.
// Unless cfg.Log is set, it logs to the test.
func Run(tb testing.TB, cfg simulator.Config, opts ...Option) *simulator.Simulator {
	tb.Helper()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			tb.Fatalf("simtest: %v", err)
		}
	}
	if reflect.ValueOf(cfg.Log).IsZero() {
		cfg.Log = zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel)
	}
	sim, err := simulator.New(cfg)
	if err != nil {
		tb.Fatalf("simtest: new simulator: %v", err)
	}
	tb.Cleanup(sim.Close)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		tb.Fatalf("simtest: start simulator: %v", err)
	}
	return sim
}

// Client returns a client of sim with the default key, no budget (budget.Unlimited) and logs to the
// test; opts adjust the config before New (e.g. set Limiter, Metrics, APIKey).
func Client(tb testing.TB, sim *simulator.Simulator, opts ...func(*upstream.Config)) *upstream.Client {
	tb.Helper()
	cfg := upstream.Config{
		BaseURL: sim.URL(),
		APIKey:  simulator.DefaultKey,
		Limiter: budget.Unlimited{},
		Log:     zerolog.New(zerolog.NewTestWriter(tb)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := upstream.New(cfg)
	if err != nil {
		tb.Fatalf("simtest: new client: %v", err)
	}
	return c
}

// Receiver is a webhook receiver on a loopback port that records every POST.
type Receiver struct {
	URL string // base URL; any path is accepted
	mu  sync.Mutex
	got []Received
	// status answered; 0 means 200.
	status int
}

// Received is one request a Receiver got.
type Received struct {
	Path        string
	ContentType string
	Header      http.Header
	Body        []byte
}

// NewReceiver starts a receiver, closed when the test ends.
func NewReceiver(tb testing.TB) *Receiver {
	tb.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, Received{Path: req.URL.RequestURI(), ContentType: req.Header.Get("Content-Type"),
			Header: req.Header.Clone(), Body: body})
		st := r.status
		r.mu.Unlock()
		if st == 0 {
			st = http.StatusOK
		}
		w.WriteHeader(st)
	}))
	tb.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// SetStatus sets the status the receiver answers with (0 = 200).
func (r *Receiver) SetStatus(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = code
}

// Received returns a copy of everything received so far.
func (r *Receiver) Received() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.got...)
}

// Len is the number of requests received.
func (r *Receiver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

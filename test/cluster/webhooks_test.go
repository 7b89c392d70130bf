package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evershield/bridge/upstream/simulator"
)

// lbState is the answer of GET /_lb of deploy/cmd/lb, the one webhook address (restated: it is another
// module's type).
type lbState struct {
	Backends []lbBackend `json:"backends"`
	Failed   int64       `json:"failed"`
}

// lbBackend is one bridge behind lb: answered counts the webhooks it answered, refused its 503s that lb
// tried at the other, unreached those that could not reach it.
type lbBackend struct {
	URL       string `json:"url"`
	Ready     bool   `json:"ready"`
	Answered  int64  `json:"answered"`
	Refused   int64  `json:"refused"`
	Unreached int64  `json:"unreached"`
}

// backend is bridge svc's entry, zero when lb has none.
func (s lbState) backend(svc string) lbBackend {
	for _, b := range s.Backends {
		if b.URL == "http://"+svc+":8080" {
			return b
		}
	}
	return lbBackend{}
}

// lb is lb's state now.
func (w *world) lb() (lbState, error) {
	var st lbState
	err := w.p.getJSON("lb", "8080", "/_lb", &st)
	if err == nil && len(st.Backends) != 2 {
		err = fmt.Errorf("lb has %d backends, want bridge-1 and bridge-2", len(st.Backends))
	}
	return st, err
}

// simStats is the simulator's counts now (GET /_sim/stats).
func (w *world) simStats() (simulator.Stats, error) {
	var st simulator.Stats
	err := w.p.getJSON("simulator", "8090", "/_sim/stats", &st)
	return st, err
}

// mark is what the simulator and lb had counted when a scenario started.
type mark struct {
	sim simulator.Stats
	lb  lbState
}

func (w *world) mark(t *testing.T) mark {
	t.Helper()
	var m mark
	waitFor(t, 30*time.Second, "the simulator's and lb's counts", func() (err error) {
		if m.sim, err = w.simStats(); err != nil {
			return err
		}
		m.lb, err = w.lb()
		return err
	})
	return m
}

// report logs how the scenario's submissions were answered and what became of the webhooks since m: the
// simulator's outcomes (a failed one is a webhook no bridge took; dropped ones are its fault injection)
// and lb's, per bridge. It returns both.
func (w *world) report(t *testing.T, m mark) (simulator.WebhookStats, lbState) {
	t.Helper()
	t.Logf("%s submissions: %v", t.Name(), w.led.answersOf(t.Name()))
	now := w.mark(t)
	s, p := now.sim.Webhooks, m.sim.Webhooks
	sim := simulator.WebhookStats{Delivered: s.Delivered - p.Delivered, Failed: s.Failed - p.Failed,
		Dropped: s.Dropped - p.Dropped, Duplicated: s.Duplicated - p.Duplicated}
	lb := lbState{Failed: now.lb.Failed - m.lb.Failed}
	var per []string
	for _, svc := range []string{"bridge-1", "bridge-2"} {
		a, b := now.lb.backend(svc), m.lb.backend(svc)
		d := lbBackend{URL: a.URL, Ready: a.Ready, Answered: a.Answered - b.Answered, Refused: a.Refused - b.Refused,
			Unreached: a.Unreached - b.Unreached}
		lb.Backends = append(lb.Backends, d)
		per = append(per, fmt.Sprintf("%s %d (503 tried elsewhere %d, unreached %d)", svc, d.Answered, d.Refused, d.Unreached))
	}
	t.Logf("%s webhooks at the simulator: %d delivered, %d failed, %d dropped (fault), %d duplicated (fault); through lb: %s; no bridge took %d",
		t.Name(), sim.Delivered, sim.Failed, sim.Dropped, sim.Duplicated, strings.Join(per, ", "), lb.Failed)
	return sim, lb
}

// networks checks the two networks from inside the containers: the simulator and lb cannot resolve a
// NATS node, NATS cannot resolve the simulator, and the bridges reach both sides.
func (w *world) networks(t *testing.T) {
	// The images have no shell: the bridge's binary (in the bridge and NATS images) and lb's ask.
	probe := func(addr, path string) []string {
		return []string{"/usr/local/bin/bridge", "healthcheck", "-addr", addr, "-path", path}
	}
	tests := []struct {
		svc   string
		probe []string
		ok    bool
	}{
		{"simulator", probe("nats-1:8222", "/healthz"), false},
		{"lb", []string{"/usr/local/bin/lb", "-check", "http://nats-1:8222/healthz"}, false},
		{"nats-1", probe("simulator:8090", "/health"), false},
		{"simulator", probe("lb:8080", "/_lb"), true},
		{"bridge-1", probe("nats-1:8222", "/healthz?js-enabled-only=true"), true},
		{"bridge-2", probe("simulator:8090", "/health"), true},
	}
	for _, tt := range tests {
		_, err := docker(30*time.Second, append([]string{"exec", w.p.mustID(tt.svc)}, tt.probe...)...)
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s cannot reach it: %v", tt.svc, err)
		case !tt.ok && (err == nil || !strings.Contains(err.Error(), "no such host")):
			t.Errorf("%s %q: %v; want the name not resolved (another network)", tt.svc, tt.probe, err)
		}
	}
}

// memoryLimits checks that each bridge gave the Go runtime 90% of its container's memory limit
// (docker-compose.yml's mem_limit, 256m) as GOMEMLIMIT, as it logs at start.
func (w *world) memoryLimits(t *testing.T) {
	const want = `"gomemlimit_bytes":241591910` // 90% of 268,435,456 bytes
	for _, svc := range []string{"bridge-1", "bridge-2"} {
		logs, err := docker(30*time.Second, "logs", w.p.mustID(svc))
		if err != nil || !strings.Contains(logs, want) {
			t.Errorf("%s: its log has no %s (%v)", svc, want, err)
		}
	}
}

// waitLB waits until lb reports bridge svc ready or not, and returns how long that took.
func (w *world) waitLB(t *testing.T, svc string, ready bool, bound time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, bound, fmt.Sprintf("lb sees %s ready=%v", svc, ready), func() error {
		st, err := w.lb()
		if err != nil {
			return err
		}
		if got := st.backend(svc).Ready; got != ready {
			return fmt.Errorf("lb: %s ready=%v", svc, got)
		}
		return nil
	})
}

// waitWebhooks waits until bridge svc has answered n more webhooks through lb than when called.
func (w *world) waitWebhooks(t *testing.T, svc string, n int64, bound time.Duration) time.Duration {
	t.Helper()
	var base int64 = -1
	return waitFor(t, bound, fmt.Sprintf("%d more webhooks through lb to %s", n, svc), func() error {
		st, err := w.lb()
		if err != nil {
			return err
		}
		got := st.backend(svc).Answered
		if base < 0 {
			base = got
		}
		if got < base+n {
			return fmt.Errorf("%s answered %d of %d", svc, got-base, n)
		}
		return nil
	})
}

// bridgeStop stops bridge-1 mid-load (docker stop: SIGTERM, /readyz 503 at once, webhooks taken for
// BRIDGE_SHUTDOWN_DELAY, the drain) and starts it again, while every webhook goes to lb, the one
// address: lb must leave it out within a probe, webhooks go on through bridge-2, bridge-1 takes
// webhooks again once ready, and the simulator sees no webhook fail; every job ends with one result.
func (w *world) bridgeStop(t *testing.T) {
	const svc = "bridge-1"
	m := w.mark(t)
	l := w.startLoad(t.Name(), period)
	defer l.halt() // a failed check stops the load too
	w.waitAccepted(t, t.Name(), 3, time.Minute)
	id, stopped := w.p.mustID(svc), make(chan error, 1)
	start := time.Now()
	go func() {
		// docker stop, not the compose tool: the figures start at the stop, not at a Python start-up.
		_, err := docker(time.Minute, "stop", "-t", "30", id)
		stopped <- err
	}()
	w.waitLB(t, svc, false, 30*time.Second)
	left := time.Since(start)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: lb left it out %s after docker stop; stopped in %s", svc, left.Round(100*time.Millisecond),
		time.Since(start).Round(100*time.Millisecond))
	w.waitAccepted(t, t.Name(), 3, time.Minute)
	w.waitWebhooks(t, "bridge-2", 2, time.Minute)
	start = time.Now()
	if _, err := docker(time.Minute, "start", id); err != nil {
		t.Fatal(err)
	}
	w.waitLB(t, svc, true, 2*time.Minute)
	back := time.Since(start)
	w.waitWebhooks(t, svc, 1, time.Minute)
	t.Logf("%s: ready behind lb %s after docker start, its first webhook %s after", svc, back.Round(100*time.Millisecond),
		time.Since(start).Round(100*time.Millisecond))
	waitFor(t, time.Minute, "both submit services answer", func() error { return services(w.nc, 2) })
	w.waitAccepted(t, t.Name(), 2, time.Minute)
	l.halt()
	w.settle(t, t.Name(), settleBound)
	sim, lb := w.report(t, m)
	if sim.Failed != 0 || lb.Failed != 0 {
		t.Errorf("%d webhooks failed at the simulator, %d found no bridge at lb; want none while one bridge serves", sim.Failed, lb.Failed)
	}
}

// The account's limit, as docker-compose.yml gives it to both bridges: BRIDGE_API_RPM=60, and
// BRIDGE_API_BURST unset, which is 5 s worth of it.
const (
	accountRPM   = 60
	accountBurst = 5
)

// meter samples the simulator's count of API calls (every endpoint) each second, until halted: the
// calls of both bridges together, for the account's limit.
type meter struct {
	// mu guards samples.
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

type sample struct {
	at    time.Time
	calls int
}

func (w *world) startMeter(t *testing.T) *meter {
	m := &meter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if st, err := w.simStats(); err == nil {
				n := 0
				for _, c := range st.Calls {
					n += c
				}
				m.mu.Lock()
				m.samples = append(m.samples, sample{time.Now(), n})
				m.mu.Unlock()
			}
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(m.halt)
	return m
}

// halt stops the sampling; it may be called again.
func (m *meter) halt() {
	m.once.Do(func() { close(m.stop) })
	<-m.done
}

// busiest is the most calls between two samples at most window apart, and when that window ended.
func (m *meter) busiest(window time.Duration) (int, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	most, at := 0, time.Time{}
	for j, b := range m.samples {
		for i := j - 1; i >= 0 && b.at.Sub(m.samples[i].at) <= window; i-- {
			if n := b.calls - m.samples[i].calls; n > most {
				most, at = n, b.at
			}
		}
	}
	return most, at
}

// budget requires the calls at the simulator, from both bridges through every fault, to stay within the
// account's limit in every window of 10 s and of a minute: RPM×W + burst.
func (w *world) budget(t *testing.T, m *meter) {
	m.halt()
	m.mu.Lock()
	n := len(m.samples)
	var first, last sample
	if n > 0 {
		first, last = m.samples[0], m.samples[n-1]
	}
	m.mu.Unlock()
	if n < 60 {
		t.Fatal(errors.New("fewer than 60 samples of the simulator's calls"))
	}
	span := last.at.Sub(first.at)
	t.Logf("%d calls at the simulator in %s (%.1f a minute; the account's limit %d), %d samples",
		last.calls-first.calls, span.Round(time.Second), float64(last.calls-first.calls)/span.Minutes(), accountRPM, n)
	for _, window := range []time.Duration{10 * time.Second, time.Minute} {
		limit := int(accountRPM*window/time.Minute) + accountBurst
		got, at := m.busiest(window)
		t.Logf("busiest %v window: %d calls at the simulator, ending %s into the suite (limit %d = %d/min × %v + burst %d)",
			window, got, at.Sub(first.at).Round(time.Second), limit, accountRPM, window, accountBurst)
		if got > limit {
			t.Errorf("%d calls in a %v window, over the account's %d", got, window, limit)
		}
	}
}

package cluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
)

// world is the running compose project and the suite's view of it.
type world struct {
	p     *project
	nc    *nats.Conn
	js    jetstream.JetStream
	led   *ledger
	tally *tally
}

// period is the load's rate: one submission every 2 s is 30 a minute, half the account's limit of 60 a
// minute (BRIDGE_API_RPM, shared by both bridges), which leaves the reconciler room to poll the jobs
// whose webhooks the simulator drops.
const period = 2 * time.Second

// settleBound is how long the results of a scenario's jobs may take after its load stops: a dropped
// webhook is polled at BRIDGE_POLL_INTERVAL (10 s), and a job whose poll meets a 503 or 429 waits a round
// more.
const settleBound = 90 * time.Second

// TestClusterUnderFaults brings docker-compose.yml's default profile up and runs, in turn, a steady
// load, the loss of a NATS node and of a bridge, a bridge cut from the network, and a rolling restart of
// every container, each under load; every job the bridge accepted must end with exactly one verified
// result on results.>.
func TestClusterUnderFaults(t *testing.T) {
	mode := requireEngine(t)
	suiteStart := time.Now()
	if mode != "reuse" {
		buildImages(t)
	}
	env := readEnv(t)
	p := up(t)
	w := &world{p: p, led: newLedger()}
	ready := waitFor(t, 2*time.Minute, "both bridges ready", func() error {
		for _, b := range []string{"bridge-1", "bridge-2"} {
			if err := p.ready(b); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("both bridges' /readyz 200 %s after up -d", ready.Round(100*time.Millisecond))
	w.nc, w.js = connect(t, p, env["NATS_DOWNSTREAM_PASSWORD"])
	waitFor(t, time.Minute, "both submit services answer", func() error { return services(w.nc, 2) })
	w.tally = follow(t, w.js)
	calls := w.startMeter(t)
	w.waitLB(t, "bridge-1", true, time.Minute)
	w.waitLB(t, "bridge-2", true, time.Minute)

	t.Run("networks", func(t *testing.T) { w.networks(t) })
	t.Run("memory", func(t *testing.T) { w.memoryLimits(t) })
	t.Run("steady", func(t *testing.T) { w.steady(t) })
	t.Run("bridge-stop", func(t *testing.T) { w.bridgeStop(t) })
	t.Run("node-loss", func(t *testing.T) { w.nodeLoss(t) })
	t.Run("partition", func(t *testing.T) { w.partition(t) })
	t.Run("rolling-restart", func(t *testing.T) { w.rollingRestart(t) })
	// Late doubles of earlier scenarios would show here.
	t.Run("all", func(t *testing.T) { w.settle(t, "", settleBound) })
	t.Run("budget", func(t *testing.T) { w.budget(t, calls) })
	t.Logf("suite (images, up, scenarios) in %s; late results %d", time.Since(suiteStart).Round(time.Second), w.tally.late.Load())
}

// steady runs the load with every container up: the webhooks, through lb, reach both bridges.
func (w *world) steady(t *testing.T) {
	m := w.mark(t)
	l := w.startLoad(t.Name(), period)
	defer l.halt() // a failed check stops the load too
	w.waitAccepted(t, t.Name(), 8, time.Minute)
	l.halt()
	w.settle(t, t.Name(), settleBound)
	_, lb := w.report(t, m)
	for _, b := range lb.Backends {
		if b.Answered == 0 {
			t.Errorf("lb sent no webhook to %s: the one address does not spread", b.URL)
		}
	}
}

// resultsLeader is the NATS node leading the RESULTS stream.
func (w *world) resultsLeader(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := w.js.Stream(ctx, contract.Default.StreamResults)
	if err != nil {
		t.Fatalf("stream %s: %v", contract.Default.StreamResults, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream %s has no leader: %+v", contract.Default.StreamResults, info.Cluster)
	}
	return info.Cluster.Leader
}

// kill SIGKILLs svc's container, then (after the load went on without it for n accepted jobs) starts it
// again and waits until it is back: a NATS node healthy, a bridge ready.
func (w *world) kill(t *testing.T, svc string, n int) {
	t.Helper()
	if _, err := docker(30*time.Second, "kill", w.p.mustID(svc)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	took := w.waitAccepted(t, t.Name(), n, time.Minute)
	t.Logf("%s killed: %d jobs accepted without it in %s", svc, n, took.Round(100*time.Millisecond))
	// The restart policy (unless-stopped) may have brought it back already.
	if up, err := w.p.running(svc); err != nil {
		t.Fatal(err)
	} else if !up {
		if _, err := docker(30*time.Second, "start", w.p.mustID(svc)); err != nil {
			t.Fatal(err)
		}
	}
	w.waitBack(t, svc, killed)
}

// waitBack waits until svc serves again and logs how long after since that was.
func (w *world) waitBack(t *testing.T, svc string, since time.Time) {
	t.Helper()
	check := func() error { return w.p.ready(svc) }
	if !slices.Contains([]string{"bridge-1", "bridge-2"}, svc) {
		check = func() error { return w.p.natsHealthy(svc) }
	}
	waitFor(t, 2*time.Minute, svc+" back", check)
	t.Logf("%s back (healthy or ready) %s after the fault", svc, time.Since(since).Round(100*time.Millisecond))
}

// nodeLoss kills the RESULTS stream's leader node mid-load, and then a bridge.
func (w *world) nodeLoss(t *testing.T) {
	m := w.mark(t)
	l := w.startLoad(t.Name(), period)
	defer l.halt() // a failed check stops the load too
	w.waitAccepted(t, t.Name(), 3, time.Minute)
	w.kill(t, w.resultsLeader(t), 5)
	t.Logf("RESULTS leader now %s", w.resultsLeader(t))
	w.waitAccepted(t, t.Name(), 2, time.Minute)
	w.kill(t, "bridge-2", 3)
	w.waitAccepted(t, t.Name(), 2, time.Minute)
	l.halt()
	w.settle(t, t.Name(), settleBound)
	w.report(t, m)
}

// defaultCut is how long a partition lasts: the 30 s; longer than the reconcile lease's TTL
// (10 s), so the other bridge takes the lease over, and than the bridge's NATS client needs to find a
// silent connection dead (two pings of natsx.PingInterval unanswered, 10 to 15 s).
const defaultCut = 30 * time.Second

// minCut is the shortest partition cutEnv may ask for: still past the lease's TTL and the ping's detection.
const minCut = 20 * time.Second

// cutEnv sets another partition length, e.g. BRIDGE_CLUSTER_CUT=20s for a quicker run, or longer than the
// NATS server's own dead-connection detection (about 4 min).
const cutEnv = "BRIDGE_CLUSTER_CUT"

// cutLength is the partition's length: defaultCut, or cutEnv's.
func cutLength(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(cutEnv)
	if v == "" {
		return defaultCut
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minCut {
		t.Fatalf("%s=%q: want a duration of at least %v", cutEnv, v, minCut)
	}
	return d
}

// partition disconnects bridge-2 from the back network (from NATS; its webhook side, on front, stays)
// mid-load, then reconnects it under its service name.
func (w *world) partition(t *testing.T) {
	const svc = "bridge-2"
	cut := cutLength(t)
	m := w.mark(t)
	l := w.startLoad(t.Name(), period)
	defer l.halt() // a failed check stops the load too
	w.waitAccepted(t, t.Name(), 3, time.Minute)
	net, id := w.p.network(svc, "back"), w.p.mustID(svc)
	if _, err := docker(30*time.Second, "network", "disconnect", net, id); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	reconnected := false
	reconnect := func() {
		if reconnected {
			return
		}
		reconnected = true
		if _, err := docker(30*time.Second, "network", "connect", "--alias", svc, net, id); err != nil {
			t.Error(err) // not Fatal: this may run in a deferred call while the test is failing
		}
	}
	// A failed check must not leave the bridge cut for the scenarios after this one.
	defer reconnect()
	// The cut bridge cannot reach NATS: its /readyz must say so within the partition, and lb must then
	// leave it out.
	notReady := waitFor(t, cut, svc+" /readyz not 200 while cut", func() error {
		if err := w.p.readyInside(svc); err == nil {
			return fmt.Errorf("%s still ready", svc)
		}
		return nil
	})
	left := w.waitLB(t, svc, false, 10*time.Second)
	t.Logf("%s not ready %s after the cut; lb left it out %s later", svc, notReady.Round(100*time.Millisecond),
		left.Round(100*time.Millisecond))
	w.waitAccepted(t, t.Name(), 3, time.Minute)
	// The partition itself lasts cut: this timer is the fault being injected, not a wait for a condition.
	time.Sleep(time.Until(start.Add(cut)))
	reconnect()
	t.Logf("%s cut from %s for %s", svc, net, time.Since(start).Round(100*time.Millisecond))
	w.waitBack(t, svc, time.Now())
	waitFor(t, time.Minute, "both submit services answer", func() error { return services(w.nc, 2) })
	w.waitLB(t, svc, true, time.Minute)
	w.waitAccepted(t, t.Name(), 2, time.Minute)
	l.halt()
	w.settle(t, t.Name(), settleBound)
	w.report(t, m)
}

// rollingRestart restarts every container in turn (docker stop, SIGTERM with the bridges'
// BRIDGE_SHUTDOWN_DELAY, then start), waiting for each to be back before the next.
func (w *world) rollingRestart(t *testing.T) {
	m := w.mark(t)
	l := w.startLoad(t.Name(), period)
	defer l.halt() // a failed check stops the load too
	w.waitAccepted(t, t.Name(), 2, time.Minute)
	for _, svc := range []string{"nats-1", "nats-2", "nats-3", "bridge-1", "bridge-2"} {
		start := time.Now()
		if out, err := w.p.compose(2*time.Minute, "restart", "-t", "30", svc); err != nil {
			t.Fatalf("restart %s: %v\n%s", svc, err, out)
		}
		t.Logf("restart %s took %s", svc, time.Since(start).Round(100*time.Millisecond))
		w.waitBack(t, svc, start)
		if svc == "bridge-1" || svc == "bridge-2" {
			waitFor(t, time.Minute, "both submit services answer", func() error { return services(w.nc, 2) })
		}
		w.waitAccepted(t, t.Name(), 1, time.Minute)
	}
	l.halt()
	w.settle(t, t.Name(), settleBound)
	w.report(t, m)
}

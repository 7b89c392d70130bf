package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	crand "crypto/rand"
	"encoding/base64"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/promutil"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"
)

// demoFlags are bridge demo's own knobs beside the simulator's.
type demoFlags struct {
	jobs, concurrency, forged, forgedVerdicts, apiRPM int
	deadline, poll, grace, maxWait                    time.Duration
	keep                                              bool
	contract                                          string
}

// runDemo runs every role in-process against the simulator with faults, submits a workload over
// moderate.*, and prints what became of it. It fails unless nothing was lost and nothing doubled.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d, sf, err := parseDemoFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	simCfg, env := sf.config(), d.bridgeEnv()
	if err := demoContract(d.contract, &simCfg, env); err != nil {
		return usageError{err}
	}
	lb, err := startLocal(ctx, localSpec{name: "demo", sim: simCfg, env: env, keep: d.keep})
	if err != nil {
		return err
	}
	defer lb.close()
	a, sim := lb.app, lb.sim
	fmt.Fprintf(stdout, "bridge demo: %d jobs, simulator at %s (drop %.0f%%, duplicate %.0f%%, never finish %.0f%%, 5xx %.0f%%, 429 %.0f%%, seed %d)\n",
		d.jobs, sim.URL(), sf.drop*100, sf.duplicate*100, sf.neverFinish*100, sf.errorRate*100, sf.rateLimitRate*100, sim.Seed())
	fmt.Fprintf(stdout, "NATS at %s, webhooks at %s, logs in %s\n\n", a.Server().ClientURL(), a.PublicURL(), lb.logFile.Name())
	r := &demoRun{d: d, lb: lb, tally: newDemoTally(), stdout: stdout}
	return r.run(ctx)
}

// parseDemoFlags parses bridge demo's flags: its own, and the simulator's with the demo's faults as
// defaults.
func parseDemoFlags(args []string, stdout, stderr io.Writer) (demoFlags, simFlags, error) {
	fs := newFlagSet("bridge demo", demoUsage, &cli{stdout: stdout, stderr: stderr})
	var d demoFlags
	fs.IntVar(&d.jobs, "jobs", 200, "jobs to submit, spread over prompt, image, video and chat")
	fs.IntVar(&d.concurrency, "concurrency", 16, "submissions in flight at once")
	fs.IntVar(&d.forged, "forged", 20, "forged webhooks with job ids the upstream does not know")
	fs.IntVar(&d.forgedVerdicts, "forged-verdicts", 10, "forged webhooks that flip the verdict of a real job")
	fs.IntVar(&d.apiRPM, "api-rpm", 6000, "the bridge's upstream budget per minute (the real default is 60)")
	fs.DurationVar(&d.deadline, "deadline", 8*time.Second, "job deadline of every modality (the real defaults are 5m and 15m)")
	fs.DurationVar(&d.poll, "poll", time.Second, "reconciler poll interval")
	fs.DurationVar(&d.grace, "grace", 500*time.Millisecond, "webhook grace before polling")
	fs.DurationVar(&d.maxWait, "max-wait", 2*time.Minute, "give up waiting for results after this long")
	fs.BoolVar(&d.keep, "keep", false, "keep the data directory and log file")
	fs.StringVar(&d.contract, "contract", simulator.ContractV1, "contract the simulator speaks: v1 or v2 (signed, retried webhooks; the bridge runs with BRIDGE_API_CONTRACT=auto and the simulator's secret)")
	var sf simFlags
	sf.register(fs.FlagSet, simFlags{
		seed: 1, drop: 0.15, duplicate: 0.15, neverFinish: 0.03, fail: 0.03, prohibited: 0.25,
		errorRate: 0.05, rateLimitRate: 0.03, queueDelay: 50 * time.Millisecond, processDelay: 300 * time.Millisecond,
		grantChat: true,
	})
	if err := fs.noArgs(args); err != nil {
		return d, sf, err
	}
	if d.jobs < 1 || d.concurrency < 1 || d.forged < 0 || d.forgedVerdicts < 0 || d.apiRPM < 1 {
		return d, sf, usageError{fmt.Errorf("bridge demo: -jobs, -concurrency and -api-rpm must be positive, -forged and -forged-verdicts not negative")}
	}
	return d, sf, nil
}

// bridgeEnv is the bridge's environment for the demo: a generous budget and short deadlines, so that a
// run takes seconds.
func (d demoFlags) bridgeEnv() map[string]string {
	return map[string]string{
		"BRIDGE_API_RPM":        fmt.Sprint(d.apiRPM),
		"BRIDGE_TIMEOUT_PROMPT": d.deadline.String(), "BRIDGE_TIMEOUT_IMAGE": d.deadline.String(),
		"BRIDGE_TIMEOUT_VIDEO": d.deadline.String(), "BRIDGE_TIMEOUT_CHAT": d.deadline.String(),
		"BRIDGE_POLL_INTERVAL": d.poll.String(), "BRIDGE_WEBHOOK_GRACE": d.grace.String(), "BRIDGE_RETENTION": "24h",
	}
}

// demoRun is one run of bridge demo: its knobs, the bridge it runs, and what became of the workload.
type demoRun struct {
	d      demoFlags
	lb     *localBridge
	tally  *demoTally
	stdout io.Writer

	// Set by run: the jobs accepted, submissions refused and BUSY refusals retried, forged webhooks that
	// were not answered 2xx, and the time from the first submission to the end of the wait for results.
	submitted                           []string
	submitErrs, busyRefusals, forgeErrs int
	elapsed                             time.Duration
}

// run submits and forges the workload, waits for its results and reports what became of it.
func (r *demoRun) run(ctx context.Context) error {
	nc, err := nats.Connect(r.lb.app.Server().ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := waitForService(ctx, nc, 10*time.Second); err != nil {
		return err
	}
	stop, err := r.tally.follow(ctx, nc)
	if err != nil {
		return err
	}
	defer stop()

	start := time.Now()
	r.submitted, r.submitErrs, r.busyRefusals = demoSubmit(ctx, nc, r.d, r.tally)
	r.forgeErrs = demoForge(ctx, r.lb.app.PublicURL(), r.d, r.tally)
	r.wait(ctx, start)
	r.elapsed = time.Since(start)
	lost, doubled, mismatched := r.summary()
	return r.verdict(lost, doubled, mismatched)
}

// wait prints the results so far every second until every submitted job has one, max-wait has passed
// since the workload was sent, or ctx ends.
func (r *demoRun) wait(ctx context.Context, start time.Time) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	limit := time.After(r.d.maxWait)
	t := r.tally
	for t.delivered() < len(r.submitted) {
		select {
		case <-ctx.Done():
			return
		case <-limit:
			return
		case <-ticker.C:
			fmt.Fprintf(r.stdout, "  %5.1fs  results %d/%d  (webhook %d, export %d, poll %d, timeout %d)\n",
				time.Since(start).Seconds(), t.delivered(), len(r.submitted), t.bySource(contract.SourceWebhook),
				t.bySource(contract.SourceExport), t.bySource(contract.SourcePoll), t.bySource(contract.SourceTimeout))
		}
	}
}

// summary prints the table of what became of the workload, from the results, the bridge's metrics and
// the simulator's stats, and returns the jobs lost, doubled, and with a verdict other than the upstream's.
func (r *demoRun) summary() (lost, doubled, mismatched int) {
	mfs, _ := r.lb.app.Metrics().Gather()
	fams := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		fams[mf.GetName()] = mf
	}
	webhooks := promutil.ByLabel(fams, "bridge_ingest_webhooks_total", "outcome")
	deadLetters := promutil.ByLabel(fams, "bridge_deadletter_total", "reason")
	t, sim := r.tally, r.lb.sim
	lost, doubled, mismatched = t.check(r.submitted, sim)
	w := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(r.stdout, "\nafter %.1fs:\n", r.elapsed.Seconds())
	row := func(name string, v any, note string) { fmt.Fprintf(w, "%s\t%v\t  %s\n", name, v, note) }
	row("submitted", len(r.submitted), fmt.Sprintf("over moderate.* (%d refused by the upstream)", r.submitErrs))
	row("refused BUSY", r.busyRefusals, "the account's budget was owed to accepted work: retried after Retry-After, same key")
	row("webhooks received", int(webhooks["accepted"]+webhooks["duplicate"]), "answered 2xx after the JetStream ack")
	row("duplicates collapsed", int(webhooks["duplicate"]), "Nats-Msg-Id = job_id")
	row("forgeries rejected", int(deadLetters["not_found"]), fmt.Sprintf("of %d with unknown ids, kept in DEADLETTER", r.d.forged-r.forgeErrs))
	row("forged verdicts", r.d.forgedVerdicts, "published with the upstream's verdict instead")
	row("verified in batches", t.bySource(contract.SourceExport), "one GET /jobs/export a round, while calls were scarce")
	row("recovered by polling", t.bySource(contract.SourcePoll), "webhook dropped or late")
	st := sim.Stats()
	row("timed out", t.bySource(contract.SourceTimeout), fmt.Sprintf("BRIDGE_TIMEOUT after the deadline (%d never finished upstream)", st.Jobs["queued"]+st.Jobs["processing"]))
	row("late results", t.lateCount(), "finished upstream after the bridge timed them out; once on results.late.<type>")
	row("results delivered", t.delivered(), "one per job on results.<type>")
	calls := upstreamCalls(st)
	row("upstream calls", calls, fmt.Sprintf("%.2f per job", float64(calls)/float64(max(1, len(r.submitted)))))
	row("verdict mismatches", mismatched, "results that differ from the upstream's truth")
	row("lost", lost, "")
	row("doubled", doubled, "")
	w.Flush()
	return lost, doubled, mismatched
}

// verdict fails the demo when no job was accepted, or any was lost, doubled or given the wrong verdict.
func (r *demoRun) verdict(lost, doubled, mismatched int) error {
	if len(r.submitted) == 0 {
		return fmt.Errorf("demo failed: no job was accepted (log: %s)", r.lb.logFile.Name())
	}
	if lost > 0 || doubled > 0 || mismatched > 0 {
		return fmt.Errorf("demo failed: %d lost, %d doubled, %d verdict mismatches (log: %s)", lost, doubled, mismatched, r.lb.logFile.Name())
	}
	fmt.Fprintln(r.stdout, "\nnothing lost, nothing doubled.")
	return nil
}

// demoContract makes the simulator speak contract; for v2 it signs webhooks with a fresh secret that the
// bridge is given as BRIDGE_WEBHOOK_SECRET, and retries them on the documented schedule, compressed.
func demoContract(contract string, sim *simulator.Config, env map[string]string) error {
	switch contract {
	case simulator.ContractV1:
	case simulator.ContractV2:
		key := make([]byte, 32)
		_, _ = crand.Read(key)
		sim.Contract, sim.WebhookSecret = contract, "whsec_"+base64.StdEncoding.EncodeToString(key)
		sim.WebhookRetryScale = 0.01
		sim.GrantChat = false // chat is retired in v2; the bridge maps it to /moderate/text
		env["BRIDGE_WEBHOOK_SECRET"] = sim.WebhookSecret
	default:
		return fmt.Errorf("bridge demo -contract %q: want v1 or v2", contract)
	}
	return nil
}

// waitForService waits until the moderation micro service answers a ping: roles start concurrently.
func waitForService(ctx context.Context, nc *nats.Conn, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		rctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		_, err := nc.RequestWithContext(rctx, "$SRV.PING."+contract.Default.ServiceName, nil)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("submit service not answering within %v: %w", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// demoSubmit submits d.jobs jobs over NATS request-reply and returns the accepted job ids.
func demoSubmit(ctx context.Context, nc *nats.Conn, d demoFlags, t *demoTally) ([]string, int, int) {
	modalities := contract.Modalities()
	var mu sync.Mutex
	var ids []string
	var refused, busy atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(d.concurrency)
	for i := range d.jobs {
		g.Go(func() error {
			m := modalities[i%len(modalities)]
			value := fmt.Sprintf("demo prompt number %d", i)
			switch m.Name {
			case "image":
				value = fmt.Sprintf("https://example.com/img/%d.png", i)
			case "video":
				value = fmt.Sprintf("https://example.com/vid/%d.mp4", i)
			}
			// A well-behaved caller: a BUSY refusal is retried after its Retry-After, with the same key.
			key := fmt.Sprintf("demo-%d", i)
			for {
				rctx, cancel := context.WithTimeout(gctx, 30*time.Second)
				rep, _, err := ops.Submit(rctx, nc, ops.SubmitRequest{Modality: m.Name, Fields: map[string]string{m.Field: value}, IdempotencyKey: key})
				cancel()
				if se, ok := errors.AsType[*ops.ServiceError](err); ok && se.Busy() {
					busy.Add(1)
					select {
					case <-gctx.Done():
						return nil
					case <-time.After(time.Duration(max(1, se.RetryAfter)) * time.Second):
					}
					continue
				}
				if err != nil {
					refused.Add(1)
					return nil
				}
				mu.Lock()
				ids = append(ids, rep.JobID)
				mu.Unlock()
				t.submitted(rep.JobID)
				return nil
			}
		})
	}
	_ = g.Wait()
	return ids, int(refused.Load()), int(busy.Load())
}

// demoForge posts forged webhooks: unknown job ids, and flipped verdicts for real jobs.
func demoForge(ctx context.Context, base string, d demoFlags, t *demoTally) int {
	client := &http.Client{Timeout: 10 * time.Second}
	failed := 0
	post := func(id string, prohibited bool) {
		body := fmt.Sprintf(`{"job_id":%q,"status":"completed","is_prohibited":%t,"categories":{"custom":{}},"completed_at":%q}`,
			id, prohibited, time.Now().UTC().Format(time.RFC3339))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhook/prompt", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			failed++
			return
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			failed++
		}
	}
	for range d.forged {
		post(uuid.NewString(), false)
	}
	ids := t.ids()
	for i := 0; i < d.forgedVerdicts && len(ids) > 0; i++ {
		post(ids[rand.IntN(len(ids))], true)
	}
	return failed
}

// demoTally counts what arrives on RESULTS.
type demoTally struct {
	mu      sync.Mutex
	jobs    map[string]bool         // submitted job ids
	results map[string][]demoResult // primary results per job
	sources map[string]int          // primary results per source
	late    map[string]int          // late results per job
}

type demoResult struct {
	source     string
	prohibited *bool
}

func newDemoTally() *demoTally {
	return &demoTally{jobs: map[string]bool{}, results: map[string][]demoResult{}, sources: map[string]int{}, late: map[string]int{}}
}

// follow counts into t every result stored on RESULTS from the stream's start, until stop is called.
func (t *demoTally) follow(ctx context.Context, nc *nats.Conn) (stop func(), err error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, contract.Default.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.Default.SubjectResults + ">"}})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(t.add)
	if err != nil {
		return nil, err
	}
	return cc.Stop, nil
}

func (t *demoTally) submitted(id string) {
	t.mu.Lock()
	t.jobs[id] = true
	t.mu.Unlock()
}

func (t *demoTally) ids() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.jobs))
	for id := range t.jobs {
		out = append(out, id)
	}
	return out
}

func (t *demoTally) add(m jetstream.Msg) {
	var r struct {
		JobID        string `json:"job_id"`
		IsProhibited *bool  `json:"is_prohibited"`
	}
	_ = json.Unmarshal(m.Data(), &r)
	src := m.Headers().Get(contract.HeaderBridgeSource)
	t.mu.Lock()
	defer t.mu.Unlock()
	if strings.HasPrefix(m.Subject(), contract.Default.SubjectLateResults) {
		t.late[r.JobID]++
		return
	}
	t.results[r.JobID] = append(t.results[r.JobID], demoResult{source: src, prohibited: r.IsProhibited})
	t.sources[src]++
}

func (t *demoTally) delivered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for id := range t.jobs {
		if len(t.results[id]) > 0 {
			n++
		}
	}
	return n
}

func (t *demoTally) lateCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.late)
}

func (t *demoTally) bySource(s string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sources[s]
}

// check counts submitted jobs without a result, jobs with more than one, and verified results whose
// verdict differs from the simulator's.
func (t *demoTally) check(ids []string, sim *simulator.Simulator) (lost, doubled, mismatched int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		rs := t.results[id]
		switch {
		case len(rs) == 0:
			lost++
		case len(rs) > 1:
			doubled++
		}
		if t.late[id] > 1 {
			doubled++
		}
		if len(rs) == 0 || rs[0].source == contract.SourceTimeout {
			continue
		}
		if j, ok := sim.Job(id); !ok || !sameVerdict(j.Prohibited, rs[0].prohibited) {
			mismatched++
		}
	}
	return lost, doubled, mismatched
}

func sameVerdict(a, b *bool) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// upstreamCalls is the number of upstream API calls the simulator answered (health checks aside).
func upstreamCalls(st simulator.Stats) int {
	n := 0
	for ep, c := range st.Calls {
		if ep != simulator.EndpointHealth {
			n += c
		}
	}
	return n
}

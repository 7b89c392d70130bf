// Package loadgen drives a running bridge with webhooks (or submissions over NATS) at a fixed rate or
// flat out, bounded by a count and a time, and measures what a sender and a downstream consumer see:
// accepted per second, HTTP (or request-reply) latency, end-to-end latency from the send to the result
// stored in RESULTS, upstream calls per result (from the bridge's own /metrics), and errors by class.
//
// It is the engine of `bridge bench`; it talks only to loopback targets.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/promutil"
)

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("loadgen: invalid config")

// Config is one run. Target is required, and NC with Submit; every bound has a default.
type Config struct {
	// Names are the bridge's names (its namespace's); the zero Names means contract.Default.
	Names contract.Names
	// Target is the base URL of the bridge's HTTP listener (webhooks and /metrics). It must be a
	// loopback address.
	Target string
	// Rate is operations started per second; 0 runs flat out (each of Concurrency workers starts the next
	// operation as soon as the last one is answered).
	Rate float64
	// Concurrency bounds the operations in flight; default 16.
	Concurrency int
	// Count bounds the operations; default 10000.
	Count int
	// Duration bounds the load phase; default 60s. The run ends at whichever bound comes first.
	Duration time.Duration
	// Settle bounds the wait for outstanding results after the load phase; default 30s. Zero Settle
	// with NoResults skips it.
	Settle time.Duration
	// Duplicates is the share of webhooks that repeat an earlier job's (webhook mode only).
	Duplicates float64
	// Modality is the webhook path's and the submission's modality; default prompt.
	Modality string

	// Submit drives submissions over NATS (moderate.<modality>) instead of posting webhooks; the upstream
	// sends the webhooks.
	Submit bool
	// Jobs are the job ids webhooks carry: jobs the bridge's upstream knows, so each ends in a result.
	// Empty: every webhook carries a fresh made-up id (ingest is measured; the bridge dead-letters them
	// and no end-to-end figure is reported).
	Jobs []string
	// NC is the NATS connection for Submit and for observing RESULTS; nil measures ingest only.
	NC *nats.Conn
	// HTTP posts the webhooks; default a keep-alive client sized for Concurrency with a 10 s timeout
	// (the upstream's).
	HTTP *http.Client
	// Seed seeds the duplicate choice; 0 is random.
	Seed uint64
}

func (c *Config) setDefaults() {
	c.Names = c.Names.OrDefault()
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.Count == 0 {
		c.Count = 10000
	}
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.Settle == 0 {
		c.Settle = 30 * time.Second
	}
	if c.Modality == "" {
		c.Modality = "prompt"
	}
	if c.HTTP == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = c.Concurrency * 2
		t.MaxIdleConnsPerHost = c.Concurrency * 2
		c.HTTP = &http.Client{Transport: t, Timeout: 10 * time.Second}
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
}

// Validate reports the first invalid field, after defaults.
func (c *Config) Validate() error {
	switch {
	case c.Concurrency < 1 || c.Concurrency > 4096:
		return fmt.Errorf("%w: concurrency %d: want 1 to 4096", ErrInvalidConfig, c.Concurrency)
	case c.Count < 1:
		return fmt.Errorf("%w: count %d: want at least 1", ErrInvalidConfig, c.Count)
	case c.Duration <= 0 || c.Settle < 0:
		return fmt.Errorf("%w: duration %v, settle %v: want positive", ErrInvalidConfig, c.Duration, c.Settle)
	case c.Rate < 0:
		return fmt.Errorf("%w: rate %v: must not be negative", ErrInvalidConfig, c.Rate)
	case c.Duplicates < 0 || c.Duplicates >= 1:
		return fmt.Errorf("%w: duplicates %v: want a share in [0,1)", ErrInvalidConfig, c.Duplicates)
	case c.Submit && c.NC == nil:
		return fmt.Errorf("%w: submit needs a NATS connection", ErrInvalidConfig)
	}
	return CheckLoopback(c.Target)
}

// CheckLoopback accepts only URLs whose host is a loopback address or localhost: the tool is for
// measuring one's own bridge, not for load on anyone else's.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: target %q: want a URL such as http://127.0.0.1:8080", ErrInvalidConfig, raw)
	}
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: target %q: only loopback targets (127.0.0.1, ::1, localhost)", ErrInvalidConfig, raw)
}

// lateSlack is how late past its slot an operation may start at a fixed rate before it counts as
// behind: timer and scheduling jitter on a busy machine is about a millisecond or two.
const lateSlack = 5 * time.Millisecond

// Report is what a run measured.
type Report struct {
	Mode        string // "webhooks" or "submissions"
	Target      string
	Rate        float64
	Concurrency int
	Sent        int           // operations started
	Accepted    int           // answered 2xx (webhooks) or with a job_id (submissions)
	Elapsed     time.Duration // the load phase
	Behind      int           // operations started more than one period (at least 5 ms) late (fixed rate only)
	// Latency are the answer times of accepted operations, sorted. At a fixed rate each is timed from the
	// operation's slot in the schedule, not from its actual send, so a stall that delays later sends counts
	// against them (no coordinated omission); flat out, from the send.
	Latency []time.Duration
	// FromSchedule says Latency is timed from the schedule (Rate > 0).
	FromSchedule bool
	// Errors counts failed operations by class: "http 503", "transport", "timeout", "nats no responders", ...
	Errors map[string]int

	// Expected is the number of distinct jobs owed a result; Results how many arrived within Settle.
	Expected, Results int
	// EndToEnd are, per job, the times from its first send to its result stored in RESULTS, sorted.
	EndToEnd []time.Duration
	// Settled is how long the wait for results took after the load phase.
	Settled time.Duration
	// UpstreamCalls is the growth of bridge_upstream_calls_total over the run; -1 when not readable.
	UpstreamCalls float64
	// Note explains a figure that is not available.
	Note string
}

// AcceptedPerSec is accepted operations per second of the load phase.
func (r *Report) AcceptedPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Accepted) / r.Elapsed.Seconds()
}

// Quantile returns the q quantile (0..1) of sorted durations, 0 when empty.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)))
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Run drives the load described by cfg and returns what it measured. It returns early only on a
// configuration error or when ctx ends before the load starts.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, rep := newRun(cfg), newReport(cfg)
	observe := cfg.observes()
	if observe {
		stop, err := r.observe(ctx)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	calls0, callsErr := upstreamCalls(ctx, cfg.HTTP, cfg.Target)
	rep.Elapsed, rep.Behind = r.load(ctx)
	if observe {
		rep.Settled = r.settle(ctx)
	}
	if calls1, err := upstreamCalls(ctx, cfg.HTTP, cfg.Target); err == nil && callsErr == nil {
		rep.UpstreamCalls = calls1 - calls0
	}
	r.tally(rep, observe)
	return rep, nil
}

// observes says whether a run follows RESULTS for end-to-end latency: it needs a NATS connection, and
// jobs that end in a result (submissions, or webhooks that carry the upstream's own jobs).
func (c *Config) observes() bool {
	return c.NC != nil && (c.Submit || len(c.Jobs) > 0)
}

// newReport is the report of a run of cfg before it starts: its settings, and why a figure will be
// missing.
func newReport(cfg Config) *Report {
	rep := &Report{Mode: "webhooks", Target: cfg.Target, Rate: cfg.Rate, Concurrency: cfg.Concurrency, UpstreamCalls: -1,
		FromSchedule: cfg.Rate > 0}
	if cfg.Submit {
		rep.Mode = "submissions"
	}
	switch {
	case cfg.NC == nil:
		rep.Note = "no NATS connection: end-to-end latency not measured"
	case !cfg.observes():
		rep.Note = "webhooks carry made-up job ids (no upstream jobs given): end-to-end latency not measured; the bridge dead-letters them"
	}
	return rep
}

// load is the load phase: operations are handed out at their slots (or flat out) until Count or Duration
// is reached, and run by Concurrency workers. It returns how long the phase took and how many operations
// started behind their slot.
func (r *run) load(ctx context.Context) (elapsed time.Duration, behind int) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	r.start = time.Now()
	if r.cfg.Rate > 0 {
		r.period = time.Duration(float64(time.Second) / r.cfg.Rate)
	}
	next := make(chan int)
	var late atomic.Int64
	go r.schedule(lctx, next, &late)
	r.work(ctx, next)
	return time.Since(r.start), int(late.Load())
}

// schedule hands out the numbers of the operations to start, each at its slot at a fixed rate, until
// Count is reached or lctx ends; it counts in behind the operations that started late, and closes next.
func (r *run) schedule(lctx context.Context, next chan<- int, behind *atomic.Int64) {
	defer close(next)
	for i := range r.cfg.Count {
		if r.period > 0 {
			late, ok := r.waitForSlot(lctx, i)
			if !ok {
				return
			}
			if late {
				behind.Add(1)
			}
		}
		select {
		case next <- i:
		case <-lctx.Done():
			return
		}
	}
}

// waitForSlot waits until operation i is due. It reports whether i is behind (due more than one period,
// at least lateSlack, ago), and ok false when lctx ends first.
func (r *run) waitForSlot(lctx context.Context, i int) (behind, ok bool) {
	d := time.Until(r.due(i))
	if d <= 0 {
		return -d > max(r.period, lateSlack), true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, true
	case <-lctx.Done():
		return false, false
	}
}

// work runs the operations next hands out on Concurrency workers, and returns when next is closed and
// every operation started has been answered.
func (r *run) work(ctx context.Context, next <-chan int) {
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for i := range next {
				// An operation started runs to its answer: the time bound stops new ones, it does not
				// cancel those in flight (they are bounded by the client's own timeout).
				if r.cfg.Submit {
					r.submit(ctx, i)
				} else {
					r.webhook(ctx, i)
				}
			}
		})
	}
	wg.Wait()
}

// settle waits, at most Settle, for the owed results that have not arrived yet, and returns how long it
// waited.
func (r *run) settle(ctx context.Context) time.Duration {
	start := time.Now()
	deadline := start.Add(r.cfg.Settle)
	for r.outstanding() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // a measuring tool polls its own counters; bounded by Settle
	}
	return time.Since(start)
}

// tally puts into rep what the operations recorded and, when observe, which owed results arrived and
// how long after their first send.
func (r *run) tally(rep *Report, observe bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Sent, rep.Accepted = r.ops, r.ok
	rep.Latency = r.latency
	slices.Sort(rep.Latency)
	rep.Errors = r.errs
	if !observe {
		return
	}
	for id := range r.accepted {
		rep.Expected++
		if at, ok := r.arrived[id]; ok {
			rep.Results++
			rep.EndToEnd = append(rep.EndToEnd, max(0, at.Sub(r.sent[id])))
		}
	}
	slices.Sort(rep.EndToEnd)
}

// newRun is the empty state of a run of cfg.
func newRun(cfg Config) *run {
	return &run{cfg: cfg, sent: map[string]time.Time{}, accepted: map[string]bool{}, arrived: map[string]time.Time{},
		errs: map[string]int{}, rng: rand.New(rand.NewPCG(cfg.Seed, 1))}
}

// run is the state of one Run.
type run struct {
	cfg Config
	// start is when the load phase began; period the schedule's spacing, 0 flat out. Both are set before
	// the workers start and not written after.
	start  time.Time
	period time.Duration
	// mu guards everything below.
	mu       sync.Mutex
	rng      *rand.Rand
	nextJob  int
	ops, ok  int
	latency  []time.Duration
	errs     map[string]int
	sent     map[string]time.Time // first send per job
	accepted map[string]bool      // jobs owed a result
	arrived  map[string]time.Time // result stored per job
}

// pick chooses the job id of webhook i: a repeat of an earlier one with probability Duplicates, else the
// next unused job (or a fresh made-up id), and records the first send time.
func (r *run) pick() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var id string
	switch {
	case len(r.cfg.Jobs) == 0:
		if r.nextJob > 0 && r.rng.Float64() < r.cfg.Duplicates {
			id = r.anySent()
		} else {
			id = uuid.NewString()
			r.nextJob++
		}
	case r.nextJob > 0 && (r.nextJob >= len(r.cfg.Jobs) || r.rng.Float64() < r.cfg.Duplicates):
		id = r.cfg.Jobs[r.rng.IntN(r.nextJob)]
	default:
		id = r.cfg.Jobs[r.nextJob]
		r.nextJob++
	}
	if _, ok := r.sent[id]; !ok {
		r.sent[id] = time.Now()
	}
	return id
}

// anySent returns an id already sent (made-up ids mode).
func (r *run) anySent() string {
	for id := range r.sent {
		return id
	}
	return uuid.NewString()
}

// due is when operation i is scheduled to start: its slot at a fixed rate.
func (r *run) due(i int) time.Time { return r.start.Add(time.Duration(i) * r.period) }

// t0 is what operation i's latency is timed from: its slot at a fixed rate, however late it was actually
// sent (a send held back by a slow answer to an earlier one is the target's delay too), else now.
func (r *run) t0(i int) time.Time {
	now := time.Now()
	if due := r.due(i); r.period > 0 && due.Before(now) {
		return due
	}
	return now
}

func (r *run) webhook(ctx context.Context, i int) {
	id := r.pick()
	body := `{"job_id":"` + id + `","type":"` + r.cfg.Modality + `","status":"completed"}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.Target+"/webhook/"+r.cfg.Modality, strings.NewReader(body))
	if err != nil {
		r.fail("request: " + err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Job-Id", id) // only a floor handler (bridge bench --floor) reads it
	t0 := r.t0(i)
	resp, err := r.cfg.HTTP.Do(req)
	if err != nil {
		r.fail(transportClass(err))
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if resp.StatusCode/100 != 2 {
		r.fail("http " + strconv.Itoa(resp.StatusCode))
		return
	}
	r.mu.Lock()
	r.ops++
	r.ok++
	r.latency = append(r.latency, d)
	if len(r.cfg.Jobs) > 0 {
		r.accepted[id] = true
	}
	r.mu.Unlock()
}

func (r *run) submit(ctx context.Context, i int) {
	body := []byte(`{"prompt":"bridge bench ` + strconv.Itoa(i) + `"}`)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t0 := r.t0(i)
	msg, err := r.cfg.NC.RequestWithContext(rctx, r.cfg.Names.SubjectSubmit+r.cfg.Modality, body)
	d := time.Since(t0)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		r.fail("nats no responders")
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		r.fail("timeout")
		return
	case err != nil:
		r.fail("nats " + err.Error())
		return
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		r.fail("submit " + code)
		return
	}
	var rep struct {
		JobID string `json:"job_id"`
	}
	if json.Unmarshal(msg.Data, &rep) != nil || rep.JobID == "" {
		r.fail("bad reply")
		return
	}
	r.mu.Lock()
	r.ops++
	r.ok++
	r.latency = append(r.latency, d)
	r.sent[rep.JobID] = t0
	r.accepted[rep.JobID] = true
	r.mu.Unlock()
}

func (r *run) fail(class string) {
	r.mu.Lock()
	r.ops++
	r.errs[class]++
	r.mu.Unlock()
}

// transportClass names a failed exchange: timeout, connection refused or reset, or other transport.
func transportClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case strings.Contains(err.Error(), "connection refused"):
		return "transport: connection refused"
	case strings.Contains(err.Error(), "connection reset"):
		return "transport: connection reset"
	}
	return "transport"
}

// outstanding is the number of owed results not yet arrived.
func (r *run) outstanding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id := range r.accepted {
		if _, ok := r.arrived[id]; !ok {
			n++
		}
	}
	return n
}

// observe follows RESULTS from now on and records when each job's result was stored.
func (r *run) observe(ctx context.Context) (func(), error) {
	js, err := jetstream.New(r.cfg.NC)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	names := r.cfg.Names
	cons, err := js.OrderedConsumer(octx, names.StreamResults, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy, FilterSubjects: []string{names.SubjectResults + ">"},
	})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", names.StreamResults, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if id == "" || strings.HasSuffix(id, contract.LateSuffix) {
			return
		}
		at := time.Now()
		if md, err := m.Metadata(); err == nil {
			at = md.Timestamp
		}
		r.mu.Lock()
		if _, ok := r.arrived[id]; !ok {
			r.arrived[id] = at
		}
		r.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", names.StreamResults, err)
	}
	return cc.Stop, nil
}

// upstreamCalls reads the sum of bridge_upstream_calls_total from the target's /metrics; a counter vector
// with no series yet is absent from it, which is zero.
func upstreamCalls(ctx context.Context, hc *http.Client, target string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fams, err := promutil.Scrape(ctx, hc, target+"/metrics")
	if err != nil {
		return 0, err
	}
	return promutil.Sum(fams, "bridge_upstream_calls_total"), nil
}

// Print writes the report as a short table.
func (r *Report) Print(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
	rate := "flat out"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g/s", r.Rate)
	}
	fmt.Fprintf(w, "%s to %s, concurrency %d, rate %s\n", r.Mode, r.Target, r.Concurrency, rate)
	fmt.Fprintf(w, "  sent          %d in %.2fs", r.Sent, r.Elapsed.Seconds())
	if r.Behind > 0 {
		fmt.Fprintf(w, " (%d started over max(one period, 5ms) late: the target or this machine could not keep the rate)", r.Behind)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  accepted      %d  (%.0f/s)\n", r.Accepted, r.AcceptedPerSec())
	what := "http latency"
	if r.Mode == "submissions" {
		what = "request latency"
	}
	from := "timed from the send"
	if r.FromSchedule {
		from = "timed from each request's slot in the schedule, not its send: no coordinated omission"
	}
	fmt.Fprintf(w, "  %-13s p50 %s  p90 %s  p99 %s  max %s  (%s)\n", what, ms(Quantile(r.Latency, .5)), ms(Quantile(r.Latency, .9)),
		ms(Quantile(r.Latency, .99)), ms(Quantile(r.Latency, 1)), from)
	if r.Expected > 0 {
		fmt.Fprintf(w, "  results       %d of %d owed, within %.2fs after the load\n", r.Results, r.Expected, r.Settled.Seconds())
		fmt.Fprintf(w, "  end to end    p50 %s  p90 %s  p99 %s  max %s  (send to result stored in RESULTS)\n",
			ms(Quantile(r.EndToEnd, .5)), ms(Quantile(r.EndToEnd, .9)), ms(Quantile(r.EndToEnd, .99)), ms(Quantile(r.EndToEnd, 1)))
	}
	switch {
	case r.UpstreamCalls < 0:
		fmt.Fprintln(w, "  upstream      n/a (the target's /metrics could not be read)")
	case r.Results > 0:
		fmt.Fprintf(w, "  upstream      %.0f calls, %.2f per result\n", r.UpstreamCalls, r.UpstreamCalls/float64(r.Results))
	default:
		fmt.Fprintf(w, "  upstream      %.0f calls\n", r.UpstreamCalls)
	}
	if len(r.Errors) == 0 {
		fmt.Fprintln(w, "  errors        none")
	} else {
		classes := slices.Sorted(maps.Keys(r.Errors))
		parts := make([]string, 0, len(classes))
		for _, k := range classes {
			parts = append(parts, fmt.Sprintf("%s: %d", k, r.Errors[k]))
		}
		fmt.Fprintf(w, "  errors        %s\n", strings.Join(parts, ", "))
	}
	if r.Note != "" {
		fmt.Fprintf(w, "  note          %s\n", r.Note)
	}
}

package ops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/jobs"
)

// minBudgetSample is the shortest metrics sample that may flag a saturated upstream budget.
const minBudgetSample = 10 * time.Second

// StatusConfig configures [Status]. JS is required.
type StatusConfig struct {
	JS jetstream.JetStream
	// Names are the bridge's names (its namespace's); the zero Names means contract.Default.
	Names contract.Names
	// MetricsURLs are /metrics endpoints of running bridges; each one's /readyz is asked too. Empty
	// skips the bridge section.
	MetricsURLs []string
	// HTTP scrapes them; default a client with a 3s timeout.
	HTTP *http.Client
	// Sample, when positive, scrapes twice that far apart to turn counters into rates (calls per minute,
	// 429s in the sample).
	Sample time.Duration
	// RPM is the account's upstream limit per minute (BRIDGE_API_RPM), to express budget use. Zero takes
	// the limit the processes run the shared budget with ([BudgetStatus.RPM]), else 60.
	RPM int
	// MaxJobs bounds the JOBS records read; default 100000.
	MaxJobs int
	// Near is how close to its deadline a pending job is listed; default 1m.
	Near time.Duration
	// NearList is how many near-deadline jobs are listed; default 10.
	NearList int
	// Now is the clock ages are measured with; default time.Now.
	Now func() time.Time
}

func (c *StatusConfig) setDefaults() {
	c.Names = c.Names.OrDefault()
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 3 * time.Second}
	}
	if c.RPM <= 0 {
		c.RPM = 60
	}
	if c.MaxJobs <= 0 {
		c.MaxJobs = 100_000
	}
	if c.Near <= 0 {
		c.Near = time.Minute
	}
	if c.NearList <= 0 {
		c.NearList = 10
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Report is the status of the bridge's NATS side, its jobs and its processes. Durations are seconds.
type Report struct {
	At          time.Time         `json:"at"`
	NATS        NATSStatus        `json:"nats"`
	Streams     []StreamStatus    `json:"streams"`
	Jobs        JobsStatus        `json:"jobs"`
	DeadLetters DeadLetterSummary `json:"dead_letters"`
	// SlowLane counts the webhooks of unknown jobs waiting in the verifier's slow lane: SLOWLANE's
	// messages, no dead letters; the lane verifies them by itself.
	SlowLane uint64         `json:"slow_lane"`
	Bridges  []BridgeStatus `json:"bridges"`
	// Budget is the account-wide upstream budget; nil on a deployment without one.
	Budget *BudgetStatus `json:"budget"`
	// InterruptedSubmissions counts submissions a stopped process left between the upstream's answer and
	// the JOBS write: their jobs may exist upstream untracked (BRIDGE_ADOPT=true recovers them).
	InterruptedSubmissions int `json:"interrupted_submissions"`
	// Attention lists, most urgent first, what an operator should look at; empty when all is well.
	Attention []string `json:"attention"`
}

// NATSStatus describes the connection, the servers seen in the streams' replica sets, and the account.
type NATSStatus struct {
	Connected    string         `json:"connected"`
	ServerName   string         `json:"server_name"`
	Version      string         `json:"version"`
	Cluster      string         `json:"cluster,omitempty"`
	KnownServers []string       `json:"known_servers"`
	Servers      []ServerStatus `json:"servers"`
	Account      AccountStatus  `json:"account"`
}

// ServerStatus is one NATS server as the streams' Raft groups see it.
type ServerStatus struct {
	Name   string `json:"name"`
	Online bool   `json:"online"`
	// Leads names the streams and consumers this server leads.
	Leads []string `json:"leads,omitempty"`
}

// AccountStatus is the JetStream account usage.
type AccountStatus struct {
	Memory    uint64 `json:"memory"`
	Storage   uint64 `json:"storage"`
	Streams   int    `json:"streams"`
	Consumers int    `json:"consumers"`
	APITotal  uint64 `json:"api_total"`
	APIErrors uint64 `json:"api_errors"`
}

// StreamStatus is one stream (KV buckets as their streams, [contract.KVStream]) and its consumers.
type StreamStatus struct {
	Name     string `json:"name"`
	Messages uint64 `json:"messages"`
	// Results, of RESULTS only, counts its messages on results.> (results and late results), without
	// the fences on bridge.result.> stored beside them.
	Results   *uint64          `json:"results,omitempty"`
	Bytes     uint64           `json:"bytes"`
	FirstSeq  uint64           `json:"first_seq"`
	LastSeq   uint64           `json:"last_seq"`
	LastTime  time.Time        `json:"last_time,omitzero"`
	Replicas  int              `json:"replicas"`
	Leader    string           `json:"leader,omitempty"`
	Peers     []PeerStatus     `json:"peers,omitempty"`
	Healthy   bool             `json:"healthy"`
	Problem   string           `json:"problem,omitempty"`
	Consumers []ConsumerStatus `json:"consumers,omitempty"`
}

// PeerStatus is one replica of a stream.
type PeerStatus struct {
	Name    string  `json:"name"`
	Current bool    `json:"current"`
	Offline bool    `json:"offline"`
	Lag     uint64  `json:"lag"`
	Active  float64 `json:"active_seconds"`
}

// ConsumerStatus is one durable consumer: Pending is its lag (messages not yet delivered), AckPending
// those delivered and not yet acknowledged (including ones waiting out a retry delay).
type ConsumerStatus struct {
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	Waiting     int    `json:"waiting"`
	Leader      string `json:"leader,omitempty"`
}

// JobsStatus summarizes JOBS.
type JobsStatus struct {
	// Records is the bucket's record count; Scanned how many were read (at most MaxJobs).
	Records   uint64         `json:"records"`
	Scanned   int            `json:"scanned"`
	Truncated bool           `json:"truncated"`
	ByState   map[string]int `json:"by_state"`
	// Pending per modality, with the oldest age.
	Pending []ModalityPending `json:"pending"`
	// OldestPending is the age of the oldest pending job, seconds.
	OldestPending float64 `json:"oldest_pending_seconds"`
	// NearDeadline counts pending jobs within Near of their deadline (overdue ones included); Overdue
	// those past it. NearJobs lists the first NearList by deadline.
	NearDeadline int        `json:"near_deadline"`
	Overdue      int        `json:"overdue"`
	NearJobs     []JobBrief `json:"near_jobs,omitempty"`
	// Layout is the layout JOBS is at (bridge upgrade status); 0 when unknown.
	Layout int `json:"layout"`
	// History is what the server keeps of the jobs compacted out of JOBS, from its stream state; nil
	// when it could not be read.
	History *history.Stats `json:"history,omitempty"`
}

// ModalityPending is the pending jobs of one modality.
type ModalityPending struct {
	Modality    string  `json:"modality"`
	Count       int     `json:"count"`
	OldestAge   float64 `json:"oldest_age_seconds"`
	OldestJobID string  `json:"oldest_job_id"`
}

// JobBrief is one pending job.
type JobBrief struct {
	JobID      string  `json:"job_id"`
	Modality   string  `json:"modality"`
	Age        float64 `json:"age_seconds"`
	DeadlineIn float64 `json:"deadline_in_seconds"`
	Attempts   int     `json:"attempts"`
	Webhook    bool    `json:"webhook_received"`
	LastStatus string  `json:"last_status,omitempty"`
	LastError  string  `json:"last_error,omitempty"`
}

// Status gathers a [Report]. A part that cannot be read is reported in Attention, not as an error; the
// error is only for a JetStream that cannot be reached at all.
func Status(ctx context.Context, cfg StatusConfig) (Report, error) {
	if cfg.JS == nil {
		return Report{}, fmt.Errorf("%w: status: JS required", ErrInvalid)
	}
	rpmGiven := cfg.RPM > 0
	cfg.setDefaults()
	now := cfg.Now()
	rep := Report{At: now.UTC(), Bridges: []BridgeStatus{}, Attention: []string{}}

	// The bridges' metrics are sampled while NATS is read.
	var wg sync.WaitGroup
	if len(cfg.MetricsURLs) > 0 {
		wg.Go(func() { rep.Bridges = scrapeBridges(ctx, cfg) })
	}

	acct, err := cfg.JS.AccountInfo(ctx)
	if err != nil {
		wg.Wait()
		return rep, fmt.Errorf("jetstream account info: %w", err)
	}
	rep.NATS = natsStatus(cfg.JS)
	rep.NATS.Account = AccountStatus{Memory: acct.Memory, Storage: acct.Store, Streams: acct.Streams,
		Consumers: acct.Consumers, APITotal: acct.API.Total, APIErrors: acct.API.Errors}

	var attn attention
	rep.Streams = streamStatuses(ctx, cfg.JS, cfg.Names, &attn)
	for _, s := range rep.Streams {
		if s.Name == cfg.Names.StreamSlowLane {
			rep.SlowLane = s.Messages
		}
	}
	rep.NATS.Servers = servers(rep.Streams)
	rep.Jobs = jobsStatus(ctx, cfg, now, &attn)
	if dl, err := SummarizeDeadLetters(ctx, cfg.JS, cfg.Names); err == nil {
		rep.DeadLetters = dl
	} else {
		rep.DeadLetters.ByReason = map[string]uint64{}
		attn.add(2, "dead letters unreadable: %v", err)
	}
	owed := 0
	if rep.Jobs.ByState != nil {
		owed = rep.Jobs.ByState["pending"]
	}
	if b, err := budgetStatus(ctx, cfg.JS, owed, now); err != nil {
		attn.add(2, "upstream budget unreadable: %v", err)
	} else {
		rep.Budget = b
		if b != nil && b.PausedFor > 0 {
			attn.add(2, "upstream budget paused %.0fs after a 429: every process waits", b.PausedFor)
		}
	}
	wg.Wait()
	if !rpmGiven && rep.Budget != nil && rep.Budget.RPM > 0 {
		for i := range rep.Bridges {
			rep.Bridges[i].setBudgetRPM(rep.Budget.RPM)
		}
	}
	assess(&rep, cfg, &attn)
	rep.Attention = attn.list()
	return rep, nil
}

func natsStatus(js jetstream.JetStream) NATSStatus {
	nc := js.Conn()
	st := NATSStatus{Connected: nc.ConnectedUrlRedacted(), ServerName: nc.ConnectedServerName(),
		Version: nc.ConnectedServerVersion(), Cluster: nc.ConnectedClusterName(), KnownServers: nc.Servers()}
	slices.Sort(st.KnownServers)
	return st
}

// streamStatuses reports the streams behind the bridge's streams and buckets: those made at start-up
// always (a missing one is a problem), those made on first use when they exist.
func streamStatuses(ctx context.Context, js jetstream.JetStream, bridge contract.Names, attn *attention) []StreamStatus {
	names, onDemand := bridge.StoreNames(false), bridge.StoreNames(true)
	lister := js.StreamNames(ctx)
	for n := range lister.Name() {
		if !slices.Contains(names, n) && slices.Contains(onDemand, n) {
			names = append(names, n)
		}
	}
	if err := lister.Err(); err != nil {
		attn.add(1, "stream list: %v", err)
	}
	var out []StreamStatus
	for _, name := range names {
		ss := StreamStatus{Name: name}
		s, err := js.Stream(ctx, name)
		if err != nil {
			ss.Problem = err.Error()
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				ss.Problem = "missing"
				attn.add(1, "stream %s missing: no bridge has provisioned it (is one running?)", name)
			} else {
				attn.add(1, "stream %s unreadable: %v", name, err)
			}
			out = append(out, ss)
			continue
		}
		info := s.CachedInfo()
		ss.Messages, ss.Bytes = info.State.Msgs, info.State.Bytes
		ss.FirstSeq, ss.LastSeq, ss.LastTime = info.State.FirstSeq, info.State.LastSeq, info.State.LastTime
		ss.Replicas = info.Config.Replicas
		if name == bridge.StreamResults {
			ss.Results = resultCount(ctx, s, bridge, attn)
		}
		ss.Healthy = true
		if c := info.Cluster; c != nil {
			ss.Leader = c.Leader
			for _, p := range c.Replicas {
				ss.Peers = append(ss.Peers, PeerStatus{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag, Active: p.Active.Seconds()})
				if p.Offline {
					ss.Healthy = false
					attn.add(2, "stream %s: replica %s offline", name, p.Name)
				} else if !p.Current {
					ss.Healthy = false
					attn.add(3, "stream %s: replica %s catching up (lag %d)", name, p.Name, p.Lag)
				}
			}
			if ss.Replicas > 1 && c.Leader == "" {
				ss.Healthy = false
				attn.add(1, "stream %s has no leader: publishes fail until one is elected", name)
			}
		}
		if _, isKV := contract.KVBucket(name); !isKV {
			cl := s.ListConsumers(ctx)
			for ci := range cl.Info() {
				if ci.Config.Durable == "" {
					continue // ordered and other ephemeral consumers: replays, watchers, nats CLI
				}
				cs := ConsumerStatus{Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
					Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting}
				if ci.Cluster != nil {
					cs.Leader = ci.Cluster.Leader
				}
				ss.Consumers = append(ss.Consumers, cs)
			}
			if err := cl.Err(); err != nil {
				attn.add(2, "consumers of %s: %v", name, err)
			}
			slices.SortFunc(ss.Consumers, func(a, b ConsumerStatus) int { return strings.Compare(a.Name, b.Name) })
		}
		out = append(out, ss)
	}
	return out
}

// servers derives the servers and what they lead from the streams' replica sets.
func servers(streams []StreamStatus) []ServerStatus {
	byName := map[string]*ServerStatus{}
	get := func(n string) *ServerStatus {
		if s, ok := byName[n]; ok {
			return s
		}
		s := &ServerStatus{Name: n, Online: true}
		byName[n] = s
		return s
	}
	for _, st := range streams {
		if st.Leader != "" {
			s := get(st.Leader)
			s.Leads = append(s.Leads, st.Name)
		}
		for _, p := range st.Peers {
			s := get(p.Name)
			s.Online = s.Online && !p.Offline
		}
		for _, c := range st.Consumers {
			if c.Leader != "" {
				s := get(c.Leader)
				s.Leads = append(s.Leads, st.Name+"/"+c.Name)
			}
		}
	}
	out := make([]ServerStatus, 0, len(byName))
	for _, s := range byName {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b ServerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// jobsStatus reads up to MaxJobs JOBS records.
func jobsStatus(ctx context.Context, cfg StatusConfig, now time.Time, attn *attention) JobsStatus {
	js := JobsStatus{ByState: map[string]int{}, Pending: []ModalityPending{}}
	kv, err := cfg.JS.KeyValue(ctx, cfg.Names.BucketJobs)
	if err != nil {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			attn.add(1, "JOBS unreadable: %v", err)
		}
		return js
	}
	js.Records, js.Layout = jobsState(ctx, kv)
	js.History = historyStats(ctx, cfg, attn)
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		attn.add(1, "JOBS unreadable: %v", err)
		return js
	}
	defer w.Stop()
	byMod := map[string]*ModalityPending{}
	var near []JobBrief
	var oldest time.Duration
loop:
	for {
		select {
		case <-ctx.Done():
			attn.add(1, "JOBS read interrupted after %d records: %v", js.Scanned, ctx.Err())
			break loop
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				break loop // nil marks the end of the current values
			}
			if js.Scanned >= cfg.MaxJobs {
				js.Truncated = true
				break loop
			}
			js.Scanned++
			rec, err := jobs.Decode(e.Value())
			if err != nil {
				js.ByState["undecodable"]++
				continue
			}
			js.ByState[string(rec.State)]++
			if rec.State != jobs.StatePending {
				continue
			}
			age := now.Sub(rec.SubmittedAt)
			mp := byMod[rec.Modality]
			if mp == nil {
				mp = &ModalityPending{Modality: rec.Modality}
				byMod[rec.Modality] = mp
			}
			mp.Count++
			if age.Seconds() > mp.OldestAge || mp.OldestJobID == "" {
				mp.OldestAge, mp.OldestJobID = age.Seconds(), rec.JobID
			}
			oldest = max(oldest, age)
			left := rec.Deadline.Sub(now)
			if left <= cfg.Near {
				js.NearDeadline++
				if left < 0 {
					js.Overdue++
				}
				near = append(near, JobBrief{JobID: rec.JobID, Modality: rec.Modality, Age: age.Seconds(),
					DeadlineIn: left.Seconds(), Attempts: rec.Attempts, Webhook: rec.WebhookReceivedAt != nil,
					LastStatus: rec.LastStatus, LastError: rec.LastError})
			}
		}
	}
	js.OldestPending = oldest.Seconds()
	for _, mp := range byMod {
		js.Pending = append(js.Pending, *mp)
	}
	slices.SortFunc(js.Pending, func(a, b ModalityPending) int { return strings.Compare(a.Modality, b.Modality) })
	slices.SortFunc(near, func(a, b JobBrief) int { return cmp.Compare(a.DeadlineIn, b.DeadlineIn) })
	js.NearJobs = near[:min(len(near), cfg.NearList)]
	return js
}

// jobsState reads the record count and layout of JOBS from its stream state; zeros when unreadable.
func jobsState(ctx context.Context, kv jetstream.KeyValue) (records uint64, layout int) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, 0
	}
	if kvs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		layout = contract.LayoutOf(kvs.StreamInfo().Config.Metadata)
	}
	return st.Values(), layout
}

// historyStats reads the history's state: one request, whatever its length; nil without a history.
func historyStats(ctx context.Context, cfg StatusConfig, attn *attention) *history.Stats {
	st, err := readHistoryStats(ctx, cfg.JS, cfg.Names.BucketHistory)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		attn.add(2, "history unreadable: %v", err)
		return nil
	}
	return &st
}

func readHistoryStats(ctx context.Context, js jetstream.JetStream, bucket string) (history.Stats, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return history.Stats{}, err
	}
	s, err := history.New(history.Config{KV: kv})
	if err != nil {
		return history.Stats{}, err
	}
	return s.Stats(ctx)
}

// assess turns the report into findings.
func assess(rep *Report, cfg StatusConfig, attn *attention) {
	j := rep.Jobs
	if j.Overdue > 0 {
		attn.add(1, "%d pending jobs are past their deadline: the reconciler times them out within one poll interval; is one running and leader (bridge_reconcile_is_leader)?", j.Overdue)
	}
	if n := j.NearDeadline - j.Overdue; n > 0 {
		attn.add(3, "%d pending jobs are within %v of their deadline", n, cfg.Near)
	}
	if j.Truncated {
		attn.add(4, "JOBS has %d records; only the first %d were read (raise the job scan limit)", j.Records, j.Scanned)
	}
	for _, s := range rep.Streams {
		for _, c := range s.Consumers {
			if s.Name == cfg.Names.StreamWebhooks && c.Pending+uint64(c.AckPending) > 100 {
				attn.add(2, "consumer %s/%s is behind: %d webhooks not yet delivered, %d waiting for acknowledgement or a retry", s.Name, c.Name, c.Pending, c.AckPending)
			}
		}
		if s.Name == cfg.Names.StreamWebhooks && s.Problem == "" && s.Messages > 0 && !slices.ContainsFunc(s.Consumers, func(c ConsumerStatus) bool { return c.Name == cfg.Names.ConsumerVerify }) {
			attn.add(1, "no %s consumer on %s: no verifier has run", cfg.Names.ConsumerVerify, s.Name)
		}
	}
	if d := rep.DeadLetters; d.Total > 0 {
		var parts []string
		for _, r := range slices.Sorted(maps.Keys(d.ByReason)) {
			parts = append(parts, fmt.Sprintf("%s %d", r, d.ByReason[r]))
		}
		attn.add(3, "%d dead letters (%s), last at %s: bridge deadletter list", d.Total, strings.Join(parts, ", "), d.LastTime.Format(time.RFC3339))
	}
	leaders, withReconcile := 0, 0
	for _, b := range rep.Bridges {
		switch {
		case b.Error != "":
			attn.add(2, "bridge %s: %s", b.URL, b.Error)
			continue
		case b.Ready != nil && !*b.Ready:
			attn.add(1, "bridge %s is not ready: NATS or JetStream unusable, or shutting down", b.URL)
		}
		if b.RateLimitedRecent != nil && *b.RateLimitedRecent > 0 {
			attn.add(2, "bridge %s: %.0f upstream 429s in the last %.0fs", b.URL, *b.RateLimitedRecent, b.SampleSeconds)
		}
		// The budget allows bursts (BRIDGE_API_BURST, 5 s worth by default), so only a sample long enough
		// to average them out says the budget is saturated.
		if b.BudgetUse != nil && *b.BudgetUse >= 0.9 && b.SampleSeconds >= minBudgetSample.Seconds() {
			attn.add(3, "bridge %s: upstream budget %.0f%% used (%.1f of %d calls/min over %.0fs)", b.URL, *b.BudgetUse*100, *b.CallsPerMinute, b.BudgetRPM, b.SampleSeconds)
		}
		if b.ReconcileLeader != nil {
			withReconcile++
			if *b.ReconcileLeader {
				leaders++
			}
		}
	}
	if withReconcile > 0 && leaders == 0 && len(rep.Bridges) == withReconcile {
		attn.add(2, "no scraped bridge holds the reconcile lease (it may run in a process not scraped)")
	}
}

// attention collects findings with a priority (1 most urgent).
type attention struct {
	items []attnItem
}

type attnItem struct {
	prio int
	msg  string
}

func (a *attention) add(prio int, format string, args ...any) {
	a.items = append(a.items, attnItem{prio, fmt.Sprintf(format, args...)})
}

func (a *attention) list() []string {
	slices.SortStableFunc(a.items, func(x, y attnItem) int { return cmp.Compare(x.prio, y.prio) })
	out := make([]string, 0, len(a.items))
	for _, it := range a.items {
		out = append(out, it.msg)
	}
	return out
}

// resultCount counts the messages of RESULTS on results.>: one per result subject in the stream's
// per-subject state (results.<type> and results.late.<type>, a handful), so it costs one request.
func resultCount(ctx context.Context, s jetstream.Stream, names contract.Names, attn *attention) *uint64 {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.SubjectResults+">"))
	if err != nil {
		attn.add(3, "stream %s: count results: %v", names.StreamResults, err)
		return nil
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return &n
}

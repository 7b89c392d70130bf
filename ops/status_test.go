package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
)

// knownState fills JOBS, WEBHOOKS (with an idle verify consumer) and DEADLETTER with a known picture
// at now, and returns the pending job ids: old prompt (near deadline), young prompt, overdue image.
func knownState(t *testing.T, w *world, now time.Time) (nearPrompt, youngPrompt, overdueImage string) {
	t.Helper()
	ctx := natstest.CtxWithin(t, 10*time.Second)
	rec := func(modality string, state jobs.State, age, deadlineIn time.Duration) string {
		id := uuid.NewString()
		r := jobs.Record{JobID: id, Modality: modality, State: state, Origin: jobs.OriginSubmit,
			SubmittedAt: now.Add(-age), Deadline: now.Add(deadlineIn), Attempts: 2, LastStatus: "processing"}
		if _, err := w.store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		return id
	}
	nearPrompt = rec("prompt", jobs.StatePending, 270*time.Second, 30*time.Second)
	youngPrompt = rec("prompt", jobs.StatePending, 60*time.Second, 240*time.Second)
	overdueImage = rec("image", jobs.StatePending, 360*time.Second, -60*time.Second)
	for range 3 {
		rec("video", jobs.StateDelivered, time.Hour, -time.Hour)
	}
	rec("chat", jobs.StateTimedOut, time.Hour, -time.Hour)

	if _, err := w.js.CreateOrUpdateConsumer(ctx, contract.Default.StreamWebhooks, jetstream.ConsumerConfig{
		Durable: contract.Default.ConsumerVerify, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: contract.Default.SubjectWebhooks + ">",
	}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		w.webhook("prompt", uuid.NewString())
	}
	for i, reason := range []string{"not_found", "not_found", "attempts_exhausted"} {
		id := uuid.NewString()
		w.publish(contract.Default.DeadLetterSubject(reason), fmt.Sprintf("%s.%d", id, i), fmt.Sprintf(`{"job_id":%q}`, id),
			contract.HeaderReason, reason, contract.HeaderAttempts, "1")
	}
	// RESULTS: three results, each with the fence the deliverer writes beside it (not results).
	for _, subject := range []string{"results.prompt", "results.prompt", "results.late.image"} {
		id := uuid.NewString()
		w.publish("bridge.result."+id, "", "")
		w.publish(subject, id, fmt.Sprintf(`{"job_id":%q}`, id))
	}
	return nearPrompt, youngPrompt, overdueImage
}

// fakeBridge serves /metrics with known counters, incremented by one 429 per scrape, and /readyz.
func fakeBridge(t *testing.T, ready bool) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_upstream_calls_total"}, []string{"endpoint", "outcome"})
	limited := prometheus.NewCounter(prometheus.CounterOpts{Name: "bridge_upstream_rate_limited_total"})
	leader := prometheus.NewGauge(prometheus.GaugeOpts{Name: "bridge_reconcile_is_leader"})
	dl := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_deadletter_total"}, []string{"reason"})
	reg.MustRegister(calls, limited, leader, dl)
	calls.WithLabelValues("job", "ok").Add(10)
	calls.WithLabelValues("submit", "ok").Add(5)
	calls.WithLabelValues("job", "RATE_LIMITED").Add(2)
	limited.Add(2)
	leader.Set(1)
	dl.WithLabelValues("not_found").Add(2)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			metrics.ServeHTTP(rw, r)
			limited.Inc()
		case "/readyz":
			if !ready {
				rw.WriteHeader(http.StatusServiceUnavailable)
			}
		default:
			http.NotFound(rw, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

func TestStatusReportsKnownState(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	nearPrompt, _, overdueImage := knownState(t, w, now)
	bridgeURL := fakeBridge(t, true)

	rep, err := Status(natstest.CtxWithin(t, 20*time.Second), StatusConfig{JS: w.js, Now: func() time.Time { return now },
		MetricsURLs: []string{bridgeURL, "http://127.0.0.1:1/metrics"}, Sample: 10 * time.Millisecond, RPM: 60})
	if err != nil {
		t.Fatal(err)
	}
	j := rep.Jobs
	if j.Records != 7 || j.Scanned != 7 || j.Truncated {
		t.Errorf("jobs scanned %d of %d (truncated %v)", j.Scanned, j.Records, j.Truncated)
	}
	if fmt.Sprint(j.ByState) != "map[delivered:3 pending:3 timed_out:1]" {
		t.Errorf("by state %v", j.ByState)
	}
	if len(j.Pending) != 2 || j.Pending[0] != (ModalityPending{Modality: "image", Count: 1, OldestAge: 360, OldestJobID: overdueImage}) ||
		j.Pending[1] != (ModalityPending{Modality: "prompt", Count: 2, OldestAge: 270, OldestJobID: nearPrompt}) {
		t.Errorf("pending %+v", j.Pending)
	}
	if j.OldestPending != 360 || j.NearDeadline != 2 || j.Overdue != 1 {
		t.Errorf("oldest %v, near %d, overdue %d", j.OldestPending, j.NearDeadline, j.Overdue)
	}
	if len(j.NearJobs) != 2 || j.NearJobs[0].JobID != overdueImage || j.NearJobs[0].DeadlineIn != -60 || j.NearJobs[1].JobID != nearPrompt {
		t.Errorf("near jobs %+v", j.NearJobs)
	}

	if d := rep.DeadLetters; d.Total != 3 || d.ByReason["not_found"] != 2 || d.ByReason["attempts_exhausted"] != 1 {
		t.Errorf("dead letters %+v", d)
	}
	var webhooks, results StreamStatus
	for _, s := range rep.Streams {
		switch s.Name {
		case contract.Default.StreamWebhooks:
			webhooks = s
		case contract.Default.StreamResults:
			results = s
		}
		if s.Problem != "" || !s.Healthy {
			t.Errorf("stream %s: %s", s.Name, s.Problem)
		}
	}
	if webhooks.Messages != 5 || len(webhooks.Consumers) != 1 || webhooks.Consumers[0].Pending != 5 {
		t.Errorf("WEBHOOKS %+v", webhooks)
	}
	if results.Messages != 6 || results.Results == nil || *results.Results != 3 {
		t.Errorf("RESULTS: %d messages, results %v; want 6 messages, 3 of them results", results.Messages, results.Results)
	}
	if webhooks.Results != nil {
		t.Errorf("WEBHOOKS reports results %v", *webhooks.Results)
	}
	if rep.NATS.ServerName == "" || rep.NATS.Account.Streams < 5 {
		t.Errorf("nats %+v", rep.NATS)
	}

	if len(rep.Bridges) != 2 {
		t.Fatalf("bridges %+v", rep.Bridges)
	}
	b := rep.Bridges[0]
	if b.Error != "" || b.Ready == nil || !*b.Ready || b.ReconcileLeader == nil || !*b.ReconcileLeader ||
		b.UpstreamCalls["job"] != 12 || b.UpstreamCalls["submit"] != 5 || b.RateLimited != 3 ||
		b.RateLimitedRecent == nil || *b.RateLimitedRecent != 1 || b.DeadLetters["not_found"] != 2 || b.BudgetUse == nil {
		t.Errorf("bridge %+v", b)
	}
	if rep.Bridges[1].Error == "" {
		t.Errorf("unreachable bridge without error: %+v", rep.Bridges[1])
	}

	attn := strings.Join(rep.Attention, "\n")
	for _, want := range []string{"1 pending jobs are past their deadline", "1 pending jobs are within 1m0s", "3 dead letters",
		"upstream 429s", "127.0.0.1:1"} {
		if !strings.Contains(attn, want) {
			t.Errorf("attention lacks %q:\n%s", want, attn)
		}
	}
	if !strings.HasPrefix(rep.Attention[0], "1 pending jobs are past their deadline") {
		t.Errorf("most urgent first, got %q", rep.Attention[0])
	}
}

func TestStatusOnEmptyServer(t *testing.T) {
	w := newWorld(t)
	for _, b := range []string{contract.Default.StreamWebhooks, contract.Default.StreamDeadLetter} {
		_ = w.js.DeleteStream(context.Background(), b)
	}
	rep, err := Status(natstest.CtxWithin(t, 10*time.Second), StatusConfig{JS: w.js})
	if err != nil {
		t.Fatal(err)
	}
	attn := strings.Join(rep.Attention, "\n")
	if !strings.Contains(attn, "stream WEBHOOKS missing") || !strings.Contains(attn, "dead letters unreadable") {
		t.Errorf("attention %s", attn)
	}
	if rep.Jobs.Scanned != 0 || len(rep.Jobs.Pending) != 0 {
		t.Errorf("jobs %+v", rep.Jobs)
	}
}

// TestStatusTakesTheLimitFromTheBudgetBucket: without a configured RPM, budget use is measured against
// the limit the processes write into BRIDGE_BUDGET, not the default 60.
func TestStatusTakesTheLimitFromTheBudgetBucket(t *testing.T) {
	w := newWorld(t)
	ctx := natstest.CtxWithin(t, 20*time.Second)
	st, _ := json.Marshal(budget.State{Level: 10, At: time.Now().UnixNano(), RPM: 600})
	if _, err := w.res.Budget.Put(ctx, budget.KeyAccount, st); err != nil {
		t.Fatal(err)
	}
	rep, err := Status(ctx, StatusConfig{JS: w.js, MetricsURLs: []string{fakeBridge(t, true)}, Sample: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := rep.Bridges[0]
	if rep.Budget == nil || rep.Budget.RPM != 600 || b.BudgetRPM != 600 || b.BudgetUse == nil || *b.BudgetUse != *b.CallsPerMinute/600 {
		t.Fatalf("budget %+v, bridge %+v: want use against 600/min", rep.Budget, b)
	}
	// A configured RPM wins.
	rep, err = Status(ctx, StatusConfig{JS: w.js, MetricsURLs: []string{fakeBridge(t, true)}, Sample: 10 * time.Millisecond, RPM: 60})
	if err != nil || rep.Bridges[0].BudgetRPM != 60 {
		t.Fatalf("with RPM 60: %v %+v", err, rep.Bridges)
	}
}

// TestStatusShowsTheSlowLaneApart: webhooks waiting in the verifier's slow lane are counted as such, with
// SLOWLANE among the streams, and are no dead letters.
func TestStatusShowsTheSlowLaneApart(t *testing.T) {
	w := newWorld(t)
	for i := range 2 {
		id := uuid.NewString()
		w.publish("slowlane.unknown_job", fmt.Sprintf("%s.unknown_job.WEBHOOKS.%d", id, i+1), fmt.Sprintf(`{"job_id":%q}`, id))
	}
	w.publish("deadletter.not_found", "", `{}`, contract.HeaderReason, "not_found")
	rep, err := Status(natstest.CtxWithin(t, 10*time.Second), StatusConfig{JS: w.js})
	if err != nil {
		t.Fatal(err)
	}
	if rep.SlowLane != 2 || rep.DeadLetters.Total != 1 || rep.DeadLetters.ByReason["unknown_job"] != 0 {
		t.Fatalf("slow lane %d, dead letters %+v: want 2 waiting and the one not_found dead letter", rep.SlowLane, rep.DeadLetters)
	}
	var lane *StreamStatus
	for i := range rep.Streams {
		if rep.Streams[i].Name == "SLOWLANE" {
			lane = &rep.Streams[i]
		}
	}
	if lane == nil || lane.Messages != 2 || !lane.Healthy {
		t.Fatalf("SLOWLANE stream status %+v in %+v", lane, rep.Streams)
	}
}

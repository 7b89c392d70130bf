package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// opsWorld is a provisioned nats-server and the env an operator command would see.
type opsWorld struct {
	js  jetstream.JetStream
	res natsx.Resources
	env map[string]string
}

func newOpsWorld(t *testing.T) *opsWorld {
	t.Helper()
	w := testworld.New(t)
	return &opsWorld{js: w.JS, res: w.Res, env: map[string]string{"BRIDGE_NATS_URL": w.URLs}}
}

func (w *opsWorld) publish(t *testing.T, subject, msgID, data string, hdr ...string) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := w.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// runCmd runs a bridge sub-command and returns its stdout, stderr and error.
func runCmd(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, env, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestOpsCommandsRejectBadUsage(t *testing.T) {
	env := map[string]string{"BRIDGE_NATS_URL": "nats://127.0.0.1:1"}
	tests := []struct {
		name string
		args []string
	}{
		{"replay unknown flag", []string{"replay", "-bogus"}},
		{"replay reverify results", []string{"replay", "-reverify"}},
		{"replay stray argument", []string{"replay", "now"}},
		{"deadletter no sub-command", []string{"deadletter"}},
		{"deadletter unknown sub-command", []string{"deadletter", "purge"}},
		{"deadletter show without seq", []string{"deadletter", "show"}},
		{"deadletter show bad seq", []string{"deadletter", "show", "x"}},
		{"redrive without selection", []string{"deadletter", "redrive"}},
		{"status stray argument", []string{"status", "now"}},
		{"submit nothing", []string{"submit"}},
		{"submit unknown modality value", []string{"submit", "sound", "hello"}}, // text and audio are v2 modalities
		{"job not a uuid", []string{"job", "42"}},
		{"bad env", []string{"status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env
			if tt.name == "bad env" {
				e = map[string]string{"BRIDGE_REPLICAS": "9"}
			}
			_, _, err := runCmd(t, e, tt.args...)
			if exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want exit 2", err, exitCode(err))
			}
		})
	}
	// NATS down: an error, not a hang and not a usage error.
	if _, _, err := runCmd(t, env, "status", "-metrics-url", "none"); err == nil || exitCode(err) != 1 {
		t.Fatalf("status without NATS: %v", err)
	}
}

func TestReplayCommandResumesAndCounts(t *testing.T) {
	w := newOpsWorld(t)
	if _, err := w.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "REPLAYED", Subjects: []string{"replay.>"}}); err != nil {
		t.Fatal(err)
	}
	var prompts []uint64
	for i := range 10 {
		typ := []string{"prompt", "image"}[i%2]
		seq := w.publish(t, contract.Default.ResultSubject(typ), uuid.NewString(), fmt.Sprintf(`{"n":%d}`, i))
		if typ == "prompt" {
			prompts = append(prompts, seq)
		}
	}
	args := []string{"replay", "-subject", "results.prompt", "-max", "2"}
	out, errOut, err := runCmd(t, w.env, args...)
	if err != nil || !strings.Contains(out, "published 2 of 2 scanned") || !strings.Contains(out, "to resume") {
		t.Fatalf("first run: %v\n%s\n%s", err, out, errOut)
	}
	out, _, err = runCmd(t, w.env, append(args[:3:3], "-json")...)
	var res ops.ReplayResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || !res.Resumed || res.Published != 3 || !res.Done || res.TotalPublished != 5 {
		t.Fatalf("second run (other -max, same replay): %v %+v\n%s", err, res, out)
	}
	if _, _, err := runCmd(t, w.env, args[:3]...); !errors.Is(err, ops.ErrReplayDone) && !strings.Contains(fmt.Sprint(err), "already complete") {
		t.Fatalf("third run: %v", err)
	}
	s, _ := w.js.Stream(context.Background(), "REPLAYED")
	info, _ := s.Info(context.Background())
	if info.State.Msgs != uint64(len(prompts)) {
		t.Fatalf("REPLAYED has %d messages, want %d", info.State.Msgs, len(prompts))
	}
	out, _, err = runCmd(t, w.env, "replay", "-stream", "results", "-dry-run", "-since", "1h")
	if err != nil || !strings.Contains(out, "would publish 10 of 10") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, w.env, "replay", "-prefix", "results.x."); exitCode(err) != 2 {
		t.Fatalf("prefix into RESULTS: %v, want a usage error", err)
	}
}

func TestDeadletterCommands(t *testing.T) {
	w := newOpsWorld(t)
	id := uuid.NewString()
	seq := w.publish(t, contract.Default.DeadLetterSubject("not_found"), id+".not_found", fmt.Sprintf(`{"job_id":%q,"status":"completed"}`, id),
		contract.HeaderReason, "not_found", contract.HeaderAttempts, "1", contract.HeaderOriginalSubject, "webhooks.prompt")
	w.publish(t, contract.Default.DeadLetterSubject("malformed"), "WEBHOOKS.9.malformed", `{"job_id":"x"}`,
		contract.HeaderReason, "malformed", contract.HeaderAttempts, "1")

	out, _, err := runCmd(t, w.env, "deadletter", "list")
	if err != nil || !strings.Contains(out, "2 dead letters: malformed 1, not_found 1") || !strings.Contains(out, id) {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, w.env, "deadletter", "list", "-reason", "not_found", "-json")
	var listed struct {
		DeadLetters []ops.DeadLetter `json:"dead_letters"`
	}
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed.DeadLetters) != 1 || listed.DeadLetters[0].Seq != seq {
		t.Fatalf("list -json: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, w.env, "deadletter", "show", fmt.Sprint(seq))
	if err != nil || !strings.Contains(out, "Bridge-Reason: not_found") || !strings.Contains(out, `"status": "completed"`) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, w.env, "deadletter", "show", "99"); err == nil || !errors.Is(err, ops.ErrNotFound) {
		t.Fatalf("show 99: %v", err)
	}
	out, _, err = runCmd(t, w.env, "deadletter", "redrive", "-all", "-dry-run")
	if err != nil || !strings.Contains(out, "1 skipped, 1 would be redriven") {
		t.Fatalf("redrive dry run: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, w.env, "deadletter", "redrive", fmt.Sprint(seq))
	if err != nil || !strings.Contains(out, "1 redriven") {
		t.Fatalf("redrive: %v\n%s", err, out)
	}
	m, err := w.res.Webhooks.GetLastMsgForSubject(context.Background(), "webhooks.prompt")
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != fmt.Sprintf("%s.redrive.%d", id, seq) {
		t.Fatalf("redriven webhook: %v %v", err, m)
	}
}

// TestStatusJSONReportsKnownState sets up JOBS, WEBHOOKS and DEADLETTER and checks the numbers of
// bridge status --json.
func TestStatusJSONReportsKnownState(t *testing.T) {
	w := newOpsWorld(t)
	store := jobs.NewStore(w.res.Jobs)
	now := time.Now().UTC()
	ctx := context.Background()
	for i, r := range []struct {
		modality string
		state    jobs.State
		age, due time.Duration
	}{
		{"prompt", jobs.StatePending, 4 * time.Minute, 30 * time.Second},
		{"prompt", jobs.StatePending, time.Minute, 4 * time.Minute},
		{"video", jobs.StatePending, 20 * time.Minute, -5 * time.Minute},
		{"image", jobs.StateDelivered, time.Hour, -time.Hour},
		{"image", jobs.StateTimedOut, time.Hour, -time.Hour},
	} {
		rec := jobs.Record{JobID: uuid.NewString(), Modality: r.modality, State: r.state, SubmittedAt: now.Add(-r.age), Deadline: now.Add(r.due)}
		if _, err := store.Create(ctx, rec); err != nil {
			t.Fatal(i, err)
		}
	}
	for _, reason := range []string{"not_found", "unknown_job", "unknown_job"} {
		w.publish(t, contract.Default.DeadLetterSubject(reason), uuid.NewString(), `{}`, contract.HeaderReason, reason)
	}
	hist, err := history.New(history.Config{KV: w.res.History})
	if err != nil {
		t.Fatal(err)
	}
	if err := hist.Add(ctx, []history.Entry{{JobID: uuid.NewString()}, {JobID: uuid.NewString()}}); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runCmd(t, w.env, "status", "-json", "-metrics-url", "none", "-near", "2m")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, errOut)
	}
	var rep ops.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	j := rep.Jobs
	if j.Records != 5 || j.ByState["pending"] != 3 || j.ByState["delivered"] != 1 || j.ByState["timed_out"] != 1 ||
		j.NearDeadline != 2 || j.Overdue != 1 || j.OldestPending < 1200 || j.OldestPending > 1260 || len(j.Pending) != 2 ||
		j.Pending[0].Modality != "prompt" || j.Pending[0].Count != 2 || j.Pending[1].Modality != "video" {
		t.Errorf("jobs %+v", j)
	}
	if j.Layout != 2 || j.History == nil || j.History.Blocks != 1 || j.History.Bytes < 1+2*32 {
		t.Errorf("jobs layout %d, history %+v; want layout 2 and one block of two 32-byte entries", j.Layout, j.History)
	}
	if rep.DeadLetters.Total != 3 || rep.DeadLetters.ByReason["unknown_job"] != 2 {
		t.Errorf("dead letters %+v", rep.DeadLetters)
	}
	if len(rep.Streams) < 5 || len(rep.Bridges) != 0 || len(rep.Attention) == 0 {
		t.Errorf("report %s", out)
	}
	// A NATS-only configuration: a bad variable the command does not use is ignored, and -s (the nats
	// CLI's flag) beats BRIDGE_NATS_URL.
	badEnv := map[string]string{"BRIDGE_TIMEOUT_VIDEO": "soon", "BRIDGE_API_URL": "ftp://x", "BRIDGE_NATS_URL": "nats://127.0.0.1:1"}
	if out, errOut, err := runCmd(t, badEnv, "status", "-json", "-metrics-url", "none", "-s", w.env["BRIDGE_NATS_URL"]); err != nil ||
		!strings.Contains(out, `"records": 5`) {
		t.Fatalf("status -s with unrelated bad variables: %v\n%s%s", err, out, errOut)
	}
	out, _, err = runCmd(t, w.env, "status", "-metrics-url", "none")
	if err != nil || !strings.Contains(out, "ATTENTION") || !strings.Contains(out, "1 pending jobs are past their deadline") ||
		!strings.Contains(out, "DEAD LETTERS  3: not_found 1, unknown_job 2") || !strings.Contains(out, "SLOW LANE  0 webhooks") ||
		!strings.Contains(out, "HISTORY  1 blocks") {
		t.Errorf("status: %v\n%s", err, out)
	}
}

// TestSubmitAndJobClients submits through a running bridge with bridge submit and reads the job back
// with bridge job (as the downstream user); bridge status (as the ops user) scrapes that bridge's metrics
// and readiness.
func TestSubmitAndJobClients(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{GrantChat: true})
	dir := t.TempDir()
	cfg, err := parseConfig(map[string]string{
		"BRIDGE_DATA_DIR": dir, "BRIDGE_NATS_LISTEN": "127.0.0.1:0", "BRIDGE_HTTP_ADDR": "127.0.0.1:0",
		"BRIDGE_API_URL": sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey, "BRIDGE_API_RPM": "6000",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := bridge.New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), bridge.WithPublicURLFromListener(), bridge.WithReconcileInstance("t"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := natstest.RecvWithin(t, done, 30*time.Second); err != nil {
			t.Errorf("app: %v", err)
		}
	})
	env := map[string]string{"BRIDGE_NATS_URL": a.Server().ClientURL()}
	natstest.WaitFor(t, 10*time.Second, func() error {
		_, _, err := runCmd(t, env, "job", uuid.NewString())
		var se *ops.ServiceError
		if errors.As(err, &se) && se.Code == "404" {
			return nil
		}
		return fmt.Errorf("jobs.status not answering 404 yet: %v", err)
	})

	out, errOut, err := runCmd(t, env, "submit", "prompt", "is this fine?", "-wait", "-timeout", "30s")
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, errOut)
	}
	var st struct {
		Job    jobs.Record     `json:"job"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Job.State != jobs.StateDelivered || len(st.Result) == 0 {
		t.Fatalf("submit -wait: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, env, "job", st.Job.JobID)
	if err != nil || !strings.Contains(out, `"state": "delivered"`) {
		t.Fatalf("job: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, env, "submit", "image", "-field", "prompt=not an image"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad submit: %v", err)
	}

	// bridge status needs the ops user: on the bridge's machine, the embedded server's, found from the
	// bridge's own variables (as a downstream user, the command is refused).
	opsEnv := map[string]string{"BRIDGE_DATA_DIR": dir, "BRIDGE_NATS_LISTEN": strings.TrimPrefix(a.Server().ClientURL(), "nats://")}
	out, _, err = runCmd(t, opsEnv, "status", "-json", "-sample", "0", "-metrics-url", "http://"+a.Addr().String()+"/metrics")
	var rep ops.Report
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Bridges) != 1 {
		t.Fatalf("status: %v\n%s", err, out)
	}
	b := rep.Bridges[0]
	if b.Error != "" || b.Ready == nil || !*b.Ready || b.UpstreamCalls["POST /moderate/prompt"] < 1 || b.ReconcileLeader == nil {
		t.Errorf("bridge %+v", b)
	}
}

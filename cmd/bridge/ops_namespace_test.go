package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// nsSide is one of the two bridges of TestOpsCommandsTakeTheNamespace: what it holds, and the flags that
// name it to an operator command.
type nsSide struct {
	names      contract.Names
	flags      []string
	jobs, dead []string
	ownStream  string // a stream of its own, which bridge status must list
}

// TestOpsCommandsTakeTheNamespace runs two bridges (`bridge run` through run) on one NATS server: one without
// a namespace, with 2 jobs and 2 dead letters, and one in "staging", with 1 of each. `bridge job`,
// `bridge deadletter list`, `bridge status` and `bridge replay`, given -namespace staging, read staging's
// streams and buckets and nothing of the unnamespaced bridge's; without it they read the unnamespaced ones.
func TestOpsCommandsTakeTheNamespace(t *testing.T) {
	srv := natstest.RunServer(t)
	sim := simtest.Run(t, simulator.Config{Log: zerolog.Nop()})
	staging, err := contract.NamesFor("staging")
	if err != nil {
		t.Fatal(err)
	}
	sides := []*nsSide{{names: contract.Default, ownStream: "WEBHOOKS"},
		{names: staging, flags: []string{"-namespace", "staging"}, ownStream: "STAGING_WEBHOOKS"}}
	nc, js := natstest.Connect(t, srv.ClientURL())
	for i, s := range sides {
		httpAddr := freeAddr(t)
		startRun(t, map[string]string{
			"BRIDGE_NATS_URL": srv.ClientURL(), "BRIDGE_HTTP_ADDR": httpAddr, "BRIDGE_PUBLIC_URL": "http://" + httpAddr,
			"BRIDGE_API_URL": sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey, "BRIDGE_API_RPM": "6000",
			"BRIDGE_NAMESPACE": s.names.Namespace, "BRIDGE_DATA_DIR": t.TempDir(), "BRIDGE_LOG_LEVEL": "warn",
		})
		waitReady(t, http.DefaultClient, "http://"+httpAddr)
		for range 2 - i {
			s.jobs = append(s.jobs, submitOver(t, nc, s.names))
			s.dead = append(s.dead, deadLetter(t, js, s.names))
		}
	}
	env := map[string]string{"BRIDGE_NATS_URL": srv.ClientURL()}
	for i, s := range sides {
		other := sides[1-i]
		checkJobCommand(t, env, s, other)
		checkDeadletterList(t, env, s, other)
		checkStatus(t, env, s, other)
		checkReplay(t, env, nc, s, other)
	}
}

// submitOver submits a prompt over names' moderate.prompt and returns the job's id.
func submitOver(t *testing.T, nc *nats.Conn, names contract.Names) string {
	t.Helper()
	msg, err := nc.Request(names.SubjectSubmit+"prompt", []byte(`{"prompt":"namespaced ops"}`), 20*time.Second)
	var rep struct {
		JobID string `json:"job_id"`
	}
	if err != nil || json.Unmarshal(msg.Data, &rep) != nil || rep.JobID == "" {
		t.Fatalf("%sprompt: %v %v", names.SubjectSubmit, err, msg)
	}
	return rep.JobID
}

// deadLetter stores a not_found dead letter of a new job id in names' DEADLETTER and returns the id.
func deadLetter(t *testing.T, js jetstream.JetStream, names contract.Names) string {
	t.Helper()
	id := uuid.NewString()
	m := nats.NewMsg(names.DeadLetterSubject("not_found"))
	m.Data = fmt.Appendf(nil, `{"job_id":%q,"status":"completed"}`, id)
	m.Header.Set(jetstream.MsgIDHeader, id+".not_found")
	m.Header.Set(contract.HeaderReason, "not_found")
	m.Header.Set(contract.HeaderAttempts, "1")
	m.Header.Set(contract.HeaderOriginalSubject, names.WebhookSubject("prompt"))
	if _, err := js.PublishMsg(natstest.Ctx(t), m); err != nil {
		t.Fatal(err)
	}
	return id
}

// checkJobCommand: bridge job -wait finds each of s's jobs with its result, and none of other's.
func checkJobCommand(t *testing.T, env map[string]string, s, other *nsSide) {
	t.Helper()
	for _, id := range s.jobs {
		out, errOut, err := runCmd(t, env, append(append([]string{"job"}, s.flags...), "-wait", id)...)
		if err != nil || !strings.Contains(out, `"result"`) || !strings.Contains(out, id) {
			t.Errorf("bridge job %v -wait %s: %v\n%s%s", s.flags, id, err, out, errOut)
		}
	}
	for _, id := range other.jobs {
		if out, _, err := runCmd(t, env, append(append([]string{"job"}, s.flags...), id)...); err == nil {
			t.Errorf("bridge job %v %s found the other namespace's job:\n%s", s.flags, id, out)
		}
	}
}

// checkDeadletterList: bridge deadletter list lists s's dead letters and only those.
func checkDeadletterList(t *testing.T, env map[string]string, s, other *nsSide) {
	t.Helper()
	out, _, err := runCmd(t, env, append(append([]string{"deadletter", "list"}, s.flags...), "-json")...)
	var listed struct {
		DeadLetters []ops.DeadLetter `json:"dead_letters"`
	}
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
		t.Fatalf("bridge deadletter list %v: %v\n%s", s.flags, err, out)
	}
	var ids []string
	for _, d := range listed.DeadLetters {
		ids = append(ids, d.JobID)
	}
	slices.Sort(ids)
	if want := slices.Sorted(slices.Values(s.dead)); !slices.Equal(ids, want) {
		t.Errorf("bridge deadletter list %v: jobs %v, want %v (not the other's %v)", s.flags, ids, want, other.dead)
	}
}

// checkStatus: bridge status counts s's jobs and dead letters and lists its streams, not other's.
func checkStatus(t *testing.T, env map[string]string, s, other *nsSide) {
	t.Helper()
	out, _, err := runCmd(t, env, append(append([]string{"status"}, s.flags...), "-json", "-metrics-url", "none", "-sample", "0")...)
	var rep ops.Report
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("bridge status %v: %v\n%s", s.flags, err, out)
	}
	var streams []string
	for _, st := range rep.Streams {
		streams = append(streams, st.Name)
	}
	if rep.Jobs.Records != uint64(len(s.jobs)) || rep.DeadLetters.Total != uint64(len(s.dead)) ||
		!slices.Contains(streams, s.ownStream) || slices.Contains(streams, other.ownStream) {
		t.Errorf("bridge status %v: %d jobs, %d dead letters, streams %v; want %d, %d, %s and not %s", s.flags,
			rep.Jobs.Records, rep.DeadLetters.Total, streams, len(s.jobs), len(s.dead), s.ownStream, other.ownStream)
	}
}

// checkReplay: bridge replay republishes s's results under s's replay prefix, and nothing of other's.
func checkReplay(t *testing.T, env map[string]string, nc *nats.Conn, s, other *nsSide) {
	t.Helper()
	var mu sync.Mutex
	got := map[string][]string{}
	for _, n := range []contract.Names{s.names, other.names} {
		sub, err := nc.Subscribe(n.SubjectReplayPrefix+">", func(m *nats.Msg) {
			mu.Lock()
			got[n.SubjectReplayPrefix] = append(got[n.SubjectReplayPrefix], m.Subject+" "+string(m.Data))
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe() //nolint:errcheck
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, env, append(append([]string{"replay"}, s.flags...), "-subject", s.names.SubjectResults+">", "-json")...)
	var res ops.ReplayResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.Published != len(s.jobs) {
		t.Fatalf("bridge replay %v: %v %+v, want %d published\n%s", s.flags, err, res, len(s.jobs), out)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(got[s.names.SubjectReplayPrefix]); n != len(s.jobs) {
			return fmt.Errorf("%d replayed on %s>, want %d", n, s.names.SubjectReplayPrefix, len(s.jobs))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, id := range s.jobs {
		if !strings.Contains(strings.Join(got[s.names.SubjectReplayPrefix], "\n"), id) {
			t.Errorf("bridge replay %v: job %s not replayed on %s>", s.flags, id, s.names.SubjectReplayPrefix)
		}
	}
	if n := len(got[other.names.SubjectReplayPrefix]); n != 0 {
		t.Errorf("bridge replay %v: %d published on the other namespace's %s>", s.flags, n, other.names.SubjectReplayPrefix)
	}
}

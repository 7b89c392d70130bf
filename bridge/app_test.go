package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testlog"
	"github.com/evershield/bridge/upstream/simulator"
)

// testConfig is a whole Config, as parsing an empty environment would give it, for an App on an external
// nats-server (natstest) and the simulator, every role, listening on loopback ports.
func testConfig(tb testing.TB) Config {
	tb.Helper()
	srv := natstest.RunServer(tb)
	sim := simtest.Run(tb, simulator.Config{})
	return Config{
		NATSURL: srv.ClientURL(), HTTPAddr: "127.0.0.1:0", APIURL: sim.URL(), APIKey: simulator.DefaultKey,
		APIRPM: 6000, TimeoutPrompt: 5 * time.Minute, TimeoutImage: 5 * time.Minute, TimeoutVideo: 15 * time.Minute,
		TimeoutChat: 5 * time.Minute, PollInterval: 30 * time.Second, WebhookGrace: 10 * time.Second,
		MaxBody: 64 << 10, DuplicateWindow: 20 * time.Minute, Retention: time.Hour, Replicas: 1,
		Roles: allRoles[:], LogLevel: "info", LogFormat: "json",
	}
}

// startApp builds and runs an App until the test ends.
func startApp(tb testing.TB, cfg Config, log zerolog.Logger, opts ...Option) *App {
	tb.Helper()
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, log, append([]Option{WithReconcileInstance("t")}, opts...)...)
	if err != nil {
		cancel()
		tb.Fatalf("new app: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := natstest.RecvWithin(tb, done, 30*time.Second); err != nil {
			tb.Errorf("app: %v", err)
		}
	})
	return a
}

// TestVersionInLogMetricAndService checks that the build's version reaches the start-up log line,
// bridge_build_info and the micro service's version.
func TestVersionInLogMetricAndService(t *testing.T) {
	logs := &testlog.Buffer{}
	a := startApp(t, testConfig(t), zerolog.New(logs), WithVersion("v1.4.2-3-gabcdef1"))

	if !strings.Contains(logs.String(), `"version":"v1.4.2-3-gabcdef1","go_version":"`+runtime.Version()+`"`) ||
		!strings.Contains(logs.String(), `"message":"bridge starting"`) {
		t.Errorf("start-up log lacks the version:\n%s", logs)
	}
	mfs, err := a.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var labels map[string]string
	for _, mf := range mfs {
		if mf.GetName() == "bridge_build_info" {
			labels = map[string]string{}
			for _, l := range mf.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 1 {
				t.Errorf("bridge_build_info = %v, want 1", v)
			}
		}
	}
	if labels["version"] != "v1.4.2-3-gabcdef1" || labels["go_version"] != runtime.Version() {
		t.Errorf("bridge_build_info labels %v", labels)
	}

	nc, _ := natstest.Connect(t, a.cfg.NATSURL)
	var info micro.Info
	natstest.WaitFor(t, 10*time.Second, func() error {
		m, err := nc.Request("$SRV.INFO."+contract.Default.ServiceName, nil, time.Second)
		if err != nil {
			return err
		}
		return json.Unmarshal(m.Data, &info)
	})
	if info.Version != "1.4.2-3-gabcdef1" {
		t.Errorf("micro service version %q, want 1.4.2-3-gabcdef1", info.Version)
	}
}

func TestServiceVersionIsSemver(t *testing.T) {
	tests := []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3-rc.1", "1.2.3-rc.1"},
		{"v0.4.0-12-g1a2b3c4-dirty", "0.4.0-12-g1a2b3c4-dirty"},
		{"1a2b3c4-dirty", "0.0.0+1a2b3c4-dirty"},
		{"(devel) 0123456789ab", "0.0.0+devel.0123456789ab"},
		{"", "0.0.0"},
	}
	for _, tt := range tests {
		if got := serviceVersion(tt.in); got != tt.want {
			t.Errorf("serviceVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestAdminAddrSeparatesHealthAndMetrics runs a bridge with BRIDGE_ADMIN_ADDR: the webhook listener
// serves webhooks only, the admin listener health and metrics only. /metrics shows the consumer lag and
// the dead-letter and error counters at zero before any event.
func TestAdminAddrSeparatesHealthAndMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.AdminAddr = "127.0.0.1:0"
	a := startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	web, admin := "http://"+a.Addr().String(), "http://"+a.AdminAddr().String()
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if code, _ := get(admin + "/readyz"); code != http.StatusOK {
			return fmt.Errorf("admin /readyz %d", code)
		}
		return nil
	})
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, _ := get(web + p); code != http.StatusNotFound {
			t.Errorf("webhook listener %s: %d, want 404", p, code)
		}
	}
	if code, _ := get(admin + "/webhook/prompt"); code != http.StatusNotFound {
		t.Errorf("admin listener /webhook/prompt: %d, want 404", code)
	}
	if code, _ := get(admin + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("admin listener /debug/pprof/ without BRIDGE_PPROF: %d, want 404", code)
	}
	resp, err := http.Post(web+"/webhook/prompt", "application/json",
		strings.NewReader(`{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","status":"completed"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("webhook: %d, want 200", resp.StatusCode)
	}

	// The series exist before any event (counters at zero); the consumer lag is sampled in the
	// background, so its first sample is waited for. The webhook above, of a job the upstream does not
	// know, may be dead-lettered as not_found meanwhile: that series is checked for presence only.
	natstest.WaitFor(t, 10*time.Second, func() error {
		code, body := get(admin + "/metrics")
		if code != http.StatusOK {
			return fmt.Errorf("admin /metrics: %d", code)
		}
		for _, want := range []string{
			`bridge_deadletter_total{reason="not_found"} `,
			`bridge_deadletter_total{reason="attempts_exhausted"} 0`,
			`bridge_reconcile_errors_total{op="get_job"} 0`,
			`bridge_reconcile_sweeps_total{result="error"} 0`,
			`bridge_consumer_pending_messages{consumer="verify",stream="WEBHOOKS"}`,
			`bridge_consumer_ack_pending_messages{consumer="verify",stream="WEBHOOKS"}`,
			`bridge_verify_duration_seconds_count`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
}

// TestPprofOnAdminOnly: BRIDGE_PPROF serves the runtime profiles on the admin listener, never on the
// webhook port, a profile is bounded to 5 minutes, and it is refused without an admin listener.
func TestPprofOnAdminOnly(t *testing.T) {
	cfg := testConfig(t)
	cfg.Pprof = true
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "BRIDGE_PPROF") {
		t.Fatalf("BRIDGE_PPROF without BRIDGE_ADMIN_ADDR: %v, want an error naming BRIDGE_PPROF", err)
	}
	cfg.AdminAddr = "127.0.0.1:0"
	a := startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"http://" + a.AdminAddr().String() + "/debug/pprof/", http.StatusOK},
		{"http://" + a.AdminAddr().String() + "/debug/pprof/heap?debug=1", http.StatusOK},
		{"http://" + a.AdminAddr().String() + "/debug/pprof/profile?seconds=1", http.StatusOK},
		{"http://" + a.AdminAddr().String() + "/debug/pprof/profile?seconds=301", http.StatusBadRequest},
		{"http://" + a.Addr().String() + "/debug/pprof/", http.StatusNotFound},
	} {
		resp, err := http.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, resp.StatusCode, tc.want)
		}
	}
}

package bridge

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

var update = flag.Bool("update", false, "rewrite docs/CONFIG.md and docs/METRICS.md from the code")

// checkDoc compares the generated document want with the file docs/<name>, or rewrites the file with
// -update. A stale document fails with the command that regenerates it.
func checkDoc(t *testing.T, name string, want []byte) {
	t.Helper()
	path := "../docs/" + name
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	i := 0
	for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
		i++
	}
	t.Errorf("docs/%s is stale from line %d:\n got: %s\nwant: %s\nRegenerate it with\n\tgo test ./bridge -run '^TestConfigDoc$|^TestMetricsDoc$' -update",
		name, i+1, lineAt(gl, i), lineAt(wl, i))
}

func lineAt(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of file)"
}

const configDocHeader = `# Configuration

<!-- Generated from the code (bridge.Vars, the tags of bridge.Config): do not edit. Regenerate with
     go test ./bridge -run '^TestConfigDoc$|^TestMetricsDoc$' -update -->

Every bridge process reads these environment variables; ` + "`bridge help config`" + ` prints the same table. A bad
value stops start-up with one line per variable naming it (exit code 2). The operator commands read only the
NATS ones ([OPERATIONS.md](OPERATIONS.md#operator-commands)). What the variables decide is told in
[DESIGN.md](DESIGN.md): the two upstream contracts, the shared budget, [unknown jobs](DESIGN.md#unknown-jobs).

`

// markdownText escapes what Markdown would take for HTML: the help texts write placeholders such as
// <modality>, which a forge would drop as an unknown tag.
func markdownText(s string) string { return strings.ReplaceAll(s, "<", "&lt;") }

// TestConfigDoc keeps docs/CONFIG.md equal to the table bridge help config prints from [Vars].
func TestConfigDoc(t *testing.T) {
	var table bytes.Buffer
	WriteConfigTable(&table)
	checkDoc(t, "CONFIG.md", []byte(configDocHeader+markdownText(table.String())))
}

const metricsDocHeader = `# Metrics

<!-- Generated from the code (the registry of a bridge running every role): do not edit. Regenerate with
     go test ./bridge -run '^TestConfigDoc$|^TestMetricsDoc$' -update -->

Every metric a bridge process registers, with every role running, as its registry describes it. Each process
serves them on ` + "`GET /metrics`" + ` (Prometheus text format), beside the Go runtime and process collectors
(` + "`go_*`, `process_*`" + `), which are not listed. Where they are served, how to sum them across processes, the
dashboard and the alerts: [OPERATIONS.md](OPERATIONS.md#monitoring).

`

// TestMetricsDoc keeps docs/METRICS.md equal to the metrics a bridge running every role registers: it
// runs one on an external nats-server and the simulator, drives one job through it (so that every vector
// has a child and shows its type), and lists every bridge_ family of its registry, sorted by name.
func TestMetricsDoc(t *testing.T) {
	cfg := testConfig(t)
	a := startApp(t, cfg, zerolog.Nop(), WithPublicURLFromListener())
	reg, ok := a.Metrics().(*prometheus.Registry)
	if !ok {
		t.Fatalf("App.Metrics is a %T, not a registry", a.Metrics())
	}
	described := describedMetrics(reg)
	driveOneJob(t, cfg.NATSURL)
	var families []*dto.MetricFamily
	natstest.WaitFor(t, 30*time.Second, func() error {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		families = slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return !strings.HasPrefix(mf.GetName(), "bridge_") })
		var missing []string
		for _, name := range described {
			if !slices.ContainsFunc(families, func(mf *dto.MetricFamily) bool { return mf.GetName() == name }) {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no sample yet of %v: the job this test drives must give each a child", missing)
		}
		return nil
	})
	for _, name := range described {
		if !carriesUnit(name) {
			t.Errorf("metric %s names no unit: end it in _total, _seconds, _bytes or what it counts (see unitSuffixes)", name)
		}
	}
	var table bytes.Buffer
	writeMetricsTable(&table, families)
	checkDoc(t, "METRICS.md", []byte(metricsDocHeader+markdownText(table.String())))
}

// describedMetrics are the names of the bridge_ metrics the registry describes, children or not.
func describedMetrics(reg *prometheus.Registry) []string {
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	// Desc keeps its name private; its String() is the one public view of it.
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil && strings.HasPrefix(m[1], "bridge_") {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// driveOneJob submits one prompt job, which the simulator finishes and reports by webhook, and asks
// jobs.status about it: a submission, upstream calls, a verification, a pending job in the reconciler's
// index and a status request.
func driveOneJob(t *testing.T, natsURL string) {
	t.Helper()
	nc, _ := natstest.Connect(t, natsURL)
	var reply []byte
	natstest.WaitFor(t, 10*time.Second, func() error {
		m, err := nc.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"is this fine?"}`), 5*time.Second)
		if err != nil {
			return err
		}
		reply = m.Data
		return nil
	})
	if !bytes.Contains(reply, []byte(`"job_id"`)) {
		t.Fatalf("submit reply %s", reply)
	}
	if _, err := nc.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"`+uuid.NewString()+`"}`), 5*time.Second); err != nil {
		t.Fatalf("jobs.status: %v", err)
	}
}

// writeMetricsTable writes one row per family: name, type, the names of its labels (constant ones
// included) and help.
func writeMetricsTable(w io.Writer, families []*dto.MetricFamily) {
	fmt.Fprintln(w, "| metric | type | labels | meaning |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	for _, mf := range families {
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels = append(labels, "`"+l.GetName()+"`")
			}
		}
		slices.Sort(labels)
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", mf.GetName(), strings.ToLower(mf.GetType().String()),
			strings.Join(slices.Compact(labels), ", "), strings.ReplaceAll(mf.GetHelp(), "|", `\|`))
	}
}

// unitSuffixes are the endings that say what a metric counts or measures (issue 27: metric names carry
// their units): Prometheus's base units and counters, and the things this bridge counts.
var unitSuffixes = []string{"_total", "_seconds", "_bytes", "_info", "_messages", "_requests", "_calls", "_jobs",
	"_webhooks", "_records", "_blocks", "_intents", "_calls_per_sweep"}

// unitless are the gauges that are 0 or 1: a state, which has no unit.
var unitless = []string{"bridge_ready", "bridge_reconcile_is_leader", "bridge_reconcile_deliver_failing",
	"bridge_verify_auth_paused"}

func carriesUnit(name string) bool {
	return slices.Contains(unitless, name) || slices.ContainsFunc(unitSuffixes, func(s string) bool { return strings.HasSuffix(name, s) })
}

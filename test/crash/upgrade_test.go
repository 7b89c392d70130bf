package crash_test

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/promutil"
	"github.com/evershield/bridge/upstream/simulator"
)

var upgradeFrom = flag.String("crash.upgrade.from", "", "TestOldAndNewSideBySide: run it against this git revision of the earlier release only")

// release is an earlier release of the bridge: a name for its subtest, and its git revision.
type release struct{ name, rev string }

// earlierReleases are the releases TestOldAndNewSideBySide upgrades from.
var earlierReleases = []release{
	// The last before the upgrade gate (fa16c4e): it writes tombstones and no layout, and already reads the
	// history, so a compaction beside it does not double results (it only loses the tombstones).
	{"before-gate", "fa16c4e7119d0bed78cb394f6e5ee78397959f85^"},
	// The last before BRIDGE_HISTORY (6cfded4): it knows nothing of the history, so a job compacted beside
	// it is a new job to it, and its re-posted webhook a second result.
	{"before-history", "6cfded4812e7f30f8f0e90f5a933b3f302ad1f28^"},
}

// TestOldAndNewSideBySide is a rolling upgrade with real binaries on one nats-server and on a 3-node
// cluster (R3) (the test's, which both processes reach over loopback): a process of an earlier release (it keeps a JOBS tombstone for
// every delivered job, layout 1) and a process of this release serve the same store side by side.
//
//  1. The earlier release starts alone on a fresh store, which it makes at layout 1, and delivers jobs.
//  2. This release joins. The earlier process restarts, as in a rolling restart, so that this release's
//     process takes the reconciler lease: its compactor is the one that would compact, and holds
//     (bridge_compact_rounds_total{result="held"}).
//  3. Jobs are submitted over moderate.prompt to both (the service's queue group shares them; each job's
//     webhook goes to the process that submitted it) and delivered. Once their duplicate window (3 s) has
//     passed and the leader has held two more rounds, every delivered job still has its tombstone and none
//     is in the history; each job's webhook is posted again to both processes: no second result.
//  4. The earlier process stops; `bridge upgrade finalize` moves JOBS to layout 2 and this release compacts
//     every job into the history; the earlier release, started again, stops at start-up with one line.
//  5. Every job's webhook is posted again to this release: no upstream call and no second result. Every
//     job submitted through either process has exactly one result.
//
// Breaking the gate makes it fail: the compactor compacting on layout 1 (held rounds, tombstones, the
// history; and beside the release before the history, ten of the twenty jobs doubled by their re-posted
// webhooks), finalize not allowing per-message TTLs (the earlier release starts again), a process of this
// release moving an existing JOBS to layout 2 at start-up (the earlier release's rolling restart stops).
//
// It runs against two earlier releases (earlierReleases; -crash.upgrade.from names another), each built
// from the git history, and skips when the repository lacks them (a shallow clone). Building them compiles
// their own dependencies afresh (minutes on a cold 2-core machine), so it runs only with
// BRIDGE_UPGRADE_TEST=1 or -crash.upgrade.from.
//
// Bound: each wait is at most 30 s (60 s for the compaction after finalize).
func TestOldAndNewSideBySide(t *testing.T) {
	if os.Getenv("BRIDGE_UPGRADE_TEST") == "" && *upgradeFrom == "" {
		t.Skip("BRIDGE_UPGRADE_TEST=1 builds two earlier releases from git history and runs them beside this one")
	}
	releases := earlierReleases
	if *upgradeFrom != "" {
		releases = []release{{"from", *upgradeFrom}}
	}
	for _, rel := range releases {
		t.Run(rel.name, func(t *testing.T) {
			t.Parallel()
			oldBin := buildRelease(t, rel.rev)
			for _, nodes := range []int{1, 3} {
				t.Run(topology(nodes), func(t *testing.T) { testSideBySide(t, oldBin, nodes) })
			}
		})
	}
}

// topology names a subtest by its nodes: single, or cluster (R3).
func topology(nodes int) string {
	if nodes == 1 {
		return "single"
	}
	return "cluster"
}

func testSideBySide(t *testing.T, oldBin string, nodes int) {
	const window = 3 * time.Second
	r := newRig(t, rigConfig{nodes: nodes,
		sim: &simulator.Config{Seed: 29, QueueDelay: 10 * time.Millisecond, ProcessDelay: 50 * time.Millisecond,
			DuplicateRate: 0.3, Log: zerolog.Nop()},
		env: map[string]string{
			"BRIDGE_TIMEOUT_PROMPT": "2s", "BRIDGE_TIMEOUT_IMAGE": "2s", "BRIDGE_TIMEOUT_VIDEO": "2s",
			"BRIDGE_TIMEOUT_CHAT": "2s", "BRIDGE_DUPLICATE_WINDOW": window.String(),
		},
	})
	ctx := natstest.CtxWithin(t, 5*time.Minute)
	old := newChild(t, r.env)
	old.bin = oldBin
	old.start(r.nc)
	r.tally.follow(t, r.js)
	if l := r.jobsLayout(t, ctx); l != contract.LayoutTombstones {
		t.Fatalf("the earlier release made JOBS at layout %d, want %d", l, contract.LayoutTombstones)
	}
	ids := r.submitMany(t, 4, "earlier release alone")
	r.waitSettled(30 * time.Second)

	r.startBridge()
	old.stop()
	waitRounds(t, r.child, 1) // this release's process leads now
	old.start(r.nc)           // and the earlier release still starts beside it
	if l := r.jobsLayout(t, ctx); l != contract.LayoutTombstones {
		t.Fatalf("JOBS at layout %d with both releases running, want %d", l, contract.LayoutTombstones)
	}
	both := r.submitMany(t, 16, "side by side")
	ids = append(ids, both...)
	r.waitSettled(30 * time.Second)
	r.checkBothDelivered(t, both, old, r.child)

	r.checkHeld(t, ctx, ids, window)
	for _, id := range ids {
		for _, c := range []*child{old, r.child} {
			if code := r.postWebhookTo(c, id); code != 200 {
				t.Fatalf("webhook of %s posted again to %s answered %d, want 200", id, c.URL(), code)
			}
		}
	}
	natstest.WaitFor(t, 30*time.Second, r.verifyDrained)

	old.stop()
	if out := r.runBridge(t, bin, "upgrade", "finalize"); !strings.Contains(out, "moved from layout 1 to 2") {
		t.Fatalf("bridge upgrade finalize: %q, want it moved from layout 1 to 2", out)
	}
	r.waitNoHotState(t, 60*time.Second)
	for id, in := range historyHas(t, ctx, openHistory(t, ctx, r), ids) {
		if !in {
			t.Errorf("lost: job %s is neither hot nor in the history after finalize", id)
		}
	}
	r.checkRefused(t, old)

	gets := r.sim.CallCount(simulator.EndpointJob)
	for _, id := range ids {
		if code := r.postWebhookTo(r.child, id); code != 200 {
			t.Fatalf("webhook of compacted job %s answered %d, want 200", id, code)
		}
	}
	natstest.WaitFor(t, 30*time.Second, r.verifyDrained)
	if got := r.sim.CallCount(simulator.EndpointJob) - gets; got != 0 {
		t.Errorf("%d upstream GETs for the webhooks of compacted jobs, want 0", got)
	}
	v := r.checkExactlyOnce()
	if v.owed != len(ids) || v.results != len(ids) || v.late != 0 {
		t.Errorf("owed %d, results %d, late %d; want %d, %d, 0", v.owed, v.results, v.late, len(ids), len(ids))
	}
}

// checkHeld waits until the duplicate window of ids (and its margin) has passed and the leader, r.child,
// has run two more compaction rounds, and checks that it held every round: every job of ids keeps its JOBS
// tombstone and none is in the history.
func (r *rig) checkHeld(t *testing.T, ctx context.Context, ids []string, window time.Duration) {
	t.Helper()
	due := time.Now().Add(window + time.Second)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if time.Now().Before(due) {
			return errors.New("duplicate window not passed yet")
		}
		return nil
	})
	now, err := scrapeCompaction(r.child)
	if err != nil {
		t.Fatal(err)
	}
	after := waitRounds(t, r.child, now.rounds+2) // had it compacted, it would have by now
	if after.held != after.rounds || after.jobs != 0 {
		t.Errorf("beside the earlier release: %v of %v compaction rounds held, %v jobs compacted; want every round held, none compacted",
			after.held, after.rounds, after.jobs)
	}
	if hot := r.hotJobs(t, ctx, ids); len(hot) != len(ids) {
		t.Errorf("%d of %d delivered jobs kept their JOBS tombstone on layout 1, want all", len(hot), len(ids))
	}
	for id, in := range historyHas(t, ctx, openHistory(t, ctx, r), ids) {
		if in {
			t.Errorf("job %s is in the history on layout 1: compacted beside the earlier release", id)
		}
	}
}

// buildRelease builds cmd/bridge of the git revision rev of this repository into a temporary directory
// and returns the binary. It skips the test when the repository has no such revision (a shallow clone,
// or a source tree without git).
func buildRelease(t *testing.T, rev string) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the earlier release %s cannot be built", err, rev)
	}
	repo := strings.TrimSpace(string(top))
	if err := exec.Command("git", "-C", repo, "rev-parse", "--verify", "--quiet", rev+"^{commit}").Run(); err != nil {
		t.Skipf("the repository has no commit %s (a shallow clone? git fetch --unshallow): the earlier release cannot be built", rev)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	start := time.Now()
	// An archive rather than a worktree: nothing is registered in the repository, whatever becomes of the test.
	if err := extractRevision(repo, rev, src); err != nil {
		t.Fatalf("git archive %s: %v", rev, err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bridge"), "./cmd/bridge")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the release of %s: %v\n%s", rev, err, out)
	}
	t.Logf("built the release of %s in %v", rev, time.Since(start).Round(100*time.Millisecond))
	return filepath.Join(dir, "bridge")
}

// extractRevision writes the files of rev of the repository at repo into dir, from git archive.
func extractRevision(repo, rev, dir string) error {
	cmd := exec.Command("git", "-C", repo, "archive", "--format=tar", rev)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, 0o755)
		case tar.TypeReg:
			err = writeFile(path, tr, h.FileInfo().Mode().Perm())
		}
		if err != nil {
			return err
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%w: %s", err, stderr.Bytes())
	}
	return nil
}

// writeFile writes r into a new file at path, with perm, making its directory first.
func writeFile(path string, r io.Reader, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// jobsLayout is the layout of JOBS as its stream's metadata says.
func (r *rig) jobsLayout(t *testing.T, ctx context.Context) int {
	t.Helper()
	s, err := r.js.Stream(ctx, contract.KVStream(contract.Default.BucketJobs))
	if err != nil {
		t.Fatal(err)
	}
	return contract.LayoutOf(s.CachedInfo().Config.Metadata)
}

// submitMany submits n prompt jobs over moderate.prompt at once and returns their ids.
func (r *rig) submitMany(t *testing.T, n int, what string) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i] = r.submitViaBridge("prompt", "prompt", fmt.Sprintf("%s %d", what, i)) })
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" {
			t.Fatalf("%s: a submission was not accepted", what)
		}
	}
	return ids
}

// checkBothDelivered fails unless some of ids had their webhook sent to each of the processes: each
// submitted some of them.
func (r *rig) checkBothDelivered(t *testing.T, ids []string, procs ...*child) {
	t.Helper()
	byURL := map[string]int{}
	for _, id := range ids {
		if j, ok := r.sim.Job(id); ok && len(j.Webhooks) > 0 {
			byURL[strings.SplitN(j.Webhooks[0].URL, "/webhook", 2)[0]]++
		}
	}
	for _, c := range procs {
		if byURL[c.URL()] == 0 {
			t.Fatalf("no job went through %s (webhooks by process: %v): the processes did not share the work", c.URL(), byURL)
		}
	}
	t.Logf("jobs by the process that submitted them: %v", byURL)
}

// postWebhookTo posts the webhook of a real prompt job to c, as the upstream would send it again.
func (r *rig) postWebhookTo(c *child, id string) int {
	body := fmt.Sprintf(`{"job_id":%q,"type":"prompt","status":"completed","is_prohibited":false,"categories":{"custom":{}}}`, id)
	req := r.webhookRequest(id, "prompt", body)
	req.URL.Host = c.addr
	resp, err := r.hc.Do(req)
	if err != nil {
		r.led.post("transport")
		return 0
	}
	resp.Body.Close()
	r.led.post(fmt.Sprint(resp.StatusCode))
	return resp.StatusCode
}

// compaction is what c's metrics say of its compactor.
type compaction struct {
	rounds, held, jobs float64
}

func scrapeCompaction(c *child) (compaction, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fams, err := promutil.Scrape(ctx, &http.Client{}, c.URL()+"/metrics")
	if err != nil {
		return compaction{}, err
	}
	return compaction{rounds: promutil.Sum(fams, "bridge_compact_rounds_total"),
		held: promutil.ByLabel(fams, "bridge_compact_rounds_total", "result")["held"],
		jobs: promutil.Sum(fams, "bridge_compact_jobs_total")}, nil
}

// waitRounds waits until c has counted at least n compaction rounds (held or not: only the reconciler's
// lease holder runs them) and returns its figures.
func waitRounds(t *testing.T, c *child, n float64) compaction {
	t.Helper()
	var got compaction
	natstest.WaitFor(t, 30*time.Second, func() error {
		var err error
		if got, err = scrapeCompaction(c); err == nil && got.rounds < n {
			err = fmt.Errorf("%v compaction rounds, want %v", got.rounds, n)
		}
		return err
	})
	return got
}

// runBridge runs a bridge command of binary against the rig's NATS and returns its standard output.
func (r *rig) runBridge(t *testing.T, binary string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "BRIDGE_NATS_URL=" + r.cluster.URLs()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bridge %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// checkRefused starts c again and fails unless it stops at start-up, within 30 s, with an exit code
// other than 0 and one line besides its JSON logs.
func (r *rig) checkRefused(t *testing.T, c *child) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cmp.Or(c.bin, bin), "run")
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the earlier release did not stop at start-up within 30 s on layout 2:\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the earlier release started on layout 2 (%v), want it refused:\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("the earlier release refused with %d lines besides its logs, want one:\n%s", len(lines), out)
	}
	t.Logf("the earlier release refused (%v): %s", exit, lines[0])
}

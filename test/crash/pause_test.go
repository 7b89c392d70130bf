package crash_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestPausedProcessPublishesOnce pins issue 12 finding 1 (a second result after the duplicate window)
// at the binary level, with the fence of Build 1: a bridge process is stopped with SIGSTOP at a dangerous
// point of a result's publish path, for longer than the duplicate window, while another process delivers
// the same job; then it is continued with SIGCONT. The job has exactly one result.
//
//   - before-publish: process A has verified the job's webhook, read its record pending and built the
//     result, and is about to publish. While it is stopped, process B's reconciler finds the job past its
//     deadline, asks the upstream once more and publishes the result. A then publishes too, more than the
//     window after B, so Nats-Msg-Id no longer collapses it: only the fence (its claim on
//     bridge.result.<job_id>, Nats-Expected-Last-Subject-Sequence 0) refuses it. Winner: B (source poll).
//   - after-publish: A has published the result and not yet written delivered to JOBS. B's reconciler
//     finds the record pending, more than the window after A's publish, and delivers: the fence tells it
//     the result is out, and it records A's. Winner: A (source webhook).
//
// The deadlines are 2 s and the duplicate window 3 s (it must exceed the longest deadline). A reaches
// its point through BRIDGE_TEST_FAILPOINT (the binary's test-only failpoint): it writes the job's id to
// a file and blocks until the test removes it, so the SIGSTOP lands exactly there. A runs ingest, verify
// and submit; B only the reconciler, started while A is stopped, so nothing else can deliver the job.
// The simulator sends no webhook of its own: the test posts the one A verifies.
//
// Breaking the fence (no Nats-Expected-Last-Subject-Sequence on the claim in jobs/once.go) makes
// the test fail with two results.
func TestPausedProcessPublishesOnce(t *testing.T) {
	eachContract(t, true, func(t *testing.T, api string) {
		const window = 3 * time.Second
		for _, tc := range []struct {
			point  jobs.Failpoint
			winner string // the source of the one result
		}{{jobs.BeforePublish, contract.SourcePoll}, {jobs.AfterPublish, contract.SourceWebhook}} {
			t.Run(string(tc.point), func(t *testing.T) {
				r := newRig(t, rigConfig{api: api,
					sim: &simulator.Config{Seed: 13, QueueDelay: 10 * time.Millisecond, ProcessDelay: 50 * time.Millisecond,
						DropRate: 1, Log: zerolog.Nop()},
					env: map[string]string{
						"BRIDGE_TIMEOUT_PROMPT": "2s", "BRIDGE_TIMEOUT_IMAGE": "2s", "BRIDGE_TIMEOUT_VIDEO": "2s",
						"BRIDGE_TIMEOUT_CHAT": "2s", "BRIDGE_DUPLICATE_WINDOW": window.String(),
						// No early poll: B delivers the job through its deadline check only.
						"BRIDGE_WEBHOOK_GRACE": "1h",
					},
				})
				failFile := filepath.Join(t.TempDir(), "failpoint")
				a := r.child
				a.setEnv("BRIDGE_ROLES", "ingest,verify,submit")
				a.setEnv("BRIDGE_TEST_FAILPOINT", string(tc.point)+":"+failFile)
				r.startBridge()

				id := r.submitViaBridge("prompt", "prompt", "pause me")
				if id == "" {
					t.Fatal("submission not accepted")
				}
				natstest.WaitFor(t, 10*time.Second, func() error {
					if j, ok := r.sim.Job(id); !ok || j.Status != "completed" {
						return fmt.Errorf("job %s is %q upstream", id, j.Status)
					}
					return nil
				})
				if code := r.postWebhook(id, "prompt", false); code != 200 {
					t.Fatalf("webhook answered %d, want 200", code)
				}
				natstest.WaitFor(t, 20*time.Second, func() error {
					got, err := os.ReadFile(failFile)
					if err != nil {
						return err
					}
					if string(got) != id {
						return fmt.Errorf("failpoint reached by job %q, want %s", got, id)
					}
					return nil
				})
				if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				stopped := time.Now()
				// The pause outlasts the duplicate window: that stretch of wall time is the fault being
				// injected, not a wait for a condition.
				time.Sleep(window + 500*time.Millisecond)

				envB := maps.Clone(r.env)
				envB["BRIDGE_ROLES"] = "reconcile"
				b := newChild(t, envB)
				b.noService = true
				b.start(r.nc)
				var rec jobs.Record
				natstest.WaitFor(t, 30*time.Second, func() error {
					recs, err := r.jobRecords(context.Background())
					if err != nil {
						return err
					}
					if rec = recs[id]; rec.State == jobs.StatePending {
						return fmt.Errorf("JOBS %s still pending", id)
					}
					return nil
				})
				// A publish from A now comes more than the window after B's: only the fence stops it.
				time.Sleep(window + 500*time.Millisecond)

				if err := os.Remove(failFile); err != nil {
					t.Fatal(err)
				}
				if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				paused := time.Since(stopped)
				// A finishes: it logs the release, and then settles its webhook (ack), so the verify
				// consumer has nothing left.
				natstest.WaitFor(t, 30*time.Second, func() error {
					if !strings.Contains(tail(a.logs[len(a.logs)-1], 1000), "test failpoint released") {
						return fmt.Errorf("process A has not passed its failpoint")
					}
					return r.verifyDrained()
				})
				v := r.checkExactlyOnce()
				if v.owed != 1 || v.results != 1 || v.late != 0 || v.bySource[tc.winner] != 1 {
					t.Errorf("owed %d, results %d (by source %v), late %d; want 1, 1 (%s), 0", v.owed, v.results, v.bySource,
						v.late, tc.winner)
				}
				recs, err := r.jobRecords(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if got := recs[id]; got.State != jobs.StateDelivered || got.Source != tc.winner {
					t.Errorf("JOBS %s: state %s, source %q; want delivered, %q", id, got.State, got.Source, tc.winner)
				}
				t.Logf("process A paused at %s for %v (duplicate window %v)", tc.point, paused.Round(100*time.Millisecond), window)
			})
		}
	})
}

// verifyDrained reports whether the verify consumer still has webhooks to deliver or to be acked.
func (r *rig) verifyDrained() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := r.js.Consumer(ctx, contract.Default.StreamWebhooks, contract.Default.ConsumerVerify)
	if err != nil {
		return err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if ci.NumPending > 0 || ci.NumAckPending > 0 {
		return fmt.Errorf("verify consumer: %d pending, %d unacknowledged", ci.NumPending, ci.NumAckPending)
	}
	return nil
}

package bridge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestColdStartAcceptsTheFirstSubmission is the newcomer's path: BRIDGE_API_CONTRACT=auto and
// BRIDGE_API_RPM=auto, an account of the documented 60 a minute that has already spent two calls, and an
// idle bridge that has not learned the limit yet. Its first submission is accepted (admission plans at the
// documented limit until the upstream's answer teaches the real one) and ends with a verified result.
func TestColdStartAcceptsTheFirstSubmission(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{Seed: 3, RPM: 60, QueueDelay: 20 * time.Millisecond,
		ProcessDelay: 100 * time.Millisecond}, simtest.WithContract(simulator.ContractV2))
	client := simtest.Client(t, sim)
	for range 2 { // calls spent before the bridge starts
		if _, err := client.GetJob(context.Background(), "7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f", upstream.ClassVerify); err == nil {
			t.Fatal("a made-up job was found")
		}
	}
	cfg := testConfig(t)
	cfg.APIURL, cfg.APIContract, cfg.APIRPM = sim.URL(), contract.ContractAuto, RPMAuto
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, cfg, zerolog.Nop(), WithPublicURLFromListener())
	waitReady(t, "http://"+a.Addr().String())
	nc, _ := natstest.Connect(t, cfg.NATSURL)
	rep, _, err := ops.Submit(natstest.CtxWithin(t, 10*time.Second), nc,
		ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": "my first job"}})
	if se, ok := errors.AsType[*ops.ServiceError](err); ok && se.Busy() {
		t.Fatalf("the first submission on an idle bridge was refused BUSY: %v", err)
	}
	if err != nil {
		t.Fatalf("first submission: %v", err)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		raw, err := ops.JobStatus(natstest.CtxWithin(t, 5*time.Second), nc, contract.Default, rep.JobID)
		if err != nil {
			return err
		}
		if !ops.HasResult(raw) {
			return errors.New("no result yet for job " + rep.JobID)
		}
		return nil
	})
}

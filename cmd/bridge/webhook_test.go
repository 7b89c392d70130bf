package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestWebhookRegisterEndToEnd: bridge webhook register points the account at the bridge, and a job
// submitted straight to the upstream without a webhook_url then reports to it, token and all.
func TestWebhookRegisterEndToEnd(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	recv := simtest.NewReceiver(t)
	env := map[string]string{
		"BRIDGE_API_URL": sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey,
		"BRIDGE_PUBLIC_URL": recv.URL, "BRIDGE_WEBHOOK_TOKEN": "s3cret-token",
	}
	out, _, err := runCmd(t, env, "webhook", "register", "-dry-run")
	if err != nil || !strings.Contains(out, "would register "+recv.URL+"/webhook?token=s3******") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if n := sim.CallCount(simulator.EndpointRegister); n != 0 {
		t.Fatalf("dry run made %d register calls", n)
	}
	out, _, err = runCmd(t, env, "webhook", "register")
	if err != nil || !strings.Contains(out, "registered "+recv.URL+"/webhook?token=s3******") || strings.Contains(out, "s3cret-token") {
		t.Fatalf("register: %v\n%s", err, out)
	}
	api := simtest.Client(t, sim)
	sub, err := api.Submit(context.Background(), "prompt", map[string]string{"prompt": "from elsewhere"}, "")
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, r := range recv.Received() {
			if r.Path == "/webhook?token=s3cret-token" && strings.Contains(string(r.Body), sub.JobID) {
				return nil
			}
		}
		return errors.New("no webhook at the registered URL yet")
	})
}

// TestWebhookRegisterRefusesAnUnprotectedURL: without a token or a signing secret it registers nothing
// unless told -insecure.
func TestWebhookRegisterRefusesAnUnprotectedURL(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{})
	env := map[string]string{"BRIDGE_API_URL": sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey, "BRIDGE_PUBLIC_URL": "https://bridge.example.com"}
	_, _, err := runCmd(t, env, "webhook", "register")
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "BRIDGE_WEBHOOK_TOKEN") {
		t.Fatalf("no token: %v (exit %d), want a usage error naming BRIDGE_WEBHOOK_TOKEN", err, exitCode(err))
	}
	if n := sim.CallCount(simulator.EndpointRegister); n != 0 {
		t.Fatalf("%d register calls, want 0", n)
	}
	if out, _, err := runCmd(t, env, "webhook", "register", "-insecure"); err != nil || !strings.Contains(out, "registered https://bridge.example.com/webhook") {
		t.Fatalf("-insecure: %v\n%s", err, out)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOpsCommandsFindTheEmbeddedOpsUser: the operator's commands on the bridge's machine, given only the
// bridge's own variables (its data directory and NATS listener), connect to its embedded server as the
// ops user, whose seed the bridge keeps in the data directory: bridge status and bridge deadletter list
// succeed without a flag, and the server refuses nothing. With the seed gone, the same command connects
// as anyone would (downstream, on loopback), the server refuses it DEADLETTER, and the command fails
// saying so.
func TestOpsCommandsFindTheEmbeddedOpsUser(t *testing.T) {
	dir, natsAddr, httpAddr := t.TempDir(), freeAddr(t), freeAddr(t)
	logs, _ := startRun(t, map[string]string{"BRIDGE_ROLES": "ingest", "BRIDGE_DATA_DIR": dir,
		"BRIDGE_NATS_LISTEN": natsAddr, "BRIDGE_HTTP_ADDR": httpAddr})
	waitReady(t, http.DefaultClient, "http://"+httpAddr)
	env := map[string]string{"BRIDGE_DATA_DIR": dir, "BRIDGE_NATS_LISTEN": natsAddr, "BRIDGE_HTTP_ADDR": httpAddr}

	out, errOut, err := runWithin(t, 15*time.Second, env, "status", "-json", "-sample", "0")
	var rep struct {
		Streams []struct {
			Name    string `json:"name"`
			Healthy bool   `json:"healthy"`
			Problem string `json:"problem"`
		} `json:"streams"`
	}
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("bridge status: %v %s %s", err, out, errOut)
	}
	healthy := map[string]bool{}
	for _, s := range rep.Streams {
		healthy[s.Name] = s.Healthy && s.Problem == ""
	}
	for _, name := range []string{"WEBHOOKS", "RESULTS", "DEADLETTER", "SLOWLANE"} {
		if !healthy[name] {
			t.Errorf("bridge status: %s not read as healthy: %+v", name, rep.Streams)
		}
	}
	if out, errOut, err := runWithin(t, 15*time.Second, env, "deadletter", "list"); err != nil || out != "0 dead letters\n" {
		t.Fatalf("bridge deadletter list: %v %q %s", err, out, errOut)
	}
	if strings.Contains(logs.String(), "Violation") {
		t.Fatalf("the server refused the ops commands something:\n%s", logs)
	}

	if err := os.Remove(filepath.Join(dir, "ops.nk")); err != nil {
		t.Fatal(err)
	}
	// The server answers a refused request with nothing; the command must end on the refusal itself, and say
	// what was refused.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	err = run(ctx, []string{"deadletter", "list"}, env, &stdout, &bytes.Buffer{})
	const refusal = `nats: permissions violation: Permissions Violation for Publish to "$JS.API.STREAM.INFO.DEADLETTER"`
	if err == nil || !strings.Contains(err.Error(), refusal) || !strings.Contains(err.Error(), "docs/SECURITY.md") ||
		stdout.Len() != 0 {
		t.Fatalf("bridge deadletter list without the ops seed: %v %q; want it to fail naming the refusal: %s",
			err, stdout.String(), refusal)
	}
	if code := exitCode(err); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
}

// runWithin runs a bridge sub-command, for at most d, and returns its stdout, stderr and error.
func runWithin(t *testing.T, d time.Duration, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, env, &out, &errOut)
	return out.String(), errOut.String(), err
}

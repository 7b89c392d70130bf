package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
)

// imageTestEnv turns on TestImagesBuildAndRun. Building both images with the host's Go took 72 s on 2
// cores with a cold build cache and 20 s warm (the bridge is relinked for its version): too slow for
// every go test ./... run, and it needs a Docker engine.
const imageTestEnv = "BRIDGE_IMAGE_TEST"

// TestImagesBuildAndRun builds the images with scripts/images.sh, under a tag of its own that it removes
// afterwards, and runs them: the bridge prints the version it was built with, nats-server the version in
// go.mod, and both run as nonroot with an exec-form health check.
func TestImagesBuildAndRun(t *testing.T) {
	if os.Getenv(imageTestEnv) == "" {
		t.Skipf("set %s=1 to build the images and run them (needs a Docker engine)", imageTestEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tag := fmt.Sprintf("test-%d", os.Getpid())
	version := "imagetest-" + tag
	images := []string{"evershield/bridge:" + tag, "evershield/nats:" + tag, "evershield/lb:" + tag}
	t.Cleanup(func() {
		// Only the tags go; the layers stay cached for the next build.
		out, err := exec.Command("docker", append([]string{"rmi"}, images...)...).CombinedOutput()
		if err != nil {
			t.Logf("docker rmi: %v\n%s", err, out)
		}
	})

	build := exec.CommandContext(ctx, "bash", repoFile("scripts/images.sh"))
	build.Env = append(os.Environ(), "TAG="+tag, "VERSION="+version)
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/images.sh: %v\n%s", err, out)
	}
	t.Logf("scripts/images.sh built %q in %s", images, time.Since(start).Round(100*time.Millisecond))

	natsVersion := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/nats-io/nats-server/v2" {
				natsVersion = d.Version
			}
		}
	}
	if natsVersion == "" {
		t.Fatal("no nats-server/v2 in this test's build info")
	}
	tests := []struct {
		image string
		args  []string
		want  string
	}{
		{images[0], []string{"version"}, "bridge " + version},
		{images[1], []string{"--version"}, "nats-server: " + natsVersion},
	}
	for _, tt := range tests {
		out, err := exec.CommandContext(ctx, "docker", append([]string{"run", "--rm", tt.image}, tt.args...)...).CombinedOutput()
		if first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); err != nil || first != tt.want {
			t.Errorf("docker run %s %q: %v %q, want %q", tt.image, tt.args, err, out, tt.want)
		}
		out, err = exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{json .Config}}", tt.image).Output()
		if err != nil {
			t.Fatalf("docker image inspect %s: %v", tt.image, err)
		}
		var cfg struct {
			User        string
			Healthcheck struct{ Test []string }
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("docker image inspect %s: %v", tt.image, err)
		}
		hc := cfg.Healthcheck.Test
		if cfg.User != "65532:65532" || len(hc) < 3 || !slices.Equal(hc[:3], []string{"CMD", imageBinary, "healthcheck"}) {
			t.Errorf("%s: user %q, healthcheck %q; want 65532:65532 and [CMD %s healthcheck ...]", tt.image, cfg.User, hc, imageBinary)
		}
	}
	memoryLimitInContainer(ctx, t, images[0])
	// The webhook load balancer: its -check of an address where nothing listens fails, as its health
	// check must when it does not serve.
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", images[2], "-check", "http://127.0.0.1:1/_lb").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connection refused") {
		t.Errorf("docker run %s -check of a closed port: %v %q, want a refused connection", images[2], err, out)
	}
}

// memoryLimitInContainer runs bridge run (ingest only) in image under docker run --memory 256m: the bridge
// must read the container's limit from its cgroup and give the Go runtime 90% of it.
func memoryLimitInContainer(ctx context.Context, t *testing.T, image string) {
	t.Helper()
	name := fmt.Sprintf("bridge-memlimit-%d", os.Getpid())
	out, err := exec.CommandContext(ctx, "docker", "run", "-d", "--name", name, "--memory", "256m",
		"-e", "BRIDGE_ROLES=ingest", "-e", "BRIDGE_DATA_DIR=/tmp/data", image, "run").CombinedOutput()
	if err != nil {
		t.Fatalf("docker run --memory 256m %s run: %v %s", image, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })
	// 90% of 268,435,456 bytes.
	const want = `"gomemlimit_bytes":241591910`
	natstest.WaitFor(t, 30*time.Second, func() error {
		logs, err := exec.CommandContext(ctx, "docker", "logs", name).CombinedOutput()
		if err != nil || !strings.Contains(string(logs), want) {
			return fmt.Errorf("the bridge's log in a 256 MiB container has no %s: %v\n%s", want, err, logs)
		}
		return nil
	})
}

//go:build helm

package deploy_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// releaseScript runs scripts/release.sh with args and extra environment from the repository's root, and
// returns its combined output and error. The script is outside this module, so go test's cache does not
// see it change: run with -count=1 (as .ci/run does) after editing it.
func releaseScript(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"scripts/release.sh"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestReleaseRefuses: the script stops, before building anything, on a version that is not a vX.Y.Z tag
// and on a version CHANGELOG.md has no section for.
func TestReleaseRefuses(t *testing.T) {
	tests := []struct{ version, want string }{
		{"", "usage"},
		{"0.9.0", "usage"},
		{"v0.9", "usage"},
		{"v0.9.0-rc.1", "usage"},
		{"v01.2.3", "usage"},
		{"v99.0.0", "CHANGELOG.md has no section '## [99.0.0] - YYYY-MM-DD'"},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			dist := t.TempDir()
			out, err := releaseScript(t, []string{"DIST=" + dist, "IMAGES=0"}, tt.version)
			if err == nil || !strings.Contains(out, tt.want) {
				t.Errorf("scripts/release.sh %q: %v, output %q; want a failure saying %q", tt.version, err, out, tt.want)
			}
			if entries, _ := os.ReadDir(dist); len(entries) != 0 {
				t.Errorf("wrote %d files", len(entries))
			}
		})
	}
}

// TestReleaseDryRun runs scripts/release.sh's dry run for this machine's platform, without images, and
// checks what a release is: a binary whose `bridge version` prints the tag and the commit it was built
// from (the -X ldflags reach cmd/bridge's version and commit), the chart packaged at the tag's version,
// and SHA256SUMS of both. The build takes a minute or two with a cold cache.
func TestReleaseDryRun(t *testing.T) {
	dist := t.TempDir()
	const version = "v0.0.1"
	platform := runtime.GOOS + "/" + runtime.GOARCH
	out, err := releaseScript(t, []string{"DRY_RUN=1", "IMAGES=0", "DIST=" + dist, "PLATFORMS=" + platform}, version)
	if err != nil {
		t.Fatalf("scripts/release.sh %s: %v\n%s", version, err, out)
	}
	bin := filepath.Join(dist, "bridge-"+version+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	got, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	head, err := exec.Command("git", "-C", "..", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	want := []string{"bridge " + version, "commit " + strings.TrimSpace(string(head))}
	if len(lines) != 3 || !slices.Equal(lines[:2], want) || !strings.HasPrefix(lines[2], "go1.27.3 "+platform) {
		t.Errorf("bridge version printed %q, want %q and the toolchain go1.27.3 %s", lines, want, platform)
	}

	ch, err := loader.LoadFile(filepath.Join(dist, "bridge-0.0.1.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.Version != "0.0.1" || ch.Metadata.AppVersion != "0.0.1" {
		t.Errorf("chart version %q, appVersion %q, want 0.0.1", ch.Metadata.Version, ch.Metadata.AppVersion)
	}
	sbom, err := os.ReadFile(bin + ".cdx.json")
	if err != nil || !strings.Contains(string(sbom), `"purl": "pkg:golang/github.com/evershield/bridge@v0.0.1"`) {
		t.Errorf("%s.cdx.json: %v; want the SBOM of the bridge at v0.0.1", bin, err)
	}
	checkSums(t, dist, []string{filepath.Base(bin), filepath.Base(bin) + ".cdx.json", "bridge-0.0.1.tgz"})
}

// checkSums checks that dir holds files and SHA256SUMS, whose lines are those files' SHA-256.
func checkSums(t *testing.T, dir string, files []string) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var listed []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		b, err := os.ReadFile(filepath.Join(dir, name))
		if !ok || err != nil {
			t.Fatalf("SHA256SUMS line %q: %v", sc.Text(), err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS: %s is %x, listed %s", name, h, sum)
		}
		listed = append(listed, name)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, e := range entries {
		all = append(all, e.Name())
	}
	slices.Sort(files)
	withSums := append(slices.Clone(files), "SHA256SUMS")
	slices.Sort(withSums)
	if !slices.Equal(listed, files) || !slices.Equal(all, withSums) {
		t.Errorf("SHA256SUMS lists %q and the directory holds %q, want %q and SHA256SUMS", listed, all, files)
	}
}

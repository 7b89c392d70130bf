package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBOMOfTheBridge builds the bridge as a release does and reads its BOM: the binary at the release's
// version with its SHA-256, the standard library of go.mod's toolchain, and nats.go and nats-server at
// the versions the bridge's go.mod requires, each with its go.sum hash; the same binary gives the same BOM.
func TestBOMOfTheBridge(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bridge")
	build := exec.Command("go", "build", "-C", "../../..", "-trimpath", "-o", bin, "./cmd/bridge")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the bridge: %v\n%s", err, out)
	}
	var first, second bytes.Buffer
	if err := write(&first, bin, "v9.8.7"); err != nil {
		t.Fatal(err)
	}
	if err := write(&second, bin, "v9.8.7"); err != nil {
		t.Fatal(err)
	}
	if first.String() != second.String() {
		t.Error("two BOMs of one binary differ")
	}
	var b BOM
	if err := json.Unmarshal(first.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	m := b.Metadata.Component
	if b.Format != "CycloneDX" || b.Spec != "1.6" || m.PURL != "pkg:golang/github.com/evershield/bridge@v9.8.7" ||
		len(m.Hashes) != 1 || !hex64.MatchString(m.Hashes[0].Content) {
		t.Errorf("BOM %s %s of %+v: want CycloneDX 1.6 of the bridge at v9.8.7 with its SHA-256", b.Format, b.Spec, m)
	}
	byPURL := map[string]Component{}
	for _, c := range b.Components {
		byPURL[c.PURL] = c
	}
	goMod, err := os.ReadFile("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"github.com/nats-io/nats.go", "github.com/nats-io/nats-server/v2"} {
		v := regexp.MustCompile(regexp.QuoteMeta(mod) + ` (v\S+)`).FindSubmatch(goMod)
		if v == nil {
			t.Fatalf("go.mod requires no %s", mod)
		}
		c, ok := byPURL["pkg:golang/"+mod+"@"+string(v[1])]
		if !ok || len(c.Hashes) != 1 || !hex64.MatchString(c.Hashes[0].Content) {
			t.Errorf("%s@%s: component %+v (found %v), want it with its go.sum hash", mod, v[1], c, ok)
		}
	}
	if _, ok := byPURL["pkg:golang/stdlib@1.27.3"]; !ok {
		t.Error("no component pkg:golang/stdlib@1.27.3 (go.mod's toolchain)")
	}
	if len(b.Dependencies) != 1 || len(b.Dependencies[0].DependsOn) != len(b.Components) {
		t.Errorf("dependencies %+v: want the binary on each of its %d components", b.Dependencies, len(b.Components))
	}
}

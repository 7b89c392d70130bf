//go:build helm

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// TestPackage packages the bridge's chart for a version and loads the archive back with Helm's loader:
// the version and appVersion are the release's, every template is in it.
func TestPackage(t *testing.T) {
	out := t.TempDir()
	var stdout strings.Builder
	if err := run([]string{"-version", "v1.2.3", "-out", out, "../../helm/bridge"}, &stdout); err != nil {
		t.Fatal(err)
	}
	path := strings.TrimSpace(stdout.String())
	if path != filepath.Join(out, "bridge-1.2.3.tgz") {
		t.Fatalf("printed %q, want %s", path, filepath.Join(out, "bridge-1.2.3.tgz"))
	}
	ch, err := loader.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.Version != "1.2.3" || ch.Metadata.AppVersion != "1.2.3" {
		t.Errorf("packaged version %q, appVersion %q, want 1.2.3 both", ch.Metadata.Version, ch.Metadata.AppVersion)
	}
	src, err := loader.LoadDir("../../helm/bridge")
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Templates) != len(src.Templates) || ch.Schema == nil {
		t.Errorf("packaged %d templates (schema %v), want the directory's %d and its values schema", len(ch.Templates), ch.Schema != nil, len(src.Templates))
	}
}

// TestPackageRefuses: a version that is not X.Y.Z, and a chart Helm's linter warns about, are not packaged.
func TestPackageRefuses(t *testing.T) {
	bad := t.TempDir()
	if err := os.CopyFS(bad, os.DirFS("../../helm/bridge")); err != nil {
		t.Fatal(err)
	}
	tpl := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Name\n"
	if err := os.WriteFile(filepath.Join(bad, "templates", "bad.yaml"), []byte(tpl), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, version, dir string
	}{
		{"not semver", "v1.2", "../../helm/bridge"},
		{"not a version", "latest", "../../helm/bridge"},
		{"lint warning", "1.2.3", bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			if err := run([]string{"-version", tt.version, "-out", out, tt.dir}, &strings.Builder{}); err == nil {
				t.Error("packaged")
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("wrote %d files", len(entries))
			}
		})
	}
}

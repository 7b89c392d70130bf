package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeMax is the README's budget: what the bridge is and why, the quick start, one picture and links.
// Everything else belongs in docs/, where later features document themselves.
const readmeMax = 12 * 1024

// TestReadmeStaysShort keeps README.md within its budget, with the two quick-start commands as the
// project guide gives them, under the Go toolchain go.mod names (issue 27), and the picture of the flow.
func TestReadmeStaysShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > readmeMax {
		t.Errorf("README.md is %d bytes, over its %d: move the detail to docs/ and link it", len(b), readmeMax)
	}
	tc := "GOTOOLCHAIN=" + toolchain(t, "go.mod")
	for _, want := range []string{"```sh\nexport " + tc + "\ngo run ./cmd/bridge demo\n```",
		"```sh\n" + tc + " go test -race ./...\n```", "```mermaid\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
}

// TestScriptsExportTheToolchain: a machine starts on its own Go and ignores go.mod's wish unless
// GOTOOLCHAIN says otherwise, so CI and every script export the toolchain go.mod's go line names (issue
// 27), and the deploy module, whose govulncheck reads the bridge's code, names the same.
func TestScriptsExportTheToolchain(t *testing.T) {
	want := toolchain(t, "go.mod")
	if got := toolchain(t, "deploy/go.mod"); got != want {
		t.Errorf("deploy/go.mod names %s, go.mod %s", got, want)
	}
	scripts, err := filepath.Glob(filepath.Join(repoRoot(t), "scripts", "*.sh"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range append(scripts, filepath.Join(repoRoot(t), ".ci", "run")) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\nexport GOTOOLCHAIN="+want+"\n") {
			t.Errorf("%s does not export GOTOOLCHAIN=%s", file, want)
		}
	}
}

// toolchain is the toolchain the go line of the go.mod at path (from the repository's root) names: go1.27.3
// for "go 1.27.3".
func toolchain(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (1\.\d+\.\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no go line naming a release (go 1.N.P)", path)
	}
	return "go" + string(m[1])
}

// TestDesignPackageTableMatchesTree checks docs/DESIGN.md's package table against the module: every
// directory holding Go files has a row, and every directory a row names holds Go files. Directories of
// other modules (deploy/) are not this module's; a row's first cell may name several directories.
func TestDesignPackageTableMatchesTree(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Package layout\n")
	if !ok {
		t.Fatal("DESIGN.md has no ## Package layout section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var inTable []string
	for _, row := range regexp.MustCompile("(?m)^\\| ([^|]+) \\|").FindAllStringSubmatch(section, -1) {
		for _, m := range regexp.MustCompile("`([a-z][a-z0-9_/-]*)`").FindAllStringSubmatch(row[1], -1) {
			inTable = append(inTable, strings.TrimSuffix(m[1], "/"))
		}
	}
	tree := goPackageDirs(t, root)
	for _, dir := range tree {
		if !slices.Contains(inTable, dir) {
			t.Errorf("package %s has no row in DESIGN.md's package table", dir)
		}
	}
	for _, dir := range inTable {
		if !slices.Contains(tree, dir) {
			t.Errorf("DESIGN.md's package table names %s, which is no package directory of the module", dir)
		}
	}
	if len(tree) < 10 {
		t.Fatalf("found only %v", tree)
	}
}

// goPackageDirs are the module's directories that hold Go files, relative to root, without those of a
// nested module, testdata and hidden directories.
func goPackageDirs(t *testing.T, root string) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || exists(filepath.Join(path, "go.mod"))) {
			return filepath.SkipDir
		}
		if files, _ := filepath.Glob(filepath.Join(path, "*.go")); len(files) > 0 && path != root {
			rel, _ := filepath.Rel(root, path)
			dirs = append(dirs, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

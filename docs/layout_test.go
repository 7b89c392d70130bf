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
// project guide gives them and the picture of the flow.
func TestReadmeStaysShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > readmeMax {
		t.Errorf("README.md is %d bytes, over its %d: move the detail to docs/ and link it", len(b), readmeMax)
	}
	for _, want := range []string{"```sh\ngo run ./cmd/bridge demo\n```", "```sh\ngo test -race ./...\n```", "```mermaid\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
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

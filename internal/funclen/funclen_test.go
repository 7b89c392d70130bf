package funclen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Limit is the house style's longest function, in lines.
const Limit = 80

// TestNoLongFunctions: every function of the module (tests aside) keeps the house style's limit.
func TestNoLongFunctions(t *testing.T) {
	long, err := Long(filepath.Join("..", ".."), Limit)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range long {
		t.Errorf("%s/%s: %s is %d lines, over %d", f.Dir, f.File, f.Name, f.Lines, Limit)
	}
}

// TestLongFindsALongFunction checks the finder itself on a file with one function of 82 lines and one of 3.
func TestLongFindsALongFunction(t *testing.T) {
	dir := t.TempDir()
	src := "package p\n\nfunc long() {\n" + strings.Repeat("\t_ = 1\n", 80) + "}\n\nfunc (s *T) short() {\n\t_ = 1\n}\n\ntype T struct{}\n"
	if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p_test.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	long, err := Long(dir, Limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(long) != 1 || long[0].Name != "long" || long[0].Lines != 82 || long[0].File != "p.go" {
		t.Fatalf("long = %+v, want only long (82 lines) of p.go", long)
	}
}

package funclen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Limit is the house style's longest function, in lines.
const Limit = 80

// ParamLimit is the house style's most parameters of a function.
const ParamLimit = 4

// wideExempt are functions that may take more than ParamLimit parameters, and why.
var wideExempt = map[string]string{
	// The house style's testable main (STYLE.md §8.1): the process's context, arguments, environment
	// and standard streams, which tests pass in instead of the process's own.
	"cmd/bridge/commands.go run": "main's seam",
}

// TestNoWideFunctions: every function of the module (tests aside) takes at most ParamLimit parameters.
func TestNoWideFunctions(t *testing.T) {
	wide, err := Wide(filepath.Join("..", ".."), ParamLimit)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range wide {
		if wideExempt[f.Dir+"/"+f.File+" "+f.Name] == "" {
			t.Errorf("%s/%s: %s takes %d parameters, over %d", f.Dir, f.File, f.Name, f.Params, ParamLimit)
		}
	}
}

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

// TestWideFindsAWideFunction checks the finder itself: five parameters, four, and a variadic one.
func TestWideFindsAWideFunction(t *testing.T) {
	dir := t.TempDir()
	src := "package p\n\nfunc wide(a, b int, c string, d, e bool) {}\n\nfunc (T) four(a, b, c int, d ...int) {}\n\nfunc unnamed(int, string, bool, error, any) {}\n\ntype T struct{}\n"
	if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	wide, err := Wide(dir, ParamLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(wide) != 2 || wide[0].Name != "wide" || wide[0].Params != 5 || wide[1].Name != "unnamed" || wide[1].Params != 5 {
		t.Fatalf("wide = %+v, want wide and unnamed (5 parameters each)", wide)
	}
}

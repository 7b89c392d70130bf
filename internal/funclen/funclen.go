// Package funclen finds functions of the wrong shape: the house style keeps every function of the
// non-test code under 80 lines, and its helpers to at most four parameters (past that, a small struct
// names what travels together). Its test walks the module and fails on any function that breaks either.
package funclen

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
)

// Func is one function or method: its length in lines, from func to the closing brace, and its number of
// parameters (the receiver aside; a variadic one counts once).
type Func struct {
	// Dir is the package directory relative to the module root, with forward slashes.
	Dir    string
	File   string
	Name   string
	Lines  int
	Params int
}

// Long returns the functions (function literals inside them count toward their length) of the
// non-test Go files under root that are longer than limit lines, longest first.
func Long(root string, limit int) ([]Func, error) {
	out, err := walk(root, func(f Func) bool { return f.Lines > limit })
	slices.SortFunc(out, func(a, b Func) int { return b.Lines - a.Lines })
	return out, err
}

// Wide returns the functions of the non-test Go files under root that take more than limit parameters.
func Wide(root string, limit int) ([]Func, error) {
	return walk(root, func(f Func) bool { return f.Params > limit })
}

// walk returns the functions of the non-test Go files under root that keep reports.
func walk(root string, keep func(Func) bool) ([]Func, error) {
	var out []Func
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			fn := Func{Dir: filepath.ToSlash(filepath.Dir(rel)), File: filepath.Base(rel), Name: name(fd),
				Lines: fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1, Params: params(fd.Type)}
			if keep(fn) {
				out = append(out, fn)
			}
		}
		return nil
	})
	return out, err
}

// params counts t's parameters: one per name, or one for an unnamed one.
func params(t *ast.FuncType) int {
	n := 0
	for _, f := range t.Params.List {
		n += max(1, len(f.Names))
	}
	return n
}

func name(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

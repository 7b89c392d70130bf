// Package funclen finds long functions: the house style keeps every function of the non-test code
// under 80 lines. Its test walks the module and fails for the packages that already keep the rule.
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

// Func is one function or method and its length in lines, from func to the closing brace.
type Func struct {
	// Dir is the package directory relative to the module root, with forward slashes.
	Dir   string
	File  string
	Name  string
	Lines int
}

// Long returns the functions (function literals inside them count toward their length) of the
// non-test Go files under root that are longer than limit lines, longest first.
func Long(root string, limit int) ([]Func, error) {
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
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n > limit {
				out = append(out, Func{Dir: filepath.ToSlash(filepath.Dir(rel)), File: filepath.Base(rel), Name: name(fd), Lines: n})
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Func) int { return b.Lines - a.Lines })
	return out, err
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

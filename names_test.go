package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestOneNamePerType: no two packages of the module export a type of the
// same name (STYLE.md: one name per thing), so "Limiter" or "Override" in
// a review, a log or the docs means one thing.
func TestOneNamePerType(t *testing.T) {
	where := map[string][]string{} // type name -> packages (directories) exporting it
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules" || isModule(path)) {
				return filepath.SkipDir // another module (bench) is not this one
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
		pkg := filepath.Dir(path)
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				name := spec.(*ast.TypeSpec).Name.Name
				if ast.IsExported(name) && !slices.Contains(where[name], pkg) {
					where[name] = append(where[name], pkg)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(where) < 20 {
		t.Fatalf("found %d exported type names, want the module's (at least 20): is the walk reading the tree?", len(where))
	}
	for _, name := range slices.Sorted(maps.Keys(where)) {
		if pkgs := where[name]; len(pkgs) > 1 {
			t.Errorf("type %s is exported by %d packages: %s; want one name per thing", name, len(pkgs), strings.Join(pkgs, ", "))
		}
	}
}

// isModule reports whether dir holds a go.mod of its own.
func isModule(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "go.mod"))
	return err == nil
}

// TestRequestPathLooksNoAlgorithmUp: a rule carries its algorithm's Spec,
// resolved once when a policy is loaded; the engine and the middleware,
// which run per request, never look one up by name.
func TestRequestPathLooksNoAlgorithmUp(t *testing.T) {
	for _, dir := range []string{"limiter", "middleware"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("list %s: %v, %d files", dir, err, len(files))
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(src), "algorithms.Lookup("); n > 0 {
				t.Errorf("%s calls algorithms.Lookup %d times; want the rule's Spec (limiter.Rule.Algorithm)", f, n)
			}
		}
	}
}

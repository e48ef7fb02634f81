package contract

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// The cluster domain is a setting (--cluster-domain), spelled out once
// here as DefaultClusterDomain: no other string literal in the mesh's code
// may hard-code it, or a cluster with another domain gets identities, SANs
// or addresses that name cluster.local. Comments may mention it.
func TestNoClusterDomainLiteralOutsideContract(t *testing.T) {
	// Not the mesh's code: the local cluster's own kubelet and DNS
	// (whose domain is their setting, as on any cluster), generators of
	// recorded test data, benchmarks, and generated code.
	skip := map[string]string{
		"contract":           "the one place",
		"localkube":          "the local cluster's own DNS and API server certificates",
		"fixtures":           "recorded test data",
		"bench":              "benchmarks",
		"tools":              "separate modules",
		"install/prometheus": "Prometheus's module",
	}
	var found []string
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if _, ok := skip[rel]; ok || rel == "bin" || rel == "testdata" || strings.HasSuffix(rel, "/testdata") || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, ".pb.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && strings.Contains(lit.Value, DefaultClusterDomain) {
				found = append(found, fset.Position(lit.Pos()).String())
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("%s: a %q literal: use contract.DefaultClusterDomain or the configured cluster domain", f, DefaultClusterDomain)
	}
}

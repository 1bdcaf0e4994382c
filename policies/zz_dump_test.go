package policies

import (
	"fmt"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestXDump(t *testing.T) {
	src, err := ReadSource("")
	if err != nil { t.Fatal(err) }
	mods := map[string]*ast.Module{}
	for k, m := range src.modules { if !src.tests[k] { mods[k] = m } }
	c := ast.NewCompiler()
	c.Compile(mods)
	for _, m := range c.Modules { fmt.Println(m.String()) }
}

package policies

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestSandboxRefusesBuiltins loads policies that reach out of the sandbox,
// each with a test that evaluates the call, and checks that Load and
// RunTests refuse them naming the file, the line and the builtin, and that
// nothing reached the server the policies point at.
func TestSandboxRefusesBuiltins(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type": "object"}`))
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/metadata"

	// Each policy file has the offending call on line 4; the test file
	// makes the call happen if the policy loads.
	const head = "package healer\n\ndecision := {\"reason\": \"r\"} if {\n"
	const test = "package healer_test\n\nimport data.healer\n\ntest_decides if healer.decision\n"
	tests := []struct {
		name    string
		files   map[string]string
		file    string // the file named in the error
		row     int
		builtin string
		why     string
	}{
		{
			name:  "http.send in a rule body",
			files: map[string]string{"rules.rego": head + "\thttp.send({\"method\": \"GET\", \"url\": \"" + url + "\"}).status_code == 200\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "http.send", why: "(network)",
		},
		{
			name:  "http.send nested in an argument and a comprehension",
			files: map[string]string{"rules.rego": head + "\tcount([r | r := object.get(http.send({\"method\": \"GET\", \"url\": \"" + url + "\"}), \"body\", {})]) > 0\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "http.send", why: "(network)",
		},
		{
			name: "http.send as a rule's value",
			files: map[string]string{
				"rules.rego":      "package healer\n\ndecision := {\"reason\": \"r\"}\n\nprobe := http.send({\"method\": \"GET\", \"url\": \"" + url + "\"})\n",
				"rules_test.rego": "package healer_test\n\nimport data.healer\n\ntest_probe if healer.probe\n",
			},
			file: "rules.rego", row: 5, builtin: "http.send", why: "(network)",
		},
		{
			name: "http.send in a test file only",
			files: map[string]string{
				"rules.rego":      "package healer\n\ndecision := {\"reason\": \"r\"}\n",
				"rules_test.rego": "package healer_test\n\ntest_probe if {\n\thttp.send({\"method\": \"GET\", \"url\": \"" + url + "\"})\n}\n",
			},
			file: "rules_test.rego", row: 4, builtin: "http.send", why: "(network)",
		},
		{
			name: "http.send replaced with a mock in a test",
			files: map[string]string{
				"rules.rego":      "package healer\n\ndecision := {\"reason\": \"r\"}\n",
				"rules_test.rego": "package healer_test\n\nimport data.healer\n\ntest_mocked if healer.decision with http.send as {}\n",
			},
			file: "rules_test.rego", row: 5, builtin: "http.send", why: "(network)",
		},
		{
			name:  "net.lookup_ip_addr",
			files: map[string]string{"rules.rego": head + "\tcount(net.lookup_ip_addr(\"localhost\")) > 0\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "net.lookup_ip_addr", why: "(network: DNS lookups)",
		},
		{
			name:  "net.cidr_contains, with the rest of net.*",
			files: map[string]string{"rules.rego": head + "\tnet.cidr_contains(\"10.0.0.0/8\", \"10.1.2.3\")\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "net.cidr_contains", why: "net.*",
		},
		{
			name:  "opa.runtime",
			files: map[string]string{"rules.rego": head + "\topa.runtime().env.HEALER_API_TOKEN != \"\"\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "opa.runtime", why: "(runtime: it reads healer's environment)",
		},
		{
			name:  "json.match_schema with a remote $ref",
			files: map[string]string{"rules.rego": head + "\tjson.match_schema({}, {\"$ref\": \"" + url + "\"})[0]\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "json.match_schema", why: "$ref reads local files and fetches URLs",
		},
		{
			name:  "json.verify_schema with a file $ref",
			files: map[string]string{"rules.rego": head + "\tjson.verify_schema({\"$ref\": \"file:///etc/hostname\"})[0]\n}\n", "rules_test.rego": test},
			file:  "rules.rego", row: 4, builtin: "json.verify_schema", why: "$ref reads local files",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			want := "policy " + filepath.Join(dir, tt.file) + ":" + strconv.Itoa(tt.row) + ": builtin " + tt.builtin + " is not allowed in healer policies"

			p, err := Load(t.Context(), dir)
			if n := hits.Swap(0); n != 0 {
				t.Errorf("loading the policy reached the server %d times", n)
			}
			if err == nil {
				t.Fatalf("Load succeeded (%v), want it refused", p.Files)
			}
			checkBuiltinError(t, "Load", err, want, tt.builtin, tt.why)

			src, err := ReadSource(dir)
			if err != nil {
				t.Fatal(err)
			}
			results, err := src.RunTests(t.Context(), TestOptions{})
			if err == nil {
				t.Fatalf("RunTests ran %d tests, want the policies refused", len(results))
			}
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Errorf("RunTests error %T, want a *CompileError", err)
			}
			checkBuiltinError(t, "RunTests", err, want, tt.builtin, tt.why)
			if n := hits.Load(); n != 0 {
				t.Errorf("running the tests reached the server %d times", n)
			}
		})
	}
}

func checkBuiltinError(t *testing.T, what string, err error, want, builtin, why string) {
	t.Helper()
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), why) {
		t.Errorf("%s error:\n%v\nwant it to contain %q and %q", what, err, want, why)
	}
	var be *BuiltinError
	if !errors.As(err, &be) || be.Builtin != builtin {
		t.Errorf("%s error does not hold a *BuiltinError for %s: %#v", what, builtin, be)
	}
}

// TestSandboxListsEveryUse checks that a file with several denied calls
// gets one line each, in order.
func TestSandboxListsEveryUse(t *testing.T) {
	dir := writeDir(t, map[string]string{"rules.rego": `package healer

decision := {"reason": opa.runtime().config.x} if {
	net.lookup_ip_addr("example.org")
	http.send({"method": "GET", "url": "http://localhost:1"})
}
`})
	_, err := Load(t.Context(), dir)
	if err == nil {
		t.Fatal("Load succeeded, want it refused")
	}
	var order []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		for _, b := range []string{"opa.runtime", "net.lookup_ip_addr", "http.send"} {
			if strings.Contains(line, "builtin "+b+" ") {
				order = append(order, b)
			}
		}
	}
	if strings.Join(order, " ") != "opa.runtime net.lookup_ip_addr http.send" {
		t.Errorf("builtins reported %v, want opa.runtime, net.lookup_ip_addr, http.send in that order; error:\n%v", order, err)
	}
}

// TestSandboxCapabilities checks the second line of defence on its own:
// the compiler healer uses refuses the denied builtins even for modules
// the check before it did not see, and no host is reachable.
func TestSandboxCapabilities(t *testing.T) {
	caps := sandboxCapabilities()
	if caps.AllowNet == nil || len(caps.AllowNet) != 0 {
		t.Errorf("allow_net %#v, want empty and not nil (nil allows every host)", caps.AllowNet)
	}
	allowed := map[string]bool{}
	for _, b := range caps.Builtins {
		allowed[b.Name] = true
	}
	for _, b := range ast.CapabilitiesForThisVersion().Builtins {
		if deniedBuiltin(b.Name) != "" && allowed[b.Name] {
			t.Errorf("denied builtin %s is in the capabilities", b.Name)
		}
	}
	for _, keep := range []string{"time.now_ns", "count", "sprintf", "time.parse_duration_ns", "startswith", "trace"} {
		if !allowed[keep] {
			t.Errorf("builtin %s is missing from the capabilities", keep)
		}
	}
	for _, call := range []string{`http.send({"method": "GET", "url": "http://localhost:1"})`, `opa.runtime()`, `net.lookup_ip_addr("x")`} {
		m := ast.MustParseModuleWithOpts("package p\n\nx := "+call+"\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
		c := ast.NewCompiler().WithCapabilities(caps)
		if c.Compile(map[string]*ast.Module{"p.rego": m}); !c.Failed() {
			t.Errorf("the sandbox compiler accepted %s", call)
		}
	}
}

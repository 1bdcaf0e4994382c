package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/healer/policies"
)

// runPolicy runs "healer policy args..." and returns its exit code and output.
func runPolicy(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = policyCmd(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// policyDir writes files (name → content) into a new temporary directory.
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	cliPolicy = `package healer

decision := {"remediator": "node.cordon", "reason": "cordon"} if input.event.type == "A"
`
	cliTestHeader = `package healer_test

import data.healer
`
	cliPassingTest = `
test_a_cordons if healer.decision.remediator == "node.cordon" with input as {"event": {"type": "A"}}
`
	cliFailingTest = `
test_a_reboots if healer.decision.remediator == "node.reboot" with input as {"event": {"type": "A"}}
`
	cliErroringTest = `
n := 1 if input.x

n := 2 if input.x

test_conflict if n with input as {"x": true}
`
	cliSkippedTest = `
todo_test_later if false
`
)

func TestPolicyTestCmd(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		args       []string // after the directory
		wantCode   int
		wantOut    []string
		notOut     []string
		wantStderr []string
	}{
		{
			name:     "all pass",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest},
			wantCode: 0,
			wantOut:  []string{"PASS: 1/1"},
			notOut:   []string{"test_a_cordons"},
		},
		{
			name:     "verbose lists passing tests",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest},
			args:     []string{"-v"},
			wantCode: 0,
			wantOut:  []string{"healer_test.rego:5:", "data.healer_test.test_a_cordons: PASS (", "PASS: 1/1"},
		},
		{
			name:     "a failing test",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest + cliFailingTest},
			wantCode: 2,
			wantOut:  []string{"healer_test.rego:7:", "data.healer_test.test_a_reboots: FAIL (", "PASS: 1/2", "FAIL: 1/2"},
			notOut:   []string{"test_a_cordons: PASS"},
		},
		{
			name:     "an erroring test",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliErroringTest},
			wantCode: 2,
			wantOut:  []string{"data.healer_test.test_conflict: ERROR (", "ERROR: 1/1"},
		},
		{
			name:     "a skipped test fails the run, as with opa",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest + cliSkippedTest},
			wantCode: 2,
			wantOut:  []string{"todo_test_later: SKIPPED", "SKIPPED: 1/2"},
		},
		{
			name:     "-z lets skipped tests pass",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest + cliSkippedTest},
			args:     []string{"-z"},
			wantCode: 0,
			wantOut:  []string{"PASS: 1/2", "SKIPPED: 1/2"},
		},
		{
			name:     "--run selects tests",
			files:    map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest + cliFailingTest},
			args:     []string{"--run", "test_a_cordons"},
			wantCode: 0,
			wantOut:  []string{"PASS: 1/1"},
		},
		{
			name:       "syntax error",
			files:      map[string]string{"healer.rego": "package healer\n\ndecision := {\n"},
			wantCode:   1,
			wantStderr: []string{"healer.rego:", "rego_parse_error"},
		},
		{
			name:       "compile error",
			files:      map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + "\ntest_x if healer.nope(1)\n"},
			wantCode:   1,
			wantStderr: []string{"healer_test.rego:5", "rego_type_error"},
		},
		{
			name: "tests pass but healer would refuse the policies",
			files: map[string]string{
				"lib.rego":         "package lib\n\nx := 1\n",
				"healer_test.rego": "package healer\n\ndecision := {\"reason\": \"r\"}\n\ntest_x if decision\n",
			},
			wantCode:   1,
			wantOut:    []string{"PASS: 1/1"},
			wantStderr: []string{"healer would refuse these policies", "no rule data.healer.decision"},
		},
		{
			name:       "no tests",
			files:      map[string]string{"healer.rego": cliPolicy},
			wantCode:   0,
			wantStderr: []string{"no tests in"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := policyDir(t, tt.files)
			code, out, errOut := runPolicy(t, append([]string{"test", dir}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, out)
				}
			}
			for _, not := range tt.notOut {
				if strings.Contains(out, not) {
					t.Errorf("stdout contains %q:\n%s", not, out)
				}
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, errOut)
				}
			}
		})
	}
}

func TestPolicyTestCmdDefaultPolicies(t *testing.T) {
	code, out, errOut := runPolicy(t, "test", filepath.Join("..", "..", "policies"))
	if code != 0 || !strings.Contains(out, "PASS: ") || strings.Contains(out, "FAIL") {
		t.Errorf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestPolicyEvalCmd(t *testing.T) {
	kernelDeadlock := filepath.Join("..", "..", "policies", "testdata", "kernel-deadlock.input.json")
	bareEvent := policyDir(t, map[string]string{"event.json": `{
		"specversion": "1.0", "id": "e-1", "source": "alertmanager", "type": "NodeNotReady",
		"subject": "node/worker-2", "time": "2025-06-01T10:00:00Z", "status": "firing", "key": "k"}`})
	custom := policyDir(t, map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliPassingTest})
	customInput := policyDir(t, map[string]string{"in.json": `{"event": {"specversion": "1.0", "id": "e-2",
		"source": "s", "type": "A", "subject": "node/a", "time": "2025-06-01T10:00:00Z", "status": "firing", "key": "k"}}`})

	tests := []struct {
		name       string
		args       []string
		want       *policies.Decision // the JSON decision on stdout
		wantOut    []string
		wantStderr []string
	}{
		{
			name: "full input document",
			args: []string{"--input", kernelDeadlock},
			want: &policies.Decision{
				Remediator: "node.cordon", Params: map[string]any{"reason": "NodeKernelDeadlock"},
				Approval:   policies.ApprovalNone,
				RateLimit:  &policies.RateLimit{Key: "node.cordon:node/worker-1", Max: 1, Per: 10 * time.Minute},
				RateLimits: []policies.RateLimit{{Key: "node.cordon:cluster", Max: 3, Per: time.Hour}},
				Reason:     "NodeKernelDeadlock on node/worker-1: cordon so no new pods land there",
				Rule:       "cordon_sick_node",
				Steps: []policies.Step{
					{Remediator: "node.cordon", Params: map[string]any{"reason": "NodeKernelDeadlock"}, Wait: 10 * time.Minute},
					{Remediator: "node.drain", Params: map[string]any{"reason": "NodeKernelDeadlock", "timeout": "10m"}, Wait: 30 * time.Minute},
				},
			},
		},
		{
			name: "pretty",
			args: []string{"--input", kernelDeadlock, "--format", "pretty"},
			wantOut: []string{
				"remediator:  node.cordon\n",
				"rate limit:  node.cordon:node/worker-1: at most 1 per 10m\n",
				"rate limit:  node.cordon:cluster: at most 3 per 1h\n",
				"reason:      NodeKernelDeadlock on node/worker-1: cordon so no new pods land there\n",
				"policy:      (embedded)@",
			},
		},
		{
			name: "bare event has an unknown budget",
			args: []string{"--input", filepath.Join(bareEvent, "event.json")},
			want: &policies.Decision{
				Approval: policies.ApprovalNone, Reason: "disruption budget unknown: doing nothing (fail closed)",
				Rule: "budget_unknown",
			},
			wantStderr: []string{"note: the input is a bare event", "budget is unknown"},
		},
		{
			name:       "policies from a directory",
			args:       []string{"--policies", custom, "--input", filepath.Join(customInput, "in.json")},
			want:       &policies.Decision{Remediator: "node.cordon", Approval: policies.ApprovalNone, Reason: "cordon"},
			wantStderr: []string{"note: the input has no context", "note: context.now is the current time"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runPolicy(t, append([]string{"eval"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if tt.want != nil {
				var got policies.Decision
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatalf("stdout is not a decision: %v\n%s", err, out)
				}
				if !reflect.DeepEqual(got, *tt.want) {
					t.Errorf("decision\n%s\nwant %+v", out, *tt.want)
				}
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, out)
				}
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, errOut)
				}
			}
		})
	}
}

// TestPolicyCmdsRefuseNetworkBuiltins runs test and eval on a policy that
// calls http.send (its test would make the call): both refuse it naming
// the file, line and builtin, and nothing reaches the server.
func TestPolicyCmdsRefuseNetworkBuiltins(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	dir := policyDir(t, map[string]string{
		"healer.rego": "package healer\n\ndecision := {\"remediator\": \"node.cordon\", \"reason\": \"cordon\"} if {\n" +
			"\thttp.send({\"method\": \"GET\", \"url\": \"" + srv.URL + "\"}).status_code == 200\n}\n",
		"healer_test.rego": cliTestHeader + "\ntest_cordons if healer.decision with input as {\"event\": {\"type\": \"A\"}}\n",
	})
	input := filepath.Join("..", "..", "policies", "testdata", "kernel-deadlock.input.json")
	want := filepath.Join(dir, "healer.rego") + ":4: builtin http.send is not allowed in healer policies (network)"
	for _, args := range [][]string{{"test", dir}, {"eval", "--policies", dir, "--input", input}} {
		t.Run(args[0], func(t *testing.T) {
			code, out, errOut := runPolicy(t, args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr does not contain %q:\n%s", want, errOut)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the policy reached the server %d times", n)
			}
		})
	}
}

func TestPolicyEvalCmdErrors(t *testing.T) {
	kernelDeadlock := filepath.Join("..", "..", "policies", "testdata", "kernel-deadlock.input.json")
	inputs := policyDir(t, map[string]string{
		"list.json":    `[1, 2]`,
		"neither.json": `{"kind": "Event"}`,
		"extra.json":   `{"event": {"type": "A"}, "contxt": {}}`,
		"typo.json":    `{"event": {"type": "A"}, "context": {"budget": {"know": true}}}`,
		"badtime.json": `{"event": {"type": "A"}, "context": {"now": "yesterday"}}`,
	})
	broken := policyDir(t, map[string]string{"healer.rego": "package healer\n\ndecision := {\n"})
	failing := policyDir(t, map[string]string{"healer.rego": cliPolicy, "healer_test.rego": cliTestHeader + cliFailingTest})
	badOutput := policyDir(t, map[string]string{"healer.rego": "package healer\n\ndecision := {\"reason\": \"r\", \"approval\": \"maybe\"}\n"})

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no --input", []string{}, 2, "--input is required"},
		{"bad format", []string{"--input", kernelDeadlock, "--format", "yaml"}, 2, `--format "yaml"`},
		{"extra argument", []string{"--input", kernelDeadlock, "more"}, 2, "unexpected arguments"},
		{"unknown flag", []string{"--inptu", kernelDeadlock}, 2, "flag provided but not defined"},
		{"missing input file", []string{"--input", filepath.Join(inputs, "nope.json")}, 1, "nope.json"},
		{"input not an object", []string{"--input", filepath.Join(inputs, "list.json")}, 1, "want a JSON object"},
		{"input neither document nor event", []string{"--input", filepath.Join(inputs, "neither.json")}, 1, "neither an input document"},
		{"unknown top-level field", []string{"--input", filepath.Join(inputs, "extra.json")}, 1, `unknown field "contxt"`},
		{"unknown context field", []string{"--input", filepath.Join(inputs, "typo.json")}, 1, `unknown field "know"`},
		{"bad time", []string{"--input", filepath.Join(inputs, "badtime.json")}, 1, "context:"},
		{"broken policy", []string{"--policies", broken, "--input", kernelDeadlock}, 1, "rego_parse_error"},
		{"policy failing its tests", []string{"--policies", failing, "--input", kernelDeadlock}, 1, "test data.healer_test.test_a_reboots"},
		{"decision out of contract", []string{"--policies", badOutput, "--input", kernelDeadlock}, 1, `approval "maybe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runPolicy(t, append([]string{"eval"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			if out != "" {
				t.Errorf("stdout not empty:\n%s", out)
			}
			if !strings.Contains(errOut, tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, errOut)
			}
		})
	}
}

func TestPolicyCmdUsage(t *testing.T) {
	dir := policyDir(t, map[string]string{"healer.rego": cliPolicy})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // on stdout, else on stderr
		wantErr  string
	}{
		{"no command", nil, 2, "", "Usage:"},
		{"unknown command", []string{"lint"}, 2, "", `unknown command "lint"`},
		{"help", []string{"help"}, 0, "healer policy test DIR", ""},
		{"test -h", []string{"test", "-h"}, 0, "", "Flags of healer policy test"},
		{"test without a directory", []string{"test"}, 2, "", "want one policy directory, got 0"},
		{"test with two directories", []string{"test", dir, dir}, 2, "", "want one policy directory, got 2"},
		{"test with an unknown flag", []string{"test", dir, "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"eval -h", []string{"eval", "-h"}, 0, "", "Flags of healer policy eval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runPolicy(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			if tt.wantOut != "" && !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout does not contain %q:\n%s", tt.wantOut, out)
			}
			if tt.wantErr != "" && !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantErr, errOut)
			}
		})
	}
}

func TestParsePolicyFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantPos []string
		wantV   bool
	}{
		{"flag first", []string{"-v", "dir"}, []string{"dir"}, true},
		{"flag after the directory", []string{"dir", "-v"}, []string{"dir"}, true},
		{"no flags", []string{"a", "b"}, []string{"a", "b"}, false},
		{"double dash", []string{"--", "-v"}, []string{"-v"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := policyFlagSet("x", &bytes.Buffer{})
			v := fs.Bool("v", false, "")
			pos, _, ok := parsePolicyFlags(fs, tt.args)
			if !ok {
				t.Fatal("parse failed")
			}
			if !reflect.DeepEqual(pos, tt.wantPos) || *v != tt.wantV {
				t.Errorf("positional %q, -v %v; want %q, %v", pos, *v, tt.wantPos, tt.wantV)
			}
		})
	}
}

package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

func TestLoadDefault(t *testing.T) {
	p, err := Load(context.Background(), "")
	if err != nil {
		t.Fatalf("Load(embedded): %v", err)
	}
	if want := []string{"healer.rego", "healer_test.rego"}; !reflect.DeepEqual(p.Files, want) {
		t.Errorf("Files = %q, want %q", p.Files, want)
	}

	// The embedded files are the ones beside this test.
	h := sha256.New()
	var tests int
	for _, name := range p.Files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(name + "\x00"))
		h.Write(b)
		tests += len(regexp.MustCompile(`(?m)^test_\w+ if`).FindAll(b, -1))
	}
	if want := "sha256:" + hex.EncodeToString(h.Sum(nil)); p.Revision != want {
		t.Errorf("Revision = %s, want %s", p.Revision, want)
	}
	if p.Tests != tests || tests == 0 {
		t.Errorf("Tests = %d, want the %d tests of healer_test.rego", p.Tests, tests)
	}
	if rev, err := Revision(""); err != nil || rev != p.Revision {
		t.Errorf("Revision(\"\") = %s, %v; want %s", rev, err, p.Revision)
	}
}

// ladder is the default policy's escalation for a problem reported by an alert.
func ladder(typ string) []Step {
	return []Step{
		{Remediator: "node.cordon", Params: map[string]any{"reason": typ}, Wait: 10 * time.Minute},
		{Remediator: "node.drain", Params: map[string]any{"reason": typ, "timeout": "10m"}, Wait: 30 * time.Minute},
	}
}

func TestDecideDefault(t *testing.T) {
	p, err := Load(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	cordonLimits := func(subject string) (*RateLimit, []RateLimit) {
		return &RateLimit{Key: "node.cordon:" + subject, Max: 1, Per: 10 * time.Minute},
			[]RateLimit{{Key: "node.cordon:cluster", Max: 3, Per: time.Hour}}
	}
	perNode, cluster := cordonLimits("node/worker-1")
	unknownBudget := input(nodeEvent("NodeKernelDeadlock", bus.StatusFiring, "node/worker-1"))
	unknownBudget.Context.Budget = Budget{}
	undoUnknownBudget := input(nodeEvent("NodeKernelDeadlock", bus.StatusResolved, "node/worker-1"))
	undoUnknownBudget.Context.Budget = Budget{}

	tests := []struct {
		name string
		in   *Input
		want Decision
	}{
		{
			name: "kernel deadlock cordons",
			in:   input(nodeEvent("NodeKernelDeadlock", bus.StatusFiring, "node/worker-1")),
			want: Decision{
				Remediator: "node.cordon", Params: map[string]any{"reason": "NodeKernelDeadlock"},
				Approval: ApprovalNone, RateLimit: perNode, RateLimits: cluster,
				Reason: "NodeKernelDeadlock on node/worker-1: cordon so no new pods land there",
				Rule:   "cordon_sick_node",
				Steps:  ladder("NodeKernelDeadlock"),
			},
		},
		{
			name: "read-only filesystem cordons",
			in:   input(nodeEvent("NodeReadonlyFilesystem", bus.StatusFiring, "node/worker-1")),
			want: Decision{
				Remediator: "node.cordon", Params: map[string]any{"reason": "NodeReadonlyFilesystem"},
				Approval: ApprovalNone, RateLimit: perNode, RateLimits: cluster,
				Reason: "NodeReadonlyFilesystem on node/worker-1: cordon so no new pods land there",
				Rule:   "cordon_sick_node",
				Steps:  ladder("NodeReadonlyFilesystem"),
			},
		},
		{
			name: "not ready cordons after re-checking the condition",
			in:   input(nodeEvent("NodeNotReady", bus.StatusFiring, "node/worker-1")),
			want: Decision{
				Remediator: "node.cordon",
				Params: map[string]any{
					"reason": "NodeNotReady", "condition": "Ready",
					"condition_status": []any{"False", "Unknown"},
				},
				Approval: ApprovalNone, RateLimit: perNode, RateLimits: cluster,
				Reason: "NodeNotReady on node/worker-1: cordon so no new pods land there",
				Rule:   "cordon_sick_node",
			},
		},
		{
			name: "resolved undoes the cordon without limits",
			in:   input(nodeEvent("NodeNotReady", bus.StatusResolved, "node/worker-1")),
			want: Decision{
				Remediator: "node.cordon", Params: map[string]any{"reason": "NodeNotReady"},
				Approval: ApprovalNone, Reason: "problem cleared: undo cordon", Rule: "uncordon_recovered_node",
			},
		},
		{
			name: "unknown budget does nothing",
			in:   unknownBudget,
			want: Decision{
				Approval: ApprovalNone, Reason: "disruption budget unknown: doing nothing (fail closed)",
				Rule: "budget_unknown",
			},
		},
		{
			name: "unknown budget still undoes",
			in:   undoUnknownBudget,
			want: Decision{
				Remediator: "node.cordon", Params: map[string]any{"reason": "NodeKernelDeadlock"},
				Approval: ApprovalNone, Reason: "problem cleared: undo cordon", Rule: "uncordon_recovered_node",
			},
		},
		{
			name: "other event type does nothing",
			in:   input(nodeEvent("EtcdMemberDown", bus.StatusFiring, "etcd/member-2")),
			want: Decision{Approval: ApprovalNone, Reason: `no rule for event type "EtcdMemberDown"`},
		},
		{
			name: "node problem without a node target does nothing",
			in:   input(nodeEvent("NodeKernelDeadlock", bus.StatusFiring, "pod/web-1")),
			want: Decision{
				Approval: ApprovalNone,
				Reason:   `NodeKernelDeadlock needs a node target (subject node/<name>), got subject "pod/web-1"`,
				Rule:     "missing_target",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide =\n%s\nwant\n%s", mustJSON(t, got), mustJSON(t, tt.want))
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// decidePolicy is a policy whose decision is whatever the event's data
// holds in "out", so that tests can feed it any output.
const decidePolicy = `package healer

decision := input.event.data.out if input.event.type == "Echo"
`

func TestDecideContract(t *testing.T) {
	p := loadDir(t, map[string]string{"healer.rego": decidePolicy})

	tests := []struct {
		name    string
		out     string // JSON of the decision; "" leaves it undefined
		want    Decision
		wantErr string
	}{
		{name: "undefined", want: Decision{Approval: ApprovalNone, Reason: NoRuleMatched}},
		{
			name: "everything",
			out: `{"remediator": "node.cordon", "params": {"n": 3, "l": ["a"], "o": {"x": null}, "b": true},
				"approval": "two", "rate_limit": {"key": "k", "max": 2, "per": 600},
				"rate_limits": [{"key": "c", "max": 5, "per": "1h30m"}], "dry_run": true,
				"reason": "why", "rule": "r"}`,
			want: Decision{
				Remediator: "node.cordon",
				Params:     map[string]any{"n": 3.0, "l": []any{"a"}, "o": map[string]any{"x": nil}, "b": true},
				Approval:   ApprovalTwo, RateLimit: &RateLimit{Key: "k", Max: 2, Per: 10 * time.Minute},
				RateLimits: []RateLimit{{Key: "c", Max: 5, Per: 90 * time.Minute}},
				DryRun:     true, Reason: "why", Rule: "r",
			},
		},
		{name: "approval defaults to none", out: `{"reason": "r"}`, want: Decision{Approval: ApprovalNone, Reason: "r"}},
		{name: "not an object", out: `"cordon"`, wantErr: "decision: want an object, got string"},
		{name: "remediator not a string", out: `{"remediator": 1, "reason": "r"}`, wantErr: "remediator: want a string, got number"},
		{name: "number out of range", out: `{"params": {"l": [1, 1e400]}, "reason": "r"}`, wantErr: "params.l[1]: number 1e400 out of range"},
		{name: "params not an object", out: `{"params": [1], "reason": "r"}`, wantErr: "params: want an object, got array"},
		{name: "bad approval", out: `{"approval": "maybe", "reason": "r"}`, wantErr: `approval "maybe"`},
		{name: "missing reason", out: `{"remediator": "x"}`, wantErr: "reason: missing"},
		{name: "blank reason", out: `{"reason": "  "}`, wantErr: "reason: missing"},
		{name: "misspelt field", out: `{"ratelimit": {}, "reason": "r"}`, wantErr: `unknown field "ratelimit"`},
		{name: "dry_run not a bool", out: `{"dry_run": "yes", "reason": "r"}`, wantErr: "dry_run: want a boolean"},
		{name: "zero max", out: `{"rate_limit": {"key": "k", "max": 0, "per": "1m"}, "reason": "r"}`, wantErr: "rate_limit: rate limit \"k\": max 0"},
		{name: "fractional max", out: `{"rate_limit": {"key": "k", "max": 1.5, "per": "1m"}, "reason": "r"}`, wantErr: "rate_limit.max: want a whole number, got 1.5"},
		{name: "bad per", out: `{"rate_limit": {"key": "k", "max": 1, "per": "soon"}, "reason": "r"}`, wantErr: "rate_limit.per"},
		{name: "missing per", out: `{"rate_limit": {"key": "k", "max": 1}, "reason": "r"}`, wantErr: "per 0s: want more than 0"},
		{name: "missing key", out: `{"rate_limits": [{"key": "a", "max": 1, "per": "1m"}, {"max": 1, "per": "1m"}], "reason": "r"}`, wantErr: "rate_limits[1]: rate limit \"\": key: missing"},
		{name: "limit field unknown", out: `{"rate_limits": [{"key": "a", "max": 1, "every": "1m"}], "reason": "r"}`, wantErr: `rate_limits[0]: unknown field "every"`},
		{name: "rate_limits not an array", out: `{"rate_limits": {"key": "a"}, "reason": "r"}`, wantErr: "rate_limits: want an array, got object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := nodeEvent("Echo", bus.StatusFiring, "node/worker-1")
			if tt.out != "" {
				e.Data = json.RawMessage(`{"out": ` + tt.out + `}`)
			}
			got, err := p.Decide(context.Background(), input(e))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decide error = %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), e.ID) {
					t.Errorf("error %q does not name event %q", err, e.ID)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestDecideRegoValues(t *testing.T) {
	// Values that only Rego can produce: sets become sorted arrays, and a
	// set of rate limits is accepted like an array.
	p := loadDir(t, map[string]string{"healer.rego": `package healer

decision := {
	"remediator": "x",
	"params": {"s": {"b", "a"}},
	"rate_limits": {{"key": "k", "max": 1, "per": "1m"}},
	"reason": sprintf("%d", [count(input.context.recent_actions)]),
}
`})
	got, err := p.Decide(context.Background(), input(nodeEvent("Any", bus.StatusFiring, "node/a")))
	if err != nil {
		t.Fatal(err)
	}
	want := Decision{
		Remediator: "x", Params: map[string]any{"s": []any{"a", "b"}}, Approval: ApprovalNone,
		RateLimits: []RateLimit{{Key: "k", Max: 1, Per: time.Minute}}, Reason: "0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Decide = %#v, want %#v", got, want)
	}
}

// echoPolicy hands the whole input back as params.
const echoPolicy = `package healer

decision := {"reason": "echo", "params": input}
`

func TestDecideInputDocument(t *testing.T) {
	p := loadDir(t, map[string]string{"healer.rego": echoPolicy})
	full := input(nodeEvent("NodeKernelDeadlock", bus.StatusFiring, "node/worker-1"))
	full.Context.Now = time.Date(2025, 6, 1, 10, 14, 4, 123456789, time.FixedZone("CEST", 2*3600))
	full.Context.RecentActions = []RecentAction{
		{Remediator: "node.cordon", Target: "node/worker-7", Time: testTime().Add(-time.Hour), Result: "finished"},
		{Remediator: "node.cordon", Target: "node/worker-8", Time: testTime().Add(-2 * time.Hour), Result: "failed"},
	}
	bare := &Input{Event: &bus.Event{Type: "T"}}
	bigData := input(nodeEvent("T", bus.StatusFiring, "node/a"))
	bigData.Event.Data = json.RawMessage(`[1, 2.5, 12345678901234567890, "x", null, {"k": [true]}]`)
	nullData := input(nodeEvent("T", bus.StatusFiring, "node/a"))
	nullData.Event.Data = json.RawMessage(`null`)

	tests := []struct {
		name string
		in   *Input
	}{
		{"full", full},
		{"zero values", bare},
		{"data not an object", bigData},
		{"null data", nullData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The contract: the document json.Marshal(input) describes.
			b, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var want map[string]any
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			got, err := p.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if !reflect.DeepEqual(got.Params, want) {
				t.Errorf("policy saw\n%s\nwant\n%s", mustJSON(t, got.Params), b)
			}
		})
	}
}

func TestDecideTimeIsContextNow(t *testing.T) {
	p := loadDir(t, map[string]string{"healer.rego": `package healer

decision := {"reason": format_int(time.now_ns(), 10)}
`})
	d, err := p.Decide(context.Background(), input(nodeEvent("T", bus.StatusFiring, "node/a")))
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.FormatInt(testTime().UnixNano(), 10); d.Reason != want {
		t.Errorf("time.now_ns() = %s, want context.now %s", d.Reason, want)
	}
}

func TestDecideErrors(t *testing.T) {
	p := loadDir(t, map[string]string{"healer.rego": echoPolicy})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	badData := input(nodeEvent("T", bus.StatusFiring, "node/a"))
	badData.Event.Data = json.RawMessage(`{"severity": `)

	tests := []struct {
		name    string
		ctx     context.Context
		in      *Input
		wantErr string
	}{
		{"nil input", context.Background(), nil, "no event"},
		{"no event", context.Background(), &Input{}, "no event"},
		{"bad data", context.Background(), badData, `event "e-T-firing": data:`},
		{"canceled", canceled, input(nodeEvent("T", bus.StatusFiring, "node/a")), "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Decide(tt.ctx, tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decide error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecideStopsWhenContextEnds(t *testing.T) {
	// Nine million iterations take seconds; the deadline must cut them short.
	p := loadDir(t, map[string]string{"healer.rego": `package healer

decision := {"reason": sprintf("%d", [count([1 |
	some i in numbers.range(1, 3000)
	some j in numbers.range(1, 3000)
	i == j + 5000
])])}
`})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Decide(ctx, input(nodeEvent("T", bus.StatusFiring, "node/a")))
	if err == nil {
		t.Fatal("Decide succeeded, want it cancelled")
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Decide took %s after a 50ms deadline", elapsed)
	}
}

func TestDecideConcurrently(t *testing.T) {
	p, err := Load(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	types := []string{"NodeKernelDeadlock", "NodeReadonlyFilesystem", "NodeNotReady", "Other"}
	var wg sync.WaitGroup
	errs := make(chan error, len(types)*50)
	for i := range len(types) * 50 {
		wg.Go(func() {
			typ := types[i%len(types)]
			d, err := p.Decide(context.Background(), input(nodeEvent(typ, bus.StatusFiring, "node/w"+strconv.Itoa(i))))
			switch {
			case err != nil:
				errs <- err
			case typ != "Other" && d.RateLimit.Key != "node.cordon:node/w"+strconv.Itoa(i):
				errs <- errors.New("decision for node/w" + strconv.Itoa(i) + " has limit " + d.RateLimit.Key)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// goodPolicy is a minimal policy with a passing test.
const goodPolicy = `package healer

decision := {"remediator": "node.cordon", "reason": "r"} if input.event.type == "A"
`

const goodTest = `package healer_test

import data.healer

test_a if healer.decision.remediator == "node.cordon" with input as {"event": {"type": "A"}}
`

func TestLoadRefuses(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr []string
	}{
		{
			name:    "syntax error",
			files:   map[string]string{"healer.rego": goodPolicy, "broken.rego": "package healer\n\nx := {\n"},
			wantErr: []string{"broken.rego:", "rego_parse_error"},
		},
		{
			name:    "compile error",
			files:   map[string]string{"healer.rego": "package healer\n\ndecision := {\"reason\": y}\n"},
			wantErr: []string{"healer.rego:3", "var y is unsafe"},
		},
		{
			name: "failing test",
			files: map[string]string{"healer.rego": goodPolicy, "healer_test.rego": goodTest + `
test_b if healer.decision.remediator == "node.reboot" with input as {"event": {"type": "A"}}
`},
			wantErr: []string{"refused", "test data.healer_test.test_b", "healer_test.rego:7) failed"},
		},
		{
			name: "erroring test",
			files: map[string]string{"healer.rego": goodPolicy + "\nn := 1 if input.x\n\nn := 2 if input.x\n", "healer_test.rego": goodTest + `
test_conflict if healer.n with input as {"x": true}
`},
			wantErr: []string{"test data.healer_test.test_conflict", "error:", "eval_conflict_error"},
		},
		{
			name:    "no decision rule",
			files:   map[string]string{"healer.rego": "package healer\n\nallow := true\n"},
			wantErr: []string{"no rule data.healer.decision"},
		},
		{
			name: "decision only in a test file",
			files: map[string]string{
				"lib.rego":         "package lib\n\nx := 1\n",
				"healer_test.rego": "package healer\n\ndecision := {\"reason\": \"r\"}\n\ntest_x if decision\n",
			},
			wantErr: []string{"no rule data.healer.decision outside the _test.rego files"},
		},
		{
			name:    "no rego files",
			files:   map[string]string{"README.md": "policies go here"},
			wantErr: []string{"no .rego files"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			p, err := Load(context.Background(), dir)
			if err == nil {
				t.Fatalf("Load succeeded (%v), want an error", p.Files)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Load error %q does not contain %q", err, want)
				}
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("Load error %q does not name the directory", err)
			}
		})
	}
}

func TestLoadAcceptsPassingAndSkippedTests(t *testing.T) {
	p := loadDir(t, map[string]string{
		"healer.rego": goodPolicy,
		"healer_test.rego": goodTest + `
todo_test_later if false
`,
	})
	if p.Tests != 1 {
		t.Errorf("Tests = %d, want 1", p.Tests)
	}
	d, err := p.Decide(context.Background(), input(nodeEvent("A", bus.StatusFiring, "node/a")))
	if err != nil || d.Remediator != "node.cordon" {
		t.Errorf("Decide = %+v, %v; want node.cordon", d, err)
	}
}

func TestLoadMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Load(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Load error = %v, want one naming %s", err, dir)
	}
}

func TestLoadConfigMapLayout(t *testing.T) {
	// A ConfigMap volume: the files are links into ..data, a link to a
	// timestamped directory. Hidden files and subdirectories are ignored.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"..2025_06_01/healer.rego":      goodPolicy,
		"..2025_06_01/healer_test.rego": goodTest,
		"sub/ignored.rego":              "this is not rego",
		".scratch.rego":                 "neither is this",
	})
	links := map[string]string{
		"..data":           "..2025_06_01",
		"healer.rego":      "..data/healer.rego",
		"healer_test.rego": "..data/healer_test.rego",
		".#healer.rego":    "user@host.1234", // an editor lock file, dangling
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	p, err := Load(context.Background(), dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := []string{"healer.rego", "healer_test.rego"}; !reflect.DeepEqual(p.Files, want) {
		t.Errorf("Files = %q, want %q", p.Files, want)
	}
	if p.Tests != 1 {
		t.Errorf("Tests = %d, want 1", p.Tests)
	}
}

func TestRevision(t *testing.T) {
	base := map[string]string{"healer.rego": goodPolicy, "healer_test.rego": goodTest}
	rev := func(files map[string]string) string {
		t.Helper()
		r, err := Revision(writeDir(t, files))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	want := rev(base)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(want) {
		t.Fatalf("Revision = %q, want sha256:<64 hex digits>", want)
	}
	tests := []struct {
		name  string
		files map[string]string
		same  bool
	}{
		{"same files", map[string]string{"healer.rego": goodPolicy, "healer_test.rego": goodTest}, true},
		{"other files ignored", map[string]string{"healer.rego": goodPolicy, "healer_test.rego": goodTest, "notes.txt": "x"}, true},
		{"content changed", map[string]string{"healer.rego": goodPolicy + "\n", "healer_test.rego": goodTest}, false},
		{"file renamed", map[string]string{"main.rego": goodPolicy, "healer_test.rego": goodTest}, false},
		{"file added", map[string]string{"healer.rego": goodPolicy, "healer_test.rego": goodTest, "x.rego": "package x\n"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rev(tt.files); (got == want) != tt.same {
				t.Errorf("Revision = %s, base %s; want same = %v", got, want, tt.same)
			}
		})
	}
}

func TestRunTests(t *testing.T) {
	src, err := ReadSource(writeDir(t, map[string]string{
		"healer.rego": goodPolicy,
		"healer_test.rego": goodTest + `
test_b if {
	print("checking b")
	healer.decision.remediator == "node.reboot" with input as {"event": {"type": "A"}}
}

todo_test_c if false
`,
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts TestOptions
		want []string // name: outcome, in order
	}{
		{"all", TestOptions{}, []string{"test_a: PASS", "test_b: FAIL", "todo_test_c: SKIPPED"}},
		{"filtered", TestOptions{Run: "test_b"}, []string{"test_b: FAIL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			results, err := src.RunTests(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range results {
				outcome := "PASS"
				switch {
				case r.Skip:
					outcome = "SKIPPED"
				case r.Fail:
					outcome = "FAIL"
				}
				got = append(got, r.Name+": "+outcome)
				if r.Name == "test_b" && !strings.Contains(string(r.Output), "checking b") {
					t.Errorf("test_b output %q, want the print() output", r.Output)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("results = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRunTestsCompileError(t *testing.T) {
	src, err := ReadSource(writeDir(t, map[string]string{
		"healer.rego":      goodPolicy,
		"healer_test.rego": "package healer_test\n\ntest_x if data.healer.nope(1)\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.RunTests(context.Background(), TestOptions{})
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("RunTests error = %v, want a *CompileError", err)
	}
	if !strings.Contains(err.Error(), "healer_test.rego:3") {
		t.Errorf("error %q does not name the file and line", err)
	}
}

func TestHolder(t *testing.T) {
	first, second := &Policy{Revision: "sha256:1"}, &Policy{Revision: "sha256:2"}
	h := NewHolder(first)
	if h.Current() != first {
		t.Fatalf("Current = %v, want the first policy", h.Current())
	}
	h.Set(second)
	if h.Current() != second {
		t.Fatalf("Current = %v after Set, want the second policy", h.Current())
	}
	if NewHolder(nil).Current() != nil {
		t.Error("empty Holder has a policy")
	}
}

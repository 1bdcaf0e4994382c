package policies

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/selfheal/healer/bus"
)

func TestInputUse(t *testing.T) {
	tests := []struct {
		name string
		rule string // the body of decision := {"reason": "r"} if { ... }
		want inputUse
	}{
		{"envelope only", `input.event.type == "A"`, inputUse{}},
		{"budget only", `input.context.budget.known`, inputUse{}},
		{"data field", `input.event.data.severity == "critical"`, inputUse{data: true, dataKeys: map[string]bool{"severity": true}}},
		{"two data fields", `input.event.data.severity == "critical"; input.event.data.labels.node != ""`, inputUse{data: true, dataKeys: map[string]bool{"severity": true, "labels": true}}},
		{"data with a bracket", `input.event["data"].severity == "critical"`, inputUse{data: true, dataKeys: map[string]bool{"severity": true}}},
		{"data with a variable key", `some k; input.event.data[k] == "critical"`, inputUse{data: true}},
		{"data and a field", `input.event.data.severity == "critical"; count(input.event.data) > 1`, inputUse{data: true}},
		{"whole event", `e := input.event; e.data.severity == "critical"`, inputUse{data: true}},
		{"event with a variable key", `some k; input.event[k] == "critical"`, inputUse{data: true}},
		{"event passed to a function", `object.get(input.event, "data", {}) != {}`, inputUse{data: true}},
		{"recent actions", `count(input.context.recent_actions) > 0`, inputUse{recentActions: true}},
		{"whole context", `c := input.context; count(c.recent_actions) > 0`, inputUse{recentActions: true}},
		{"whole input", `walk(input, [p, v]); v == "x"`, inputUse{data: true, recentActions: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadDir(t, map[string]string{"healer.rego": "package healer\n\ndecision := {\"reason\": \"r\"} if {\n\t" + tt.rule + "\n}\n"})
			if !reflect.DeepEqual(p.input.use, tt.want) {
				t.Errorf("use = %+v, want %+v", p.input.use, tt.want)
			}
		})
	}
}

func TestInputUseInHelperRules(t *testing.T) {
	// A reference in any rule counts, not only in decision.
	p := loadDir(t, map[string]string{
		"healer.rego": "package healer\n\ndecision := {\"reason\": severity}\n",
		"lib.rego":    "package healer\n\nseverity := input.event.data.severity\n",
	})
	if !p.input.use.data {
		t.Fatal("data not built for a policy that reads it in a helper rule")
	}
	e := nodeEvent("T", bus.StatusFiring, "node/a")
	d, err := p.Decide(context.Background(), input(e))
	if err != nil || d.Reason != "critical" {
		t.Errorf("Decide = %+v, %v; want reason critical from the data", d, err)
	}
}

func TestDecideSkipsUnreadData(t *testing.T) {
	// A policy that does not read event data does not get it parsed: a
	// decision then costs the same however large the data is.
	p := loadDir(t, map[string]string{
		"healer.rego": "package healer\n\ndecision := {\"remediator\": \"node.cordon\", \"reason\": input.event.type}\n",
	})
	if p.input.use.data {
		t.Fatal("a policy that never reads input.event.data is thought to read it")
	}
	e := nodeEvent("NodeKernelDeadlock", bus.StatusFiring, "node/worker-1")
	e.Data = json.RawMessage(`{"not parsed": `)
	if d, err := p.Decide(context.Background(), input(e)); err != nil || d.Remediator != "node.cordon" {
		t.Errorf("Decide = %+v, %v; want node.cordon", d, err)
	}
	// The default policy reads it (the daemon to restart is in the data).
	def, err := Load(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !def.input.use.data {
		t.Fatal("the default policy reads input.event.data.source, but data is not built")
	}
}

func TestBudgetTermReused(t *testing.T) {
	b := newInputBuilder(nil)
	first := b.budgetTerm(knownBudget())
	if again := b.budgetTerm(knownBudget()); again != first {
		t.Error("same budget built again")
	}
	other := knownBudget()
	other.InFlight = 1
	if b.budgetTerm(other) == first {
		t.Error("changed budget reused the old term")
	}
}

func TestDecideConvertsOnlyTheDataKeysRead(t *testing.T) {
	p := loadDir(t, map[string]string{
		"healer.rego": "package healer\n\ndecision := {\"reason\": sprintf(\"%v %v\", [input.event.data.source, object.get(input.event.data, \"labels\", \"none\")])} if { input.event.data.source }\n",
	})
	e := nodeEvent("T", bus.StatusFiring, "node/a")
	e.Data = json.RawMessage(`{"source": "kubelet", "labels": {"a": "b"}}`)
	d, err := p.Decide(context.Background(), input(e))
	if err != nil || d.Reason != `kubelet {"a": "b"}` {
		t.Errorf("a policy reading data whole and by key: %+v %v", d, err)
	}
	q := loadDir(t, map[string]string{
		"healer.rego": "package healer\n\ndecision := {\"reason\": sprintf(\"%v\", [input.event.data.source])} if { true }\n",
	})
	e.Data = json.RawMessage(`{"source": "kubelet", "stack": ["not", "converted"]}`)
	d, err = q.Decide(context.Background(), input(e))
	if err != nil || d.Reason != "kubelet" {
		t.Errorf("a policy reading one key: %+v %v", d, err)
	}
}

package policies

import (
	"testing"
	"time"
)

func TestCompare(t *testing.T) {
	cordon := Decision{Remediator: "node.cordon", Params: map[string]any{"reason": "KernelDeadlock"}, Approval: ApprovalNone, Reason: "r"}
	with := func(f func(*Decision)) Decision {
		d := cordon
		d.Params = map[string]any{"reason": "KernelDeadlock"}
		f(&d)
		return d
	}
	nothing := Decision{Reason: "no policy rule matched"}
	for name, tc := range map[string]struct {
		then, now Decision
		want      string
	}{
		"same":             {cordon, with(func(d *Decision) { d.Reason, d.Rule = "other words", "renamed" }), ChangeSame},
		"both nothing":     {nothing, Decision{Reason: "other"}, ChangeSame},
		"approval unset":   {with(func(d *Decision) { d.Approval = "" }), cordon, ChangeSame},
		"more":             {nothing, cordon, ChangeMore},
		"less":             {cordon, nothing, ChangeLess},
		"dry-run now":      {cordon, with(func(d *Decision) { d.DryRun = true }), ChangeLess},
		"dry-run then":     {with(func(d *Decision) { d.DryRun = true }), cordon, ChangeMore},
		"other remediator": {cordon, with(func(d *Decision) { d.Remediator = "node.drain" }), ChangeDifferent},
		"other params":     {cordon, with(func(d *Decision) { d.Params["reason"] = "x" }), ChangeDifferent},
		"approval":         {cordon, with(func(d *Decision) { d.Approval = ApprovalTwo }), ChangeDifferent},
		"rate limit":       {cordon, with(func(d *Decision) { d.RateLimit = &RateLimit{Key: "k", Max: 1, Per: time.Hour} }), ChangeDifferent},
		"ladder": {cordon, with(func(d *Decision) {
			d.Steps = []Step{{Remediator: "node.cordon"}, {Remediator: "node.drain", Wait: time.Minute}}
		}), ChangeDifferent},
		"numbers from JSON": {with(func(d *Decision) { d.Params["grace"] = float64(30) }), with(func(d *Decision) { d.Params["grace"] = 30 }), ChangeSame},
	} {
		if got := Compare(tc.then, tc.now); got != tc.want {
			t.Errorf("%s: Compare = %q, want %q", name, got, tc.want)
		}
	}
}

// A candidate that leaves canary nodes alone and asks approval elsewhere,
// replayed over what the built-in policy decided.
func TestReplay(t *testing.T) {
	cand := loadDir(t, map[string]string{"candidate.rego": `package healer

import rego.v1

decision := {"remediator": "node.cordon", "params": {"reason": input.event.type}, "approval": "two", "reason": "cordon, with approval"} if {
	input.event.type == "NodeKernelDeadlock"
	not startswith(input.event.subject, "node/canary-")
	input.context.budget.available > 0
}
`})
	live, err := Load(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	var sum ReplaySummary
	for _, node := range []string{"node/worker-1", "node/canary-1"} {
		ev := nodeEvent("NodeKernelDeadlock", "firing", node)
		then, err := live.Decide(t.Context(), input(ev))
		if err != nil {
			t.Fatal(err)
		}
		r := cand.Replay(t.Context(), Recorded{Event: ev, Time: testTime(), Budget: knownBudget(), Decision: then, Revision: live.Revision})
		sum.Add(r)
		switch node {
		case "node/worker-1":
			if r.Change != ChangeDifferent || r.Now.Approval != ApprovalTwo || r.Then.Remediator != "node.cordon" {
				t.Errorf("worker-1: %+v", r)
			}
		case "node/canary-1":
			if r.Change != ChangeLess || r.Now.Remediator != "" {
				t.Errorf("canary-1: %+v", r)
			}
		}
	}
	// The recorded budget is the one decided with: none left, no action.
	ev := nodeEvent("NodeKernelDeadlock", "firing", "node/worker-2")
	r := cand.Replay(t.Context(), Recorded{Event: ev, Time: testTime(), Budget: Budget{Known: true, TotalNodes: 10, Allowed: 1, OutOfService: 1}, Decision: Decision{Reason: "budget exhausted"}})
	sum.Add(r)
	if r.Change != ChangeSame {
		t.Errorf("worker-2 without budget: %+v", r)
	}
	if sum != (ReplaySummary{Events: 3, Same: 1, Less: 1, Different: 1}) {
		t.Fatalf("summary = %+v", sum)
	}
}

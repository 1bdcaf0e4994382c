package engine

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

func TestActionPhaseTransitions(t *testing.T) {
	all := []actionPhase{actionNew, actionClaimed, actionStarted, actionFinished, actionFailed}
	allowed := map[actionPhase][]actionPhase{
		actionNew:      {actionClaimed},
		actionClaimed:  {actionStarted, actionNew, actionFailed},
		actionStarted:  {actionFinished, actionFailed},
		actionFinished: nil,
		actionFailed:   nil,
	}
	for _, from := range all {
		for _, to := range all {
			if got, want := from.next(to), slices.Contains(allowed[from], to); got != want {
				t.Errorf("%q -> %q: allowed %v, want %v", from, to, got, want)
			}
		}
	}
	for _, p := range all {
		if p.open() && p.done() {
			t.Errorf("%q both open and done", p)
		}
	}
	r := &run{stepRun: stepRun{actionID: "a1", state: actionFinished}}
	if err := r.advance(actionStarted); err == nil || r.state != actionFinished {
		t.Errorf("finished -> started: %v, state %q; want refused, unchanged", err, r.state)
	}
}

// An action state no engine writes is not acted on: the event is given
// up on, audited.
func TestUnknownActionStateIsNotActedOn(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	e := event("Count", "node/u1", bus.StatusFiring)
	if err := putJSON(t.Context(), h.streams.Actions, eventKey(e.ID), eventState{State: "received", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := putJSON(t.Context(), h.streams.Actions, idempotencyKey(e.ID, "test.count", e.Subject),
		actionState{ActionID: "act-odd", State: "resuming", Step: "act", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "decision", "suppressed")
	if r := detail(recs[1], "reason"); !strings.Contains(r, `unknown state "resuming"`) {
		t.Errorf("suppressed for %q, want the unknown state named", r)
	}
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Fatalf("acted %d times, want 0", acts)
	}
}

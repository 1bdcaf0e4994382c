package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine/guard"
)

// withPauses restarts the harness's engine with pauses, and returns them.
func (h *harness) withPauses() *guard.Pauses {
	h.t.Helper()
	h.stop()
	kv, err := guard.EnsurePauseBucket(h.t.Context(), h.js, 1)
	if err != nil {
		h.t.Fatal(err)
	}
	ps := guard.NewPauses(kv, h.eng.Log)
	ctx, cancel := context.WithCancel(h.t.Context())
	h.t.Cleanup(cancel)
	go ps.Run(ctx)
	if err := ps.WaitSynced(h.t.Context(), 5*time.Second); err != nil {
		h.t.Fatal(err)
	}
	h.eng.Pauses = ps
	h.start()
	return ps
}

// redrives returns the audit records of the re-drives of event e.
func (h *harness) redriveRecords(e *bus.Event) []audit.Record {
	h.t.Helper()
	recs, err := h.trail.Query(h.t.Context(), audit.Filter{Target: e.Subject, Limit: 1000})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []audit.Record
	for _, r := range recs {
		if strings.HasPrefix(r.EventID, e.ID+"~rd") {
			out = append(out, r)
		}
	}
	return out
}

// waitRedriven waits for a re-drive of e to end with the kinds want.
func (h *harness) waitRedriven(e *bus.Event, within time.Duration, want ...string) []audit.Record {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		recs := h.redriveRecords(e)
		if got := kinds(recs); strings.HasSuffix(strings.Join(got, ","), strings.Join(want, ",")) {
			return recs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("re-drives of %s: kinds %v, want them to end with %v", e.ID, kinds(recs), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdBackByRate acts on first, and has the brief rate limit this spends
// hold back the same problem type on second; it returns the held event and
// its records.
func (h *harness) holdBackByRate(first, second string) (*bus.Event, []audit.Record) {
	h.t.Helper()
	a, b := event("Brief", first, bus.StatusFiring), event("Brief", second, bus.StatusFiring)
	h.publish(a, a.ID)
	h.waitKinds(a.ID, "event", "decision", "action.started", "action.finished", "verified")
	h.publish(b, b.ID)
	return b, h.waitKinds(b.ID, "event", "decision", "suppressed")
}

func kinds(recs []audit.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Kind)
	}
	return out
}

func (h *harness) problem(e *bus.Event) *Problem {
	h.t.Helper()
	p, _, err := h.eng.problems.read(h.t.Context(), problemKey(e.Subject, e.ProblemID()))
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// A problem a rate limit held back is acted on once the window has passed,
// without any new event: before, it was suppressed and forgotten.
func TestRateLimitedProblemIsRedrivenWhenTheWindowPasses(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	held, recs := h.holdBackByRate("node/r1", "node/r2")
	if r := detail(recs[2], "reason"); !strings.HasPrefix(r, "held back: rate limit brief reached") || !strings.Contains(r, "re-driven at") {
		t.Errorf("suppressed for %q, want what it waits for and until when", r)
	}
	if k := detail(recs[2], "held_by"); k != "rate_limit" {
		t.Errorf("held_by = %s", k)
	}
	if p := h.problem(held); p == nil || p.Phase != PhaseHeld || p.Hold.Kind != HoldRate || p.Hold.Until.IsZero() {
		t.Fatalf("open problem = %+v, want held by the rate limit until a known time", p)
	}
	h.waitRedriven(held, 6*time.Second, "event", "decision", "action.started", "action.finished", "verified")
	if acts, _ := h.rem.counts(); acts != 2 {
		t.Fatalf("acted %d times, want 2 (the held one once, when re-driven)", acts)
	}
	if p := h.problem(held); p == nil || p.Phase != PhaseActed || !p.Acted || p.Hold != nil {
		t.Fatalf("open problem after the re-drive = %+v, want acted", p)
	}
}

// A problem that clears while it is held back is closed with a record and
// never acted on, even once its hold has cleared.
func TestProblemResolvedWhileHeldIsClosedNotActed(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	held, _ := h.holdBackByRate("node/c1", "node/c2")
	cleared := event("Brief", "node/c2", bus.StatusResolved)
	h.publish(cleared, cleared.ID)
	recs := h.waitKinds(cleared.ID, "event", "problem.closed")
	if k := detail(recs[1], "held_by"); k != "rate_limit" {
		t.Errorf("closed record says held by %s, want the rate limit", k)
	}
	if p := h.problem(held); p != nil {
		t.Fatalf("problem still open: %+v", p)
	}
	time.Sleep(3 * time.Second) // past the window
	if acts, undos := h.rem.counts(); acts != 1 || undos != 0 {
		t.Fatalf("acts=%d undos=%d, want the first problem's act alone", acts, undos)
	}
	if recs := h.redriveRecords(held); len(recs) != 0 {
		t.Fatalf("a closed problem was re-driven: %v", kinds(recs))
	}
}

// A pause holds problems back; clearing it re-drives them, and an undo the
// pause held back (the problem cleared meanwhile) runs after it.
func TestPauseHoldsProblemsUntilCleared(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	ps := h.withPauses()
	acted := event("Count", "node/p1", bus.StatusFiring)
	h.publish(acted, acted.ID)
	h.waitKinds(acted.ID, "event", "decision", "action.started", "action.finished", "verified")

	kill := &guard.Pause{ID: "pause-test", Reason: "storm", By: "alice", Created: time.Now()}
	if err := ps.Set(t.Context(), kill); err != nil {
		t.Fatal(err)
	}
	waiting := event("Count", "node/p2", bus.StatusFiring)
	h.publish(waiting, waiting.ID)
	recs := h.waitKinds(waiting.ID, "event", "decision", "suppressed")
	if r := detail(recs[2], "reason"); !strings.HasPrefix(r, "held back: paused") {
		t.Errorf("suppressed for %q", r)
	}
	recovered := event("Count", "node/p1", bus.StatusResolved)
	h.publish(recovered, recovered.ID)
	h.waitKinds(recovered.ID, "event", "decision", "suppressed")
	time.Sleep(time.Second)
	if acts, undos := h.rem.counts(); acts != 1 || undos != 0 {
		t.Fatalf("acts=%d undos=%d during the pause", acts, undos)
	}
	if _, err := ps.Clear(t.Context(), kill.ID); err != nil {
		t.Fatal(err)
	}
	h.waitRedriven(waiting, 5*time.Second, "event", "decision", "action.started", "action.finished", "verified")
	h.waitRedriven(recovered, 5*time.Second, "event", "decision", "action.started", "action.finished")
	if acts, undos := h.rem.counts(); acts != 2 || undos != 1 {
		t.Fatalf("acts=%d undos=%d after the pause, want 2 and 1", acts, undos)
	}
	if p := h.problem(recovered); p != nil {
		t.Fatalf("the undone problem is still open: %+v", p)
	}
}

// News of a problem already acted on, and the detector's re-assertions of
// it, take no second action; a re-assertion adds nothing to the trail.
func TestOpenProblemIsDedupedByProblem(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	first := event("Count", "node/d1", bus.StatusFiring)
	h.publish(first, first.ID)
	h.waitKinds(first.ID, "event", "decision", "action.started", "action.finished", "verified")
	before, err := h.trail.Query(t.Context(), audit.Filter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		rs := first.Repeat(bus.TriggerResync, bus.ResyncID(first.ID, time.Unix(int64(1000+i), 0)))
		h.publish(rs, rs.ID)
	}
	time.Sleep(time.Second)
	after, err := h.trail.Query(t.Context(), audit.Filter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("re-assertions of an open problem added %d records", len(after)-len(before))
	}
	if acts, _ := h.rem.counts(); acts != 1 {
		t.Fatalf("acted %d times, want 1", acts)
	}

	// Another replica is acting on the problem: news of it here takes
	// no second action.
	key := problemKey(first.Subject, first.ProblemID())
	p := h.problem(first)
	p.Phase, p.ActionID, p.ActingEvent = PhaseActing, "act-elsewhere", "ev-elsewhere"
	if err := h.eng.problems.put(t.Context(), key, p); err != nil {
		t.Fatal(err)
	}
	again := event("Count", "node/d1", bus.StatusFiring) // another id, same problem
	h.publish(again, again.ID)
	recs := h.waitKinds(again.ID, "event", "suppressed")
	if r := detail(recs[1], "reason"); !strings.Contains(r, "already handled") || !strings.Contains(r, "act-elsewhere") {
		t.Errorf("suppressed for %q", r)
	}
	if acts, _ := h.rem.counts(); acts != 1 {
		t.Fatalf("acted %d times, want 1", acts)
	}
}

// A re-assertion of a problem nobody holds open (its record was lost) is
// handled as news: nothing is lost to a crash between hold and re-drive.
func TestResyncOfALostProblemActs(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	e := event("Count", "node/l1", bus.StatusFiring)
	rs := e.Repeat(bus.TriggerResync, bus.ResyncID(e.ID, time.Unix(60, 0)))
	h.publish(rs, rs.ID)
	h.waitKinds(rs.ID, "event", "decision", "action.started", "action.finished", "verified")
}

// A re-assertion that lost the race with the problem clearing is ignored.
func TestStaleResyncIsIgnored(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	e := event("Count", "node/s1", bus.StatusFiring)
	h.publish(e, e.ID)
	h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished", "verified")
	res := event("Count", "node/s1", bus.StatusResolved)
	h.publish(res, res.ID)
	h.waitKinds(res.ID, "event", "decision", "action.started", "action.finished")
	h.stop()
	// The problem's record is gone; a firing re-assertion made before the
	// problem cleared comes after it. Its news was settled, so it is
	// acked without a record; the problem's next news, queued behind it,
	// shows it has been handled.
	rs := e.Repeat(bus.TriggerResync, bus.ResyncID(e.ID, time.Unix(120, 0)))
	h.publish(rs, rs.ID)
	next := event("Count", "node/s1", bus.StatusResolved)
	h.publish(next, next.ID)
	h.start()
	h.waitKinds(next.ID, "event", "decision", "action.started", "action.finished")
	if recs := h.recordsFor(rs.ID); len(recs) != 0 {
		t.Errorf("stale re-assertion audited: %v", kinds(recs))
	}
	if acts, _ := h.rem.counts(); acts != 1 {
		t.Fatalf("acted %d times, want 1", acts)
	}
}

func TestPhaseTransitions(t *testing.T) {
	all := []Phase{PhaseHeld, PhaseActing, PhaseActed, PhaseSettled, PhaseFailed}
	allowed := map[Phase][]Phase{
		"":           all,
		PhaseHeld:    all,
		PhaseActing:  {PhaseActing, PhaseActed, PhaseFailed, PhaseSettled, PhaseHeld},
		PhaseActed:   {PhaseActed, PhaseHeld, PhaseActing, PhaseFailed, PhaseSettled},
		PhaseSettled: all,
		PhaseFailed:  all,
	}
	for from, tos := range allowed {
		for _, to := range all {
			want := false
			for _, ok := range tos {
				want = want || ok == to
			}
			if got := from.next(to); got != want {
				t.Errorf("%q -> %q: %v, want %v", from, to, got, want)
			}
		}
		if from.next("") {
			t.Errorf("%q -> no phase allowed", from)
		}
	}
	if Phase("bogus").next(PhaseHeld) {
		t.Error("an unknown phase moves on")
	}
}

func TestRedriveIDIsTheSameOnEveryReplica(t *testing.T) {
	if a, b := RedriveID("ev-1", 7), RedriveID("ev-1", 7); a != b || a == RedriveID("ev-1", 8) {
		t.Fatalf("ids %s %s", a, b)
	}
	if got := fmt.Sprint(bus.ProblemSubject("healer.events.np.k.redrive")); got != "healer.events.np.k" {
		t.Fatalf("ProblemSubject = %s", got)
	}
}

// An action a crashed replica started is finished by the redelivery even
// when the problem cleared meanwhile: dropping it half done (an etcd
// member removed, its replacement still a learner) is worse. Before, the
// guard suppressed the event and left the action open for ever.
func TestStartedActionIsFinishedAfterTheProblemCleared(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	h.stop()
	e := event("Count", "node/half", bus.StatusFiring)
	h.leaveStarted(e, "act-half")
	// Its event was received and audited before the claim, as always.
	if err := putJSON(t.Context(), h.streams.Actions, eventKey(e.ID), eventState{State: "received", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.publish(e, "m1")
	cleared := event("Count", "node/half", bus.StatusResolved)
	h.publish(cleared, cleared.ID)
	h.start()
	recs := h.waitKinds(e.ID, "decision", "action.finished", "verified")
	if recs[1].ActionID != "act-half" {
		t.Errorf("finished action %q, want act-half", recs[2].ActionID)
	}
	h.waitKinds(cleared.ID, "event", "decision", "action.started", "action.finished")
	if acts, undos := h.rem.counts(); acts != 1 || undos != 1 {
		t.Fatalf("acts=%d undos=%d, want the started action finished and then undone", acts, undos)
	}
}

// A problem settled without an action (here: a dry run) keeps no record,
// and its re-assertions are acked without being decided again.
func TestSettledProblemKeepsNoRecord(t *testing.T) {
	h := newHarness(t, Config{DryRun: true}, nil)
	e := event("Count", "node/d1", bus.StatusFiring)
	h.publish(e, e.ID)
	h.waitKinds(e.ID, "event", "decision", "suppressed")
	if _, err := h.streams.Problems.Get(t.Context(), problemKey(e.Subject, e.ProblemID())); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("record of a settled problem: %v, want none", err)
	}
	rs := e.Repeat(bus.TriggerResync, bus.ResyncID(e.ID, time.Unix(60, 0)))
	h.publish(rs, rs.ID)
	next := event("Count", "node/d1", bus.StatusResolved)
	h.publish(next, next.ID)
	h.waitKinds(next.ID, "event", "decision", "suppressed")
	if recs := h.recordsFor(rs.ID); len(recs) != 0 {
		t.Errorf("re-assertion of a settled problem audited: %v", kinds(recs))
	}
}

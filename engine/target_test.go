package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/remediators"
)

// overlap is a remediator that records how many of its actions run at once
// on each target, and can be told to hang until its context ends. The
// rest of it is counter's.
type overlap struct {
	*counter
	mu      sync.Mutex
	running map[string]int
	most    int
	acts    []string
	slow    time.Duration
	hang    chan struct{} // closed when an action starts hanging; nil: no hang
	causes  []error       // why hung actions ended
	hangOne sync.Once
}

func (o *overlap) Act(ctx context.Context, req action.Request, _ action.Progress) (action.Result, error) {
	o.mu.Lock()
	o.running[req.Target]++
	o.most = max(o.most, o.running[req.Target])
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.running[req.Target]--
		o.mu.Unlock()
	}()
	hung := false
	if o.hang != nil {
		o.hangOne.Do(func() { hung = true; close(o.hang) })
	}
	if hung {
		<-ctx.Done()
		o.mu.Lock()
		o.causes = append(o.causes, context.Cause(ctx))
		o.mu.Unlock()
		return action.Result{}, ctx.Err()
	}
	select {
	case <-time.After(o.slow):
	case <-ctx.Done():
		return action.Result{}, ctx.Err()
	}
	o.mu.Lock()
	o.acts = append(o.acts, req.ID)
	o.mu.Unlock()
	return action.Result{Changed: true, Message: "done"}, nil
}

// secondEngine starts another engine on h's bus, as a second replica with
// its own instance name, acting through rem.
func (h *harness) secondEngine(cfg Config, rem action.Remediator) *Engine {
	h.t.Helper()
	cfg.RetryDelay = 50 * time.Millisecond
	deps := h.eng.Deps // the same bus, trail and policies; its own limiter and breakers
	deps.Remediators = remediators.Set{"test.count": rem}
	deps.Limiter, deps.Breakers = guard.NewLocal(), guard.NewBreakers(cfg.Breaker, deps.Log, nil)
	eng, err := New(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.t.Context())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("second engine: %v", err)
		}
	})
	return eng
}

func TestOneActionAtATimePerTargetAcrossReplicas(t *testing.T) {
	h := newHarness(t, Config{Workers: 8}, nil)
	h.stop()
	rem := &overlap{counter: &counter{}, running: map[string]int{}, slow: 150 * time.Millisecond}
	h.eng.Remediators = remediators.Set{"test.count": rem}
	h.start()
	h.secondEngine(Config{Workers: 8}, rem)

	// Six different problems of one node, and six of another: each
	// problem is its own subject, so without the lease both replicas (and
	// every worker of each) would act on a node at once.
	var events []*bus.Event
	for i := range 6 {
		for _, node := range []string{"node/p", "node/q"} {
			e := event("Count", node, bus.StatusFiring)
			e.Key = fmt.Sprintf("problem-%d-%s", i, node)
			events = append(events, e)
			h.publish(e, e.ID)
		}
	}
	for _, e := range events {
		h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished", "verified")
	}
	rem.mu.Lock()
	defer rem.mu.Unlock()
	if rem.most != 1 {
		t.Fatalf("up to %d actions ran on one node at once, want 1", rem.most)
	}
	if len(rem.acts) != len(events) {
		t.Fatalf("%d actions for %d events", len(rem.acts), len(events))
	}
}

func TestLostTargetLeaseStopsTheAction(t *testing.T) {
	h := newHarness(t, Config{AckWait: 3 * time.Second}, nil)
	h.stop()
	rem := &overlap{counter: &counter{}, running: map[string]int{}, slow: 10 * time.Millisecond, hang: make(chan struct{})}
	h.eng.Remediators = remediators.Set{"test.count": rem}
	h.start()

	e := event("Count", "node/f", bus.StatusFiring)
	h.publish(e, e.ID)
	select {
	case <-rem.hang:
	case <-time.After(10 * time.Second):
		t.Fatal("the action never started")
	}
	// Another engine takes the lease (as if this one had stalled past its
	// term): the next renewal finds a newer revision and the action's
	// context ends with the reason.
	key := targetKey(e.Subject)
	entry, err := h.streams.Actions.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var held TargetHold
	if err := json.Unmarshal(entry.Value(), &held); err != nil {
		t.Fatal(err)
	}
	if held.Holder != h.eng.instance || held.Remediator != "test.count" || held.ActionID == "" {
		t.Fatalf("lease %+v is not the acting engine's", held)
	}
	thief := TargetHold{ActionID: "act-thief", Holder: "other-engine", Renewed: time.Now()}
	b, _ := json.Marshal(thief)
	if _, err := h.streams.Actions.Update(t.Context(), key, b, entry.Revision()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "hung action stopped", func() bool {
		rem.mu.Lock()
		defer rem.mu.Unlock()
		return len(rem.causes) == 1
	})
	rem.mu.Lock()
	cause := rem.causes[0]
	rem.mu.Unlock()
	if cause == nil || !strings.Contains(cause.Error(), "lease of node/f lost") {
		t.Fatalf("action ended with %v, want the lost lease", cause)
	}
	// The thief stops renewing (it died) and its action is not open: once
	// the term is over the event's redelivery takes the lease back and the
	// same action finishes.
	h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished", "verified")
	rem.mu.Lock()
	defer rem.mu.Unlock()
	if len(rem.acts) != 1 || rem.acts[0] != held.ActionID {
		t.Fatalf("acts %v, want the one action %s resumed", rem.acts, held.ActionID)
	}
	// The lease is released once the event is done, just after its
	// verified record.
	waitUntil(t, 5*time.Second, "the lease released after the action was verified", func() bool {
		_, err := h.streams.Actions.Get(t.Context(), key)
		return err != nil
	})
}

func TestTargetLeaseOfAnOpenActionWaitsForItsResume(t *testing.T) {
	h := newHarness(t, Config{AckWait: 2 * time.Second}, nil)
	ctx := t.Context()
	// An engine died while acting on node/w: its action is open and its
	// lease ran out long ago.
	dead := TargetHold{ActionID: "act-dead", Key: "act.dead", Remediator: "test.count", Holder: "dead-engine", Renewed: time.Now().Add(-10 * time.Second)}
	b, _ := json.Marshal(dead)
	if _, err := h.streams.Actions.Put(ctx, targetKey("node/w"), b); err != nil {
		t.Fatal(err)
	}
	open := actionState{ActionID: "act-dead", State: "started", Step: "act", Time: time.Now(), Holder: "dead-engine", Renewed: dead.Renewed}
	if err := putJSON(ctx, h.streams.Actions, "act.dead", open); err != nil {
		t.Fatal(err)
	}
	r := &run{delivery: delivery{ev: event("Count", "node/w", bus.StatusFiring)}, stepRun: stepRun{actionID: "act-new", idemKey: "act.new", remName: "test.count"}}
	err := h.eng.holdTarget(ctx, r)
	if !errors.Is(err, errTargetBusy) || !strings.Contains(err.Error(), "waits for action act-dead") {
		t.Fatalf("holdTarget = %v, want busy until act-dead resumes", err)
	}
	// The open action ends (its redelivery gave up and failed it): the
	// lease is free.
	open.State = "failed"
	if err := putJSON(ctx, h.streams.Actions, "act.dead", open); err != nil {
		t.Fatal(err)
	}
	if err := h.eng.holdTarget(ctx, r); err != nil {
		t.Fatalf("holdTarget after the open action failed: %v", err)
	}
	// A live holder is never taken over.
	other := &run{delivery: delivery{ev: r.ev}, stepRun: stepRun{actionID: "act-other", idemKey: "act.other", remName: "test.count"}}
	if err := h.eng.holdTarget(ctx, other); !errors.Is(err, errTargetBusy) {
		t.Fatalf("second holder: %v, want busy", err)
	}
	h.eng.releaseTarget(ctx, r)
	if err := h.eng.holdTarget(ctx, other); err != nil {
		t.Fatalf("after release: %v", err)
	}
	h.eng.releaseTarget(ctx, other)
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

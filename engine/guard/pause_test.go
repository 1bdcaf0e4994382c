package guard

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus/bustest"
)

func pauseBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := EnsurePauseBucket(t.Context(), bustest.Start(t).JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func runPauses(t *testing.T, kv jetstream.KeyValue) *Pauses {
	t.Helper()
	ps := NewPauses(kv, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { ps.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := ps.WaitSynced(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return ps
}

// waitBlocking waits until ps says whether remediator on target is held.
func waitBlocking(t *testing.T, ps *Pauses, remediator, target string, want bool) *Pause {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		p, err := ps.Blocking(remediator, target)
		if err != nil {
			t.Fatal(err)
		}
		if (p != nil) == want {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("Blocking(%s, %s) = %v, want held %v", remediator, target, p, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A pause set through one replica holds the others back at once, by its
// scope, and clearing it releases them.
func TestPausesAcrossReplicas(t *testing.T) {
	kv := pauseBucket(t)
	a, b := runPauses(t, kv), runPauses(t, kv)
	if p, _ := b.Blocking("node.drain", "node/worker-1"); p != nil {
		t.Fatalf("held before any pause: %+v", p)
	}
	p := &Pause{Remediator: "node.drain", Target: "node/worker-*", Reason: "kernel upgrade", By: "alice"}
	if err := a.Set(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := waitBlocking(t, b, "node.drain", "node/worker-7", true); got.ID != p.ID || got.By != "alice" {
		t.Fatalf("other replica sees %+v", got)
	}
	t.Logf("the other replica honoured the pause after %s", time.Since(start))
	waitBlocking(t, b, "node.cordon", "node/worker-7", false) // another remediator
	waitBlocking(t, b, "node.drain", "node/master-1", false)  // another target
	if _, err := a.Clear(t.Context(), p.ID); err != nil {
		t.Fatal(err)
	}
	waitBlocking(t, b, "node.drain", "node/worker-7", false)
	if _, err := a.Clear(t.Context(), p.ID); !errors.Is(err, ErrNoPause) {
		t.Fatalf("clearing it again = %v, want ErrNoPause", err)
	}

	// The kill switch holds everything; a window only within its times.
	kill := &Pause{Reason: "incident 4711", By: "bob"}
	if err := a.Set(t.Context(), kill); err != nil {
		t.Fatal(err)
	}
	if got := waitBlocking(t, b, "etcd.replace-member", "etcd/m1", true); got.Scope() != "everything (kill switch)" {
		t.Fatalf("scope %q", got.Scope())
	}
	if _, err := a.Clear(t.Context(), kill.ID); err != nil {
		t.Fatal(err)
	}
	window := &Pause{Target: "node/*", From: time.Now().Add(time.Hour), Until: time.Now().Add(2 * time.Hour), Reason: "rack move", By: "carol"}
	if err := a.Set(t.Context(), window); err != nil {
		t.Fatal(err)
	}
	waitBlocking(t, b, "node.cordon", "node/x", false) // not yet
	b.now = func() time.Time { return time.Now().Add(90 * time.Minute) }
	waitBlocking(t, b, "node.cordon", "node/x", true) // within it
	b.now = func() time.Time { return time.Now().Add(3 * time.Hour) }
	waitBlocking(t, b, "node.cordon", "node/x", false) // over
	if l := b.List(); len(l) != 0 {
		t.Fatalf("List after the window: %v, want none", l)
	}
}

// An entry healer cannot read holds everything back (fail closed); bad
// pauses are refused before they are stored.
func TestPausesFailClosed(t *testing.T) {
	kv := pauseBucket(t)
	ps := runPauses(t, kv)
	if _, err := kv.Put(t.Context(), "pause-garbage", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if got := waitBlocking(t, ps, "node.cordon", "node/a", true); got.ID != "pause-garbage" {
		t.Fatalf("held by %+v", got)
	}
	for _, bad := range []Pause{
		{By: "x"},
		{Reason: "r"},
		{Reason: "r", By: "x", Target: "node/[a"},
		{Reason: "r", By: "x", From: time.Now().Add(time.Hour), Until: time.Now()},
	} {
		if err := ps.Set(t.Context(), &bad); err == nil {
			t.Errorf("Set(%+v) succeeded", bad)
		}
	}
	unsynced := NewPauses(kv, slog.New(slog.DiscardHandler))
	if _, err := unsynced.Blocking("node.cordon", "node/a"); !errors.Is(err, ErrPausesUnknown) {
		t.Fatalf("Blocking before the first read = %v, want ErrPausesUnknown", err)
	}
}

// TestPauseSetThenListSeesIt: whoever sets or clears a pause through a
// replica sees the change in that replica's list as soon as the call
// returns (and that replica honours it), though the list is fed by a watch.
func TestPauseSetThenListSeesIt(t *testing.T) {
	ps := runPauses(t, pauseBucket(t))
	for i := range 50 {
		p := &Pause{Remediator: "node.drain", Reason: "kernel upgrade", By: "alice"}
		if err := ps.Set(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(ps.List(), func(q Pause) bool { return q.ID == p.ID }) {
			t.Fatalf("round %d: pause %s set, but not in the list", i, p.ID)
		}
		if hit, err := ps.Blocking("node.drain", "node/a"); err != nil || hit == nil {
			t.Fatalf("round %d: set, but not honoured: %v %v", i, hit, err)
		}
		if _, err := ps.Clear(t.Context(), p.ID); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(ps.List(), func(q Pause) bool { return q.ID == p.ID }) {
			t.Fatalf("round %d: pause %s cleared, but still in the list", i, p.ID)
		}
	}
}

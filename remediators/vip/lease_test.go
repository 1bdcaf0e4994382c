package vip

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestLeaseKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"10.10.0.100", "10-10-0-100"},
		{"192.168.1.1", "192-168-1-1"},
		{"fd00::1", "fd00__1"},
	} {
		if got := LeaseKey(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("LeaseKey(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestLeaseAcquireRace races two nodes, each on its own connection, for
// the same lease, round after round: exactly one wins each round, and
// each round's winner has the next term.
func TestLeaseAcquireRace(t *testing.T) {
	ns := startNATS(t)
	_, _, kvA := connect(t, ns, "a")
	_, _, kvB := connect(t, ns, "b")
	ttl := 150 * time.Millisecond
	a := &leases{kv: kvA, ttl: ttl, now: time.Now}
	b := &leases{kv: kvB, ttl: ttl, now: time.Now}
	addr := mustAddr("10.10.0.100")
	ctx := t.Context()

	type outcome struct {
		node  string
		entry leaseEntry
		err   error
	}
	var lastTerm uint64
	for round := 0; round < 8; round++ {
		start := make(chan struct{})
		out := make(chan outcome, 2)
		var wg sync.WaitGroup
		for _, c := range []struct {
			node string
			l    *leases
		}{{"m1", a}, {"m2", b}} {
			wg.Go(func() {
				<-start
				e, _, err := c.l.acquire(ctx, addr, c.node, "race")
				out <- outcome{c.node, e, err}
			})
		}
		close(start)
		wg.Wait()
		close(out)
		var winners []outcome
		for o := range out {
			switch {
			case o.err == nil:
				winners = append(winners, o)
			case errors.Is(o.err, errLeaseHeld), errors.Is(o.err, jetstream.ErrKeyExists), errors.Is(o.err, jetstream.ErrKeyRevisionMismatch):
				// Lost the race: fine.
			default:
				t.Fatalf("round %d: %s: unexpected error: %v", round, o.node, o.err)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1: %+v", round, len(winners), winners)
		}
		w := winners[0]
		if w.entry.Term != lastTerm+1 {
			t.Fatalf("round %d: winner %s has term %d, want %d", round, w.node, w.entry.Term, lastTerm+1)
		}
		lastTerm = w.entry.Term
		stored, err := a.get(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Holder != w.node || stored.Term != w.entry.Term || stored.rev != w.entry.rev {
			t.Fatalf("round %d: stored lease %+v, want the winner's %+v", round, stored, w.entry)
		}
		// Let it expire so the next round races again.
		time.Sleep(time.Until(stored.Expires) + 5*time.Millisecond)
	}
}

func TestLeaseHeldRenewLostRelease(t *testing.T) {
	ns := startNATS(t)
	_, _, kv := connect(t, ns, "t")
	ctx := t.Context()
	addr := mustAddr("10.10.0.100")
	s := &leases{kv: kv, ttl: 200 * time.Millisecond, now: time.Now}

	e1, _, err := s.acquire(ctx, addr, "m1", "a1")
	if err != nil {
		t.Fatal(err)
	}
	if e1.Term != 1 || e1.Holder != "m1" || e1.Action != "a1" {
		t.Fatalf("first lease %+v", e1)
	}
	// A valid lease of another node cannot be taken.
	if _, _, err := s.acquire(ctx, addr, "m2", "a2"); !errors.Is(err, errLeaseHeld) {
		t.Fatalf("m2 acquire of m1's valid lease: %v, want errLeaseHeld", err)
	}
	// The holder renews at its revision.
	e2, _, err := s.renew(ctx, addr, e1)
	if err != nil {
		t.Fatal(err)
	}
	if e2.rev <= e1.rev || !e2.Expires.After(e1.Expires) || e2.Term != 1 {
		t.Fatalf("renewed lease %+v after %+v", e2, e1)
	}
	// A renewal at a stale revision is lost.
	if _, _, err := s.renew(ctx, addr, e1); !errors.Is(err, errLeaseLost) {
		t.Fatalf("renew at stale revision: %v, want errLeaseLost", err)
	}
	// After expiry m2 takes it with the next term; m1's renewal is lost.
	time.Sleep(time.Until(e2.Expires) + 5*time.Millisecond)
	e3, _, err := s.acquire(ctx, addr, "m2", "a2")
	if err != nil {
		t.Fatal(err)
	}
	if e3.Term != 2 || e3.Holder != "m2" {
		t.Fatalf("takeover lease %+v", e3)
	}
	if _, _, err := s.renew(ctx, addr, e2); !errors.Is(err, errLeaseLost) {
		t.Fatalf("old holder's renewal after takeover: %v, want errLeaseLost", err)
	}
	// Release by someone else is a no-op; by the holder it frees the
	// lease at once.
	if changed, err := s.release(ctx, addr, "m1"); err != nil || changed {
		t.Fatalf("release by non-holder: changed %t, err %v", changed, err)
	}
	if changed, err := s.release(ctx, addr, "m2"); err != nil || !changed {
		t.Fatalf("release by holder: changed %t, err %v", changed, err)
	}
	got, err := s.get(ctx, addr)
	if err != nil || !got.Released || got.Valid(time.Now()) {
		t.Fatalf("released lease %+v, %v", got, err)
	}
	e4, _, err := s.acquire(ctx, addr, "m1", "a3")
	if err != nil {
		t.Fatalf("acquire of a released lease: %v", err)
	}
	if e4.Term != 3 || e4.Released {
		t.Fatalf("lease after release %+v", e4)
	}
}

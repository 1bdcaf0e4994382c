package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus/bustest"
)

// clock is a test time shared by the replicas of one test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// replicas returns n budgets over the same cluster of nodes healthy nodes,
// sharing one ledger in a real JetStream KV bucket.
func replicas(t *testing.T, kv jetstream.KeyValue, clk *clock, cfg BudgetConfig, nodes, n int) []*Budget {
	t.Helper()
	bs := make([]*Budget, n)
	for i := range bs {
		b := newTestBudget(cfg)
		b.log = slog.New(slog.DiscardHandler)
		b.now = clk.Now
		for j := range nodes {
			b.track(fmt.Sprint("n", j), "", false)
		}
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		b.Share(ctx, kv, fmt.Sprint("engine-", i))
		bs[i] = b
	}
	return bs
}

func budgetBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := EnsureBudgetBucket(t.Context(), bustest.Start(t).JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestSharedBudgetNeverExceededAcrossReplicas races three replicas taking
// different nodes at once. Each alone would allow the whole budget, so
// without the shared ledger they take three times as many.
func TestSharedBudgetNeverExceededAcrossReplicas(t *testing.T) {
	kv := budgetBucket(t)
	clk := &clock{now: time.Now()}
	const nodes, allowed = 40, 4 // 10 %
	for round := range 5 {
		bs := replicas(t, kv, clk, BudgetConfig{Percent: 10}, nodes, 3)
		var granted atomic.Int32
		var res []*Reservation
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Go(func() {
				r, _, err := bs[i%3].Reserve(t.Context(), fmt.Sprint("n", i))
				switch {
				case err == nil:
					granted.Add(1)
					mu.Lock()
					res = append(res, r)
					mu.Unlock()
				case !errors.Is(err, ErrBudgetExhausted):
					t.Errorf("round %d: reserve n%d: %v, want success or ErrBudgetExhausted", round, i, err)
				}
			})
		}
		wg.Wait()
		if g := granted.Load(); g != allowed {
			t.Fatalf("round %d: %d nodes granted across 3 replicas, want exactly %d (the budget)", round, g, allowed)
		}
		// Every replica sees the others' holds.
		for i, b := range bs {
			if err := b.syncLedger(t.Context()); err != nil {
				t.Fatal(err)
			}
			if st, _ := b.State(); st.InFlight != allowed || st.Available != 0 {
				t.Fatalf("round %d: replica %d sees %+v, want %d in flight and none available", round, i, st, allowed)
			}
		}
		for _, r := range res {
			r.Release(t.Context(), false)
		}
		// Released without taking the node out: the places are free again.
		if _, _, err := bs[0].Reserve(t.Context(), "n39"); err != nil {
			t.Fatalf("round %d: after every release: %v", round, err)
		}
		if err := kv.Purge(t.Context(), ledgerKey); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSharedBudgetHoldOfADeadReplicaLapses: a replica that dies holding a
// place keeps it only until its hold's term ends; one that lives renews it.
func TestSharedBudgetHoldOfADeadReplicaLapses(t *testing.T) {
	kv := budgetBucket(t)
	clk := &clock{now: time.Now()}
	cfg := BudgetConfig{MinNodes: 1, HoldTTL: time.Minute}
	bs := replicas(t, kv, clk, cfg, 5, 3)
	live, dead, other := bs[0], bs[1], bs[2] // dead stops after its first reservation
	if _, _, err := dead.Reserve(t.Context(), "n1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := live.Reserve(t.Context(), "n2"); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("the other replica holds the only place, yet: %v", err)
	}
	clk.Add(59 * time.Second)
	if _, _, err := live.Reserve(t.Context(), "n2"); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("within the hold's term: %v, want ErrBudgetExhausted", err)
	}
	clk.Add(2 * time.Second) // the dead replica did not renew
	r, _, err := live.Reserve(t.Context(), "n2")
	if err != nil {
		t.Fatalf("after the dead replica's hold lapsed: %v", err)
	}
	// The live one renews (as keepHolds does every quarter term): its
	// hold outlasts its first term.
	for range 8 {
		clk.Add(20 * time.Second)
		if err := live.syncLedger(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := other.Reserve(t.Context(), "n3"); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("a renewed hold lapsed: %v", err)
	}
	r.Release(t.Context(), false)
	if _, _, err := other.Reserve(t.Context(), "n3"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// TestSharedBudgetFailsClosed: a ledger that cannot be read refuses every
// reservation rather than guess.
func TestSharedBudgetFailsClosed(t *testing.T) {
	kv := budgetBucket(t)
	clk := &clock{now: time.Now()}
	b := replicas(t, kv, clk, BudgetConfig{MinNodes: 3}, 10, 1)[0]
	if _, err := kv.Put(t.Context(), ledgerKey, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Reserve(t.Context(), "n1"); !errors.Is(err, ErrBudgetUnknown) {
		t.Fatalf("unreadable ledger: %v, want ErrBudgetUnknown", err)
	}
	if err := kv.Delete(t.Context(), ledgerKey); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Reserve(t.Context(), "n1"); err != nil {
		t.Fatalf("readable again: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the bus cannot be reached in time
	if _, _, err := b.Reserve(ctx, "n2"); !errors.Is(err, ErrBudgetUnknown) {
		t.Fatalf("ledger unreachable: %v, want ErrBudgetUnknown", err)
	}
}

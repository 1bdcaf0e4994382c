package etcdmember

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Two engines beginning replacements of two members of one cluster at the
// same instant: exactly one goes ahead.
func TestConcurrentBeginsNeverOverlap(t *testing.T) {
	js := &journals{kv: journalBucket(t)}
	for round := range 10 {
		cluster := fmt.Sprintf("c%d", round)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() {
				errs[i] = js.begin(t.Context(), &Journal{ActionID: fmt.Sprintf("act-%d", i), Cluster: cluster, Member: fmt.Sprintf("m%d", i)})
			})
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: begins %v and %v: want exactly one to go ahead", round, errs[0], errs[1])
		}
	}
}

// Once the replacement votes, the next member's may begin; a journal left
// at "begun" long ago no longer holds the member or the cluster back, a
// fresh one does.
func TestJournalReleasesTheCluster(t *testing.T) {
	kv := journalBucket(t)
	js := &journals{kv: kv}
	ctx := t.Context()
	a := &Journal{ActionID: "act-a", Cluster: "c", Member: "m1"}
	if err := js.begin(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := js.begin(ctx, &Journal{ActionID: "act-b", Cluster: "c", Member: "m2"}); err == nil {
		t.Fatal("a second replacement began while the first is in flight")
	}
	for _, p := range []string{phaseRemoved, phaseAdded, phaseStarted, phasePromoted} {
		if err := js.advance(ctx, a, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := js.begin(ctx, &Journal{ActionID: "act-b", Cluster: "c", Member: "m2"}); err != nil {
		t.Fatalf("after the first replacement votes: %v", err)
	}

	// A begun journal of m3 by an attempt that stopped 11 minutes ago.
	stale := Journal{ActionID: "act-old", Cluster: "d", Member: "m3", Phase: phaseBegun, Began: time.Now().Add(-11 * time.Minute), Updated: time.Now().Add(-11 * time.Minute)}
	b, _ := json.Marshal(stale)
	if _, err := kv.Put(ctx, journalKey("d", "m3"), b); err != nil {
		t.Fatal(err)
	}
	if other, err := js.inFlight(ctx, "d", "m4"); err != nil || other != nil {
		t.Fatalf("the abandoned journal counts as in flight: %+v %v", other, err)
	}
	if err := js.begin(ctx, &Journal{ActionID: "act-new", Cluster: "d", Member: "m3"}); err != nil {
		t.Fatalf("taking over an abandoned journal: %v", err)
	}
	got, err := js.get(ctx, "d", "m3")
	if err != nil || got.ActionID != "act-new" || got.Phase != phaseBegun {
		t.Fatalf("journal after takeover: %+v %v", got, err)
	}
	// A fresh begun journal of another action holds.
	if err := js.begin(ctx, &Journal{ActionID: "act-third", Cluster: "d", Member: "m3"}); err == nil {
		t.Fatal("took over a journal begun a moment ago")
	}
	// The lock key is not a member's journal.
	if other, err := js.inFlight(ctx, "c", "m2"); err != nil || other != nil {
		t.Fatalf("in flight besides m2: %+v %v", other, err)
	}
}

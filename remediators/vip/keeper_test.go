package vip

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
)

// flakyKV breaks the lease bucket's writes on demand, the way a partition
// from NATS does: failing at once, or hanging until the caller gives up.
type flakyKV struct {
	jetstream.KeyValue
	mode atomic.Int32
}

const (
	kvOK = iota
	kvFail
	kvHang
)

func (f *flakyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	switch f.mode.Load() {
	case kvFail:
		return 0, errors.New("injected: nats: connection closed")
	case kvHang:
		<-ctx.Done()
		return 0, context.Cause(ctx)
	}
	return f.KeyValue.Update(ctx, key, value, rev)
}

func acquireReq(id, node, vip string) action.NodeRequest {
	return action.NodeRequest{ID: id, Verb: VerbAcquire, Node: node, Params: map[string]any{"vip": vip}}
}

func statusOf(t *testing.T, k *Keeper, vip string) (held, present bool) {
	t.Helper()
	res, err := verbOf(t, k, VerbStatus).Run(t.Context(), action.NodeRequest{Verb: VerbStatus, Params: map[string]any{"vip": vip}}, nil)
	if err != nil {
		t.Fatalf("vip.status: %v", err)
	}
	return res.Details[detailLeaseHeld].(bool), res.Details[detailAddressPresent].(bool)
}

// TestKeeperFencesBeforeLeaseExpires cuts a holder off from the lease
// bucket and checks that it removes the address itself, at expiry minus
// the fence margin: after the last lease that reached the bucket was
// renewed, and before anyone else could take it.
func TestKeeperFencesBeforeLeaseExpires(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode int32
	}{{"renewals fail", kvFail}, {"renewals hang", kvHang}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := startNATS(t)
			_, _, kv := connect(t, ns, "m1")
			fk := &flakyKV{KeyValue: kv}
			addrs := newFakeAddrs()
			cfg := fastConfig("m1", testVIP())
			k, err := newKeeper(cfg, fk, addrs, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			runKeeper(t, k)
			addr := mustAddr("10.10.0.100")
			res, err := verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a1", "m1", "10.10.0.100"), nil)
			if err != nil || !res.Changed {
				t.Fatalf("acquire: %+v, %v", res, err)
			}
			first, err := readLease(t.Context(), kv, addr)
			if err != nil {
				t.Fatal(err)
			}
			// Healthy: the lease is renewed well past its first TTL.
			time.Sleep(3 * cfg.LeaseTTL)
			renewed, err := readLease(t.Context(), kv, addr)
			if err != nil {
				t.Fatal(err)
			}
			if renewed.rev <= first.rev || !renewed.Valid(time.Now()) || renewed.Term != first.Term {
				t.Fatalf("lease not kept: first %+v, now %+v", first, renewed)
			}
			if !addrs.isPresent(addr) {
				t.Fatal("address gone while the lease was being renewed")
			}

			fk.mode.Store(tc.mode)
			waitFor(t, 2*cfg.LeaseTTL, "the keeper to remove the address", func() bool { return !addrs.isPresent(addr) })
			removed, _ := addrs.removedAt(addr)
			last, err := readLease(t.Context(), kv, addr)
			if err != nil {
				t.Fatal(err)
			}
			if !removed.Before(last.Expires.Add(-cfg.FenceMargin / 2)) {
				t.Errorf("address removed at %s, less than half the fence margin before the lease expired at %s",
					removed.Format("15:04:05.000"), last.Expires.Format("15:04:05.000"))
			}
			if removed.Before(last.Expires.Add(-cfg.FenceMargin - 20*time.Millisecond)) {
				t.Errorf("address removed at %s, before the fence deadline %s: a single failed renewal must not fence",
					removed.Format("15:04:05.000"), last.Expires.Add(-cfg.FenceMargin).Format("15:04:05.000"))
			}
			t.Logf("fenced %s before the lease expired (margin %s)", last.Expires.Sub(removed).Round(time.Millisecond), cfg.FenceMargin)
			if last.Released {
				t.Error("a fenced lease must be left to expire, not released")
			}
			if held, present := statusOf(t, k, "10.10.0.100"); held || present {
				t.Errorf("status after fencing: held %t, present %t", held, present)
			}
			// It stays off: the keeper does not put it back on its own.
			time.Sleep(2 * cfg.RenewInterval)
			if addrs.isPresent(addr) {
				t.Error("address came back after fencing")
			}
		})
	}
}

// TestKeeperFencesWhenLeaseTaken checks that a holder whose lease was
// overwritten removes the address at its next renewal.
func TestKeeperFencesWhenLeaseTaken(t *testing.T) {
	ns := startNATS(t)
	_, _, kv := connect(t, ns, "m1")
	addrs := newFakeAddrs()
	cfg := fastConfig("m1", testVIP())
	cfg.LeaseTTL, cfg.FenceMargin, cfg.RenewInterval = 3*time.Second, 500*time.Millisecond, 100*time.Millisecond
	k, err := newKeeper(cfg, kv, addrs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	addr := mustAddr("10.10.0.100")
	if _, err := verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a1", "m1", "10.10.0.100"), nil); err != nil {
		t.Fatal(err)
	}
	// An operator (or a bug) writes the key behind the holder's back.
	if _, err := kv.Put(t.Context(), LeaseKey(addr), []byte(`{"vip":"10.10.0.100","holder":"m9","term":7}`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, time.Second, "the keeper to remove the address", func() bool { return !addrs.isPresent(addr) })
	if d := time.Since(start); d > 3*cfg.RenewInterval {
		t.Errorf("fenced %s after the lease was taken, want within a few renew intervals", d)
	}
}

func TestKeeperStart(t *testing.T) {
	addr := mustAddr("10.10.0.100")
	t.Run("stray address without lease is removed", func(t *testing.T) {
		ns := startNATS(t)
		_, _, kv := connect(t, ns, "m1")
		addrs := newFakeAddrs()
		addrs.present[addr] = true
		k, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		runKeeper(t, k)
		waitFor(t, time.Second, "stray address removed", func() bool { return !addrs.isPresent(addr) })
	})
	t.Run("address under another node's lease is removed", func(t *testing.T) {
		ns := startNATS(t)
		_, _, kv := connect(t, ns, "m1")
		other := &leases{kv: kv, ttl: time.Minute, now: time.Now}
		if _, _, err := other.acquire(t.Context(), addr, "m2", "x"); err != nil {
			t.Fatal(err)
		}
		addrs := newFakeAddrs()
		addrs.present[addr] = true
		k, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		runKeeper(t, k)
		waitFor(t, time.Second, "address removed", func() bool { return !addrs.isPresent(addr) })
	})
	t.Run("address appearing later without lease is removed", func(t *testing.T) {
		ns := startNATS(t)
		_, _, kv := connect(t, ns, "m1")
		addrs := newFakeAddrs()
		k, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		runKeeper(t, k)
		addrs.mu.Lock()
		addrs.present[addr] = true // someone ran `ip addr add`
		addrs.mu.Unlock()
		waitFor(t, time.Second, "address removed", func() bool { return !addrs.isPresent(addr) })
	})
	t.Run("own valid lease is adopted after a restart", func(t *testing.T) {
		ns := startNATS(t)
		_, _, kv := connect(t, ns, "m1")
		before := &leases{kv: kv, ttl: 5 * time.Second, now: time.Now}
		prev, _, err := before.acquire(t.Context(), addr, "m1", "a0")
		if err != nil {
			t.Fatal(err)
		}
		addrs := newFakeAddrs()
		k, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		runKeeper(t, k)
		waitFor(t, time.Second, "address added back", func() bool { return addrs.isPresent(addr) })
		if held, _ := statusOf(t, k, "10.10.0.100"); !held {
			t.Fatal("adopted lease not held")
		}
		got, err := readLease(t.Context(), kv, addr)
		if err != nil {
			t.Fatal(err)
		}
		if got.rev <= prev.rev || got.Term != prev.Term || got.Action != "a0" {
			t.Fatalf("adopted lease %+v, before %+v", got, prev)
		}
	})
}

// TestKeeperBindsLazily starts a Keeper before serve has made the bucket:
// it fails closed (a stray address goes, acquire fails) and works once the
// bucket is there.
func TestKeeperBindsLazily(t *testing.T) {
	ns := startNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	addr := mustAddr("10.10.0.100")
	addrs := newFakeAddrs()
	addrs.present[addr] = true
	k, err := NewKeeper(fastConfig("m1", testVIP()), js, addrs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	waitFor(t, 2*time.Second, "stray address removed while the bucket is missing", func() bool { return !addrs.isPresent(addr) })
	if _, err := verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a1", "m1", "10.10.0.100"), nil); err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("acquire without a bucket: %v, want bucket not found", err)
	}
	if _, err := EnsureBucket(t.Context(), js, 1); err != nil {
		t.Fatal(err)
	}
	if res, err := verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a2", "m1", "10.10.0.100"), nil); err != nil || !res.Changed {
		t.Fatalf("acquire once the bucket exists: %+v, %v", res, err)
	}
	if !addrs.isPresent(addr) {
		t.Fatal("address not added")
	}
}

func TestKeeperStopRemovesAddresses(t *testing.T) {
	ns := startNATS(t)
	_, _, kv := connect(t, ns, "m1")
	addrs := newFakeAddrs()
	k, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stop := runKeeper(t, k)
	addr := mustAddr("10.10.0.100")
	if _, err := verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a1", "m1", "10.10.0.100"), nil); err != nil {
		t.Fatal(err)
	}
	stop()
	if addrs.isPresent(addr) {
		t.Fatal("address still on after the keeper stopped")
	}
	l, err := readLease(t.Context(), kv, addr)
	if err != nil {
		t.Fatal(err)
	}
	if l.Released {
		t.Error("lease released on stop; it must be left to expire so its loss is reported")
	}
	// A stopped keeper takes nothing.
	_, err = verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a2", "m1", "10.10.0.100"), nil)
	if !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("acquire on a stopped keeper: %v, want ErrUnsafe", err)
	}
}

func TestKeeperVerbs(t *testing.T) {
	ns := startNATS(t)
	_, _, kv := connect(t, ns, "m1")
	addrs1, addrs2 := newFakeAddrs(), newFakeAddrs()
	k1, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs1, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	k2, err := newKeeper(fastConfig("m2", testVIP()), kv, addrs2, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k1)
	runKeeper(t, k2)
	ctx := t.Context()
	addr := mustAddr("10.10.0.100")

	res, err := verbOf(t, k1, VerbAcquire).Run(ctx, acquireReq("a1", "m1", "10.10.0.100"), nil)
	if err != nil || !res.Changed {
		t.Fatalf("acquire: %+v, %v", res, err)
	}
	addrs1.mu.Lock()
	announced := addrs1.announced[addr]
	addrs1.mu.Unlock()
	if announced < 1 {
		t.Error("no gratuitous ARP sent before acquire returned")
	}
	waitFor(t, time.Second, "all gratuitous ARPs", func() bool {
		addrs1.mu.Lock()
		defer addrs1.mu.Unlock()
		return addrs1.announced[addr] == 3
	})
	// The same request again, and a new one: already held, nothing done.
	for _, id := range []string{"a1", "a2"} {
		res, err = verbOf(t, k1, VerbAcquire).Run(ctx, acquireReq(id, "m1", "10.10.0.100/24"), nil)
		if err != nil || res.Changed {
			t.Fatalf("repeated acquire %s: %+v, %v", id, res, err)
		}
	}
	// m2 may not take m1's valid lease.
	_, err = verbOf(t, k2, VerbAcquire).Run(ctx, acquireReq("b1", "m2", "10.10.0.100"), nil)
	if !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("m2 acquire of m1's valid lease: %v, want ErrUnsafe", err)
	}
	if addrs2.isPresent(addr) {
		t.Fatal("m2 added the address without the lease")
	}
	if held, present := statusOf(t, k1, "10.10.0.100"); !held || !present {
		t.Fatalf("m1 status: held %t, present %t", held, present)
	}
	if held, present := statusOf(t, k2, "10.10.0.100"); held || present {
		t.Fatalf("m2 status: held %t, present %t", held, present)
	}

	// Release: the address goes first, then the lease, which m2 may then
	// take at once.
	res, err = verbOf(t, k1, VerbRelease).Run(ctx, action.NodeRequest{ID: "r1", Verb: VerbRelease, Node: "m1", Params: map[string]any{"vip": "10.10.0.100"}}, nil)
	if err != nil || !res.Changed {
		t.Fatalf("release: %+v, %v", res, err)
	}
	if addrs1.isPresent(addr) {
		t.Fatal("address still on m1 after release")
	}
	l, err := readLease(ctx, kv, addr)
	if err != nil || !l.Released {
		t.Fatalf("lease after release: %+v, %v", l, err)
	}
	res, err = verbOf(t, k1, VerbRelease).Run(ctx, action.NodeRequest{ID: "r2", Verb: VerbRelease, Node: "m1", Params: map[string]any{"vip": "10.10.0.100"}}, nil)
	if err != nil || res.Changed {
		t.Fatalf("second release: %+v, %v", res, err)
	}
	res, err = verbOf(t, k2, VerbAcquire).Run(ctx, acquireReq("b2", "m2", "10.10.0.100"), nil)
	if err != nil || !res.Changed {
		t.Fatalf("m2 acquire of a released lease: %+v, %v", res, err)
	}
	if term, _ := res.Details["term"].(uint64); term != 2 {
		t.Errorf("m2 took term %v, want 2", res.Details["term"])
	}
}

func TestAcquireAddFailureGivesLeaseBack(t *testing.T) {
	ns := startNATS(t)
	_, _, kv := connect(t, ns, "m1")
	addrs := newFakeAddrs()
	addrs.failAdd = errors.New("injected: no such device")
	k, err := newKeeper(fastConfig("m1", testVIP()), kv, addrs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	_, err = verbOf(t, k, VerbAcquire).Run(t.Context(), acquireReq("a1", "m1", "10.10.0.100"), nil)
	if err == nil {
		t.Fatal("acquire succeeded though the address could not be added")
	}
	l, err := readLease(t.Context(), kv, mustAddr("10.10.0.100"))
	if err != nil || !l.Released {
		t.Fatalf("lease after a failed add: %+v, %v (want released, so another node can take it)", l, err)
	}
}

func TestVerbParams(t *testing.T) {
	ns := startNATS(t)
	_, _, kv := connect(t, ns, "m1")
	k, err := newKeeper(fastConfig("m1", testVIP(), VIPConfig{Address: "10.20.0.5/32", Interface: "eth1"}), kv, newFakeAddrs(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	for _, tc := range []struct {
		name string
		verb string
		req  action.NodeRequest
		ok   bool
	}{
		{"status by address", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.100"}}, true},
		{"status by address and prefix", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "10.20.0.5/32"}}, true},
		{"status for this node", VerbStatus, action.NodeRequest{Node: "m1", Params: map[string]any{"vip": "10.10.0.100"}}, true},
		{"no params", VerbStatus, action.NodeRequest{}, false},
		{"vip nil", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": nil}}, false},
		{"vip not a string", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": 42.0}}, false},
		{"vip list", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": []any{"10.10.0.100"}}}, false},
		{"unknown param", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.100", "interface": "eth9"}}, false},
		{"command injection", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.100; rm -rf /"}}, false},
		{"host name", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "api.example.com"}}, false},
		{"ipv6", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "fd00::100"}}, false},
		{"not configured here", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.101"}}, false},
		{"wrong prefix", VerbStatus, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.100/32"}}, false},
		{"other node", VerbStatus, action.NodeRequest{Node: "m2", Params: map[string]any{"vip": "10.10.0.100"}}, false},
		{"other verb", VerbStatus, action.NodeRequest{Verb: VerbAcquire, Params: map[string]any{"vip": "10.10.0.100"}}, false},
		{"acquire without id", VerbAcquire, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.100"}}, false},
		{"release without id", VerbRelease, action.NodeRequest{Params: map[string]any{"vip": "10.10.0.100"}}, false},
		{"acquire unknown param", VerbAcquire, action.NodeRequest{ID: "x", Params: map[string]any{"vip": "10.10.0.100", "force": true}}, false},
		{"acquire unconfigured", VerbAcquire, action.NodeRequest{ID: "x", Params: map[string]any{"vip": "10.99.0.1"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verbOf(t, k, tc.verb).Run(t.Context(), tc.req, nil)
			if tc.ok {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, action.ErrInvalidParams) {
				t.Fatalf("error %v, want ErrInvalidParams", err)
			}
		})
	}
}

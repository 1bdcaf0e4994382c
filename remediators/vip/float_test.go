package vip

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
)

// floatEnv is a VIP with two real Keepers (m1, m2) on fake addresses, a
// third candidate m3 whose agent never answers, and vip.float over them.
type floatEnv struct {
	kv       jetstream.KeyValue
	m1kv     *flakyKV
	k1, k2   *Keeper
	a1, a2   *fakeAddrs
	caller   *directCaller
	float    *Float
	floatCfg FloatConfig
}

func newFloatEnv(t *testing.T, maxWait time.Duration) *floatEnv {
	t.Helper()
	ns := startNATS(t)
	_, _, kv1 := connect(t, ns, "m1")
	_, _, kv2 := connect(t, ns, "m2")
	_, _, kvServe := connect(t, ns, "serve")
	e := &floatEnv{kv: kvServe, m1kv: &flakyKV{KeyValue: kv1}, a1: newFakeAddrs(), a2: newFakeAddrs(), caller: newDirectCaller()}
	var err error
	if e.k1, err = newKeeper(fastConfig("m1", testVIP()), e.m1kv, e.a1, testLogger(t).With("test_node", "m1")); err != nil {
		t.Fatal(err)
	}
	if e.k2, err = newKeeper(fastConfig("m2", testVIP()), kv2, e.a2, testLogger(t).With("test_node", "m2")); err != nil {
		t.Fatal(err)
	}
	runKeeper(t, e.k1)
	runKeeper(t, e.k2)
	e.caller.register("m1", e.k1.Verbs())
	e.caller.register("m2", e.k2.Verbs())
	e.floatCfg = FloatConfig{
		VIPs:          []FloatVIP{{Address: "10.10.0.100", Candidates: []string{"m1", "m3", "m2"}}},
		StatusTimeout: 200 * time.Millisecond,
		MaxWait:       maxWait,
	}
	if e.float, err = NewFloat(kvServe, e.caller, testLogger(t), e.floatCfg); err != nil {
		t.Fatal(err)
	}
	return e
}

func floatReq(id string) action.Request {
	return action.Request{ID: id, EventID: "ev-" + id, EventType: EventTypeHolderLost, Target: "vip/10.10.0.100", Problem: "vip/10.10.0.100"}
}

// isolate cuts m1's agent off: its renewals fail and nobody reaches it.
func (e *floatEnv) isolate() {
	e.m1kv.mode.Store(kvFail)
	e.caller.setDown("m1", true)
}

func TestFloatInfoAndValidate(t *testing.T) {
	e := newFloatEnv(t, time.Second)
	info := e.float.Info()
	if info.Name != "vip.float" || info.TargetKind != "vip" || info.Runbook != "runbooks/vip.float.md" || info.Disruptive || len(info.RBAC) != 0 {
		t.Fatalf("info %+v", info)
	}
	if err := e.float.Validate(nil); err != nil {
		t.Fatalf("no params: %v", err)
	}
	if err := e.float.Validate(map[string]any{}); err != nil {
		t.Fatalf("empty params: %v", err)
	}
	for _, p := range []map[string]any{{"candidates": []any{"evil"}}, {"vip": "10.10.0.100"}, {"force": true}} {
		if err := e.float.Validate(p); !errors.Is(err, action.ErrInvalidParams) {
			t.Errorf("Validate(%v) = %v, want ErrInvalidParams", p, err)
		}
	}
	for _, tc := range []struct {
		target string
		want   error
	}{
		{"node/m1", action.ErrInvalidParams},
		{"vip/api.example.com", action.ErrInvalidParams},
		{"vip/fd00::1", action.ErrInvalidParams},
		{"vip/10.10.0.200", action.ErrUnsafe},
	} {
		req := floatReq("x")
		req.Target = tc.target
		if err := e.float.Check(t.Context(), req); !errors.Is(err, tc.want) {
			t.Errorf("Check target %s: %v, want %v", tc.target, err, tc.want)
		}
	}
}

func TestFloatCheck(t *testing.T) {
	e := newFloatEnv(t, 1500*time.Millisecond)
	ctx := t.Context()
	addr := mustAddr("10.10.0.100")

	if err := e.float.Check(ctx, floatReq("c0")); err != nil {
		t.Fatalf("Check with no lease: %v, want nil (nobody carries the VIP)", err)
	}
	if _, err := verbOf(t, e.k1, VerbAcquire).Run(ctx, acquireReq("a1", "m1", "10.10.0.100"), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.float.Check(ctx, floatReq("c1")); !errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("Check with a healthy holder: %v, want ErrNotNeeded", err)
	}

	// m1's agent stops answering but m1 still renews: the lease never
	// expires, and Check refuses after MaxWait rather than take it over.
	e.caller.setDown("m1", true)
	start := time.Now()
	err := e.float.Check(ctx, floatReq("c2"))
	if !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("Check with an unresponsive holder that still renews: %v, want ErrUnsafe", err)
	}
	if d := time.Since(start); d < e.floatCfg.MaxWait-700*time.Millisecond {
		t.Errorf("Check gave up after %s, before waiting out the lease", d)
	}

	// Now m1 is cut off for real: Check waits until the lease expired.
	e.isolate()
	if err := e.float.Check(ctx, floatReq("c3")); err != nil {
		t.Fatalf("Check with a lapsed holder: %v", err)
	}
	returned := time.Now()
	last, err := readLease(ctx, e.kv, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !returned.After(last.Expires) {
		t.Fatalf("Check returned at %s, before the lease expired at %s", returned.Format("15:04:05.000"), last.Expires.Format("15:04:05.000"))
	}
	if e.a1.isPresent(addr) {
		t.Fatal("m1 still carries the address after its lease expired: it did not fence")
	}
}

func TestFloatCheckReleased(t *testing.T) {
	e := newFloatEnv(t, time.Second)
	ctx := t.Context()
	if _, err := verbOf(t, e.k1, VerbAcquire).Run(ctx, acquireReq("a1", "m1", "10.10.0.100"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := verbOf(t, e.k1, VerbRelease).Run(ctx, action.NodeRequest{ID: "r1", Params: map[string]any{"vip": "10.10.0.100"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.float.Check(ctx, floatReq("c1")); !errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("Check of a released lease: %v, want ErrNotNeeded", err)
	}
}

// TestFloatCheckFailsClosed checks that a lease that cannot be read makes
// Check refuse: a closed connection, and a server that is gone.
func TestFloatCheckFailsClosed(t *testing.T) {
	cfg := FloatConfig{VIPs: []FloatVIP{{Address: "10.10.0.100", Candidates: []string{"m1", "m2"}}}}
	t.Run("connection closed", func(t *testing.T) {
		ns := startNATS(t)
		nc, _, kv := connect(t, ns, "serve")
		f, err := NewFloat(kv, newDirectCaller(), testLogger(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
		if err := f.Check(t.Context(), floatReq("x")); !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("Check with the bucket unreachable: %v, want ErrUnsafe", err)
		}
		if _, err := f.Act(t.Context(), floatReq("x"), nil); !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("Act with the bucket unreachable: %v, want ErrUnsafe", err)
		}
	})
	t.Run("server down", func(t *testing.T) {
		ns := startNATS(t)
		_, _, kv := connect(t, ns, "serve")
		f, err := NewFloat(kv, newDirectCaller(), testLogger(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ns.Shutdown()
		ns.WaitForShutdown()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if err := f.Check(ctx, floatReq("x")); !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("Check with the server down: %v, want ErrUnsafe", err)
		}
	})
}

func TestFloatActVerify(t *testing.T) {
	e := newFloatEnv(t, 5*time.Second)
	ctx := t.Context()
	addr := mustAddr("10.10.0.100")
	if _, err := verbOf(t, e.k1, VerbAcquire).Run(ctx, acquireReq("a1", "m1", "10.10.0.100"), nil); err != nil {
		t.Fatal(err)
	}
	// Acting while m1's lease is valid is refused.
	if _, err := e.float.Act(ctx, floatReq("early"), nil); !errors.Is(err, action.ErrConflict) {
		t.Fatalf("Act on a valid lease: %v, want ErrConflict", err)
	}
	e.isolate()
	req := floatReq("f1")
	if err := e.float.Check(ctx, req); err != nil {
		t.Fatalf("Check: %v", err)
	}
	var steps []string
	res, err := e.float.Act(ctx, req, func(_ context.Context, step string, d map[string]any) {
		steps = append(steps, step+":"+d["node"].(string))
	})
	if err != nil {
		t.Fatalf("Act: %v", err)
	}
	if !res.Changed || res.Details["to"] != "m2" || res.Details["from"] != "m1" {
		t.Fatalf("Act result %+v, want a change from m1 to m2", res)
	}
	if len(steps) != 1 || steps[0] != "acquire:m2" {
		t.Errorf("progress %v: want m1 (failed holder) and m3 (unreachable) passed over", steps)
	}
	if err := e.float.Verify(ctx, req); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !e.a2.isPresent(addr) || e.a1.isPresent(addr) {
		t.Fatalf("address on m1 %t, m2 %t; want only m2", e.a1.isPresent(addr), e.a2.isPresent(addr))
	}
	l, err := readLease(ctx, e.kv, addr)
	if err != nil || l.Holder != "m2" || l.Term != 2 || l.Action != "f1" {
		t.Fatalf("lease after the float: %+v, %v", l, err)
	}
	// The same action again (a redelivery) changes nothing.
	res, err = e.float.Act(ctx, req, nil)
	if err != nil || res.Changed {
		t.Fatalf("repeated Act: %+v, %v", res, err)
	}
	// Another action finds the VIP held and healthy.
	if err := e.float.Check(ctx, floatReq("f2")); !errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("Check after the float: %v, want ErrNotNeeded", err)
	}
	if err := e.float.Verify(ctx, floatReq("f2")); err == nil {
		t.Fatal("Verify of another action passed")
	}
}

func TestFloatActNoHealthyCandidate(t *testing.T) {
	e := newFloatEnv(t, 5*time.Second)
	ctx := t.Context()
	if _, err := verbOf(t, e.k1, VerbAcquire).Run(ctx, acquireReq("a1", "m1", "10.10.0.100"), nil); err != nil {
		t.Fatal(err)
	}
	e.isolate()
	e.caller.setDown("m2", true)
	if err := e.float.Check(ctx, floatReq("f1")); err != nil {
		t.Fatalf("Check: %v", err)
	}
	_, err := e.float.Act(ctx, floatReq("f1"), nil)
	if err == nil || errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("Act with no healthy candidate: %v, want a failure", err)
	}
	t.Logf("Act: %v", err)
	if e.a2.isPresent(mustAddr("10.10.0.100")) {
		t.Fatal("address added on an unreachable candidate")
	}
}

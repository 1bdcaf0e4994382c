package vip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startNATS runs a real embedded JetStream server for the test.
func startNATS(t testing.TB) *server.Server {
	t.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// connect opens a connection of its own (each agent has one) and returns
// it with the lease bucket, created when missing.
func connect(t testing.TB, ns *server.Server, name string) (*nats.Conn, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := EnsureBucket(t.Context(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, kv
}

// fakeAddrs is an in-memory Addresses that records when addresses go.
type fakeAddrs struct {
	mu        sync.Mutex
	present   map[netip.Addr]bool
	added     map[netip.Addr]time.Time
	removed   map[netip.Addr]time.Time
	announced map[netip.Addr]int
	failAdd   error
}

var _ Addresses = (*fakeAddrs)(nil)

func newFakeAddrs() *fakeAddrs {
	return &fakeAddrs{
		present: map[netip.Addr]bool{}, added: map[netip.Addr]time.Time{},
		removed: map[netip.Addr]time.Time{}, announced: map[netip.Addr]int{},
	}
}

func (f *fakeAddrs) Present(_ context.Context, v VIP) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.present[v.Addr()], nil
}

func (f *fakeAddrs) Add(_ context.Context, v VIP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAdd != nil {
		return f.failAdd
	}
	f.present[v.Addr()] = true
	f.added[v.Addr()] = time.Now()
	return nil
}

func (f *fakeAddrs) Remove(_ context.Context, v VIP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.present[v.Addr()] {
		f.removed[v.Addr()] = time.Now()
	}
	f.present[v.Addr()] = false
	return nil
}

func (f *fakeAddrs) Announce(_ context.Context, v VIP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.announced[v.Addr()]++
	return nil
}

func (f *fakeAddrs) isPresent(a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.present[a]
}

func (f *fakeAddrs) removedAt(a netip.Addr) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.removed[a]
	return t, ok
}

// directCaller is the test's action.NodeCaller: it runs the verbs of the
// agents in-process, with params and details through JSON as on the wire,
// and keeps the agent's contract: a request needs an id and names the
// node, and a repeated id is answered with the first reply (unless the
// params were invalid, so nothing ran).
type directCaller struct {
	mu      sync.Mutex
	agents  map[string]map[string]action.NodeVerb
	down    map[string]bool
	calls   []string
	replies map[string]cachedReply // by node and id
}

type cachedReply struct {
	res action.Result
	err error
}

func newDirectCaller() *directCaller {
	return &directCaller{agents: map[string]map[string]action.NodeVerb{}, down: map[string]bool{}, replies: map[string]cachedReply{}}
}

// register makes verbs answer for node, as the agent does.
func (c *directCaller) register(node string, verbs []action.NodeVerb) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]action.NodeVerb{}
	for _, v := range verbs {
		m[v.Name()] = v
	}
	c.agents[node] = m
	c.down[node] = false
}

// setDown makes node's agent unreachable, or reachable again.
func (c *directCaller) setDown(node string, down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down[node] = down
}

func (c *directCaller) Call(ctx context.Context, req action.NodeRequest) (action.Result, error) {
	c.mu.Lock()
	c.calls = append(c.calls, req.Verb+"@"+req.Node)
	verbs, ok := c.agents[req.Node]
	down := c.down[req.Node]
	c.mu.Unlock()
	if !ok || down {
		return action.Result{}, fmt.Errorf("%w: node %s", action.ErrAgentUnreachable, req.Node)
	}
	if req.ID == "" {
		return action.Result{}, fmt.Errorf("%w: request to node %s has no id", action.ErrInvalidParams, req.Node)
	}
	key := req.Node + "\x00" + req.ID
	c.mu.Lock()
	cached, seen := c.replies[key]
	c.mu.Unlock()
	if seen {
		return cached.res, cached.err
	}
	v, ok := verbs[req.Verb]
	if !ok {
		return action.Result{}, fmt.Errorf("%w: node %s has no verb %q", action.ErrInvalidParams, req.Node, req.Verb)
	}
	res, err := c.run(ctx, v, req)
	if !errors.Is(err, action.ErrInvalidParams) {
		c.mu.Lock()
		c.replies[key] = cachedReply{res, err}
		c.mu.Unlock()
	}
	return res, err
}

func (c *directCaller) run(ctx context.Context, v action.NodeVerb, req action.NodeRequest) (action.Result, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return action.Result{}, err
	}
	var wire action.NodeRequest
	if err := json.Unmarshal(b, &wire); err != nil {
		return action.Result{}, err
	}
	res, err := v.Run(ctx, wire, nil)
	if res.Details != nil {
		b, jerr := json.Marshal(res.Details)
		if jerr != nil {
			return action.Result{}, jerr
		}
		res.Details = nil
		if jerr := json.Unmarshal(b, &res.Details); jerr != nil {
			return action.Result{}, jerr
		}
	}
	return res, err
}

// runKeeper runs k until the test ends; the returned stop cancels it and
// waits for Run to return.
func runKeeper(t testing.TB, k *Keeper) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	// Wait until Run has started (the verbs refuse before).
	deadline := time.Now().Add(10 * time.Second)
	for k.runContext() == nil {
		if time.Now().After(deadline) {
			t.Fatal("keeper did not start")
		}
		time.Sleep(time.Millisecond)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("keeper Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("keeper Run did not return within 10s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// verbOf returns k's verb by name.
func verbOf(t testing.TB, k *Keeper, name string) action.NodeVerb {
	t.Helper()
	for _, v := range k.Verbs() {
		if v.Name() == name {
			return v
		}
	}
	t.Fatalf("keeper has no verb %s", name)
	return nil
}

// fastConfig is a Keeper config with a short lease, for tests that wait
// for expiries.
func fastConfig(node string, vips ...VIPConfig) Config {
	return Config{
		Node: node, VIPs: vips,
		LeaseTTL: 800 * time.Millisecond, FenceMargin: 200 * time.Millisecond, RenewInterval: 200 * time.Millisecond,
		GARPCount: 3, GARPInterval: 20 * time.Millisecond,
	}
}

// testVIP is the VIP of the unit tests.
func testVIP() VIPConfig { return VIPConfig{Address: "10.10.0.100/24", Interface: "eth0"} }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// waitFor polls cond every few ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/remediators/vip"
)

// memAddrs is an Addresses that keeps the addresses in memory: this test is
// about the agent's NATS permissions, the netns tests are about the network.
type memAddrs struct {
	mu sync.Mutex
	on map[string]bool
}

func (m *memAddrs) Present(_ context.Context, v vip.VIP) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on[v.String()], nil
}

func (m *memAddrs) Add(_ context.Context, v vip.VIP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on[v.String()] = true
	return nil
}

func (m *memAddrs) Remove(_ context.Context, v vip.VIP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.on, v.String())
	return nil
}

func (m *memAddrs) Announce(context.Context, vip.VIP) error { return nil }

func startVIPAgent(ctx context.Context, t *testing.T, env *natsEnv, node string, addrs vip.Addresses) {
	t.Helper()
	cfg := agent.Config{
		Node: node, DataDir: t.TempDir(),
		NATS:         agent.NATS{URL: env.url(), User: node, PasswordFile: env.pw[node], ReconnectWait: 50 * time.Millisecond},
		Restart:      restart.Config{Components: []restart.Component{}},
		RuntimePanic: agent.RuntimePanicConfig{Disabled: true},
		VIP:          &vip.Config{VIPs: []vip.VIPConfig{{Address: "10.10.0.100/32", Interface: "eth0"}}},
	}
	a, err := agent.Start(ctx, cfg, slog.New(slog.DiscardHandler), agent.Deps{VIPAddresses: addrs})
	if err != nil {
		t.Fatalf("start agent %s: %v", node, err)
	}
	t.Cleanup(func() { _ = a.Wait() })
}

// TestAgentVIPLeaseWithinItsPermissions: a master's agent, confined to its
// own subjects plus the VIP lease bucket (bus.AgentPermissions with
// KVBuckets), can take and keep a VIP's lease; one without the bucket in its
// permissions cannot, and fails closed.
func TestAgentVIPLeaseWithinItsPermissions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		buckets []string
		ok      bool
	}{
		{"with the lease bucket", []string{vip.Bucket}, true},
		{"without it", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			env := startNATSWith(t, []string{"master-1"}, false, bus.AgentPermissionsOptions{KVBuckets: tc.buckets})
			js, err := jetstream.New(env.service)
			if err != nil {
				t.Fatal(err)
			}
			kv, err := vip.EnsureBucket(ctx, js, 1)
			if err != nil {
				t.Fatal(err)
			}
			addrs := &memAddrs{on: map[string]bool{}}
			startVIPAgent(ctx, t, env, "master-1", addrs)
			client := bus.NewAgentClient(env.service, 2*time.Second)
			_, err = client.Call(ctx, action.NodeRequest{ID: "acq-1", Verb: "vip.acquire", Node: "master-1",
				Params: map[string]any{"vip": "10.10.0.100"}, Deadline: time.Now().Add(3 * time.Second)})
			if !tc.ok {
				if err == nil {
					t.Fatal("an agent without the lease bucket in its permissions took the VIP")
				}
				if !errors.Is(err, action.ErrUnsafe) && !errors.Is(err, action.ErrConflict) {
					t.Logf("refused with %v", err)
				}
				if present, _ := addrs.Present(ctx, vip.VIP{}); present || len(addrs.on) != 0 {
					t.Fatal("the address was added without a lease")
				}
				return
			}
			if err != nil {
				t.Fatalf("vip.acquire: %v", err)
			}
			// The lease is held and renewed: still valid after two TTLs.
			time.Sleep(4 * time.Second)
			entry, err := kv.Get(ctx, vip.LeaseKey(mustAddr(t, "10.10.0.100")))
			if err != nil {
				t.Fatal(err)
			}
			if entry.Revision() < 3 {
				t.Fatalf("lease at revision %d after 4s: not renewed", entry.Revision())
			}
			res, err := client.Call(ctx, action.NodeRequest{ID: "st-1", Verb: "vip.status", Node: "master-1", Params: map[string]any{"vip": "10.10.0.100"}})
			if err != nil || res.Details["lease_held"] != true || res.Details["address_present"] != true {
				t.Fatalf("vip.status: %v %v", res.Details, err)
			}
		})
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

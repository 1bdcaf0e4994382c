//go:build linux

package e2e

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/remediators/vip"
	"github.com/selfheal/healer/test/testenv"
)

const (
	e2eVIP     = "10.10.0.100"
	e2eVIPPort = "6443"
)

// master is a running `healer agent` on a simulated master, its VIP
// addresses in the master's network namespace.
type master struct {
	agent   *agent.Agent
	stopped chan struct{} // closed when the agent has stopped
}

// startMaster runs the agent of host h against e's NATS, keeping the
// VIP's lease with the defaults (lease TTL 2s).
func startMaster(t *testing.T, e *env, h *testenv.NetHost) *master {
	t.Helper()
	addrs, err := vip.NewNetlinkAddresses(h.NS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = addrs.Close() })
	cfg := agent.Config{
		Node:         h.Name,
		DataDir:      t.TempDir(),
		NATS:         e.agentNATS(t, h.Name),
		Restart:      restart.Config{Components: []restart.Component{}},
		RuntimePanic: agent.RuntimePanicConfig{Disabled: true},
		VIP:          &vip.Config{VIPs: []vip.VIPConfig{{Address: e2eVIP + "/24", Interface: testenv.HostLink}}},
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.Start(ctx, cfg, log.With("test_host", h.Name), agent.Deps{Version: "e2e", VIPAddresses: addrs})
	if err != nil {
		cancel()
		t.Fatalf("start agent on %s: %v", h.Name, err)
	}
	m := &master{agent: a, stopped: make(chan struct{})}
	go func() { _ = a.Wait(); close(m.stopped) }()
	t.Cleanup(func() {
		cancel()
		if err := a.Wait(); err != nil {
			t.Errorf("agent on %s: %v", h.Name, err)
		}
	})
	return m
}

// TestVIPFailsOverThroughEngine: two masters in network namespaces run
// real agents keeping a VIP's lease; m1 holds it and answers on it. m1's
// agent loses NATS but keeps running: it cannot renew, so it fences itself
// (removes the address) before the lease expires. Serve's lease watcher
// reports VIPHolderLost, the default policy picks vip.float, and the
// engine moves the VIP to m2 through m2's agent; no test code acts. The
// client then reaches m2 on the VIP, its ARP entry names m2's MAC (the
// gratuitous ARP), and at no sampled instant did both masters carry it.
func TestVIPFailsOverThroughEngine(t *testing.T) {
	network := testenv.NewBridgeNet(t, "m1", "m2", "client")
	m1, m2, client := network.Host("m1"), network.Host("m2"), network.Host("client")
	vipAddr := netip.MustParseAddr(e2eVIP)
	target := net.JoinHostPort(e2eVIP, e2eVIPPort)
	m1.ServeName(t, target)
	m2.ServeName(t, target)

	e := startHealer(t, serve.Config{VIP: vip.FloatConfig{VIPs: []vip.FloatVIP{{Address: e2eVIP, Candidates: []string{"m1", "m2"}}}}})
	a1 := startMaster(t, e, m1)
	startMaster(t, e, m2)
	sampler := testenv.SampleAddr(t, vipAddr, m1, m2)

	// m1 takes the VIP, asked as an operator would.
	nc, err := nats.Connect(e.srv.NATSClientURL(), append(e.srv.NATSOptions(), nats.Name("e2e operator"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := t.Context()
	res, err := bus.NewAgentClient(nc, 0).Call(ctx, action.NodeRequest{
		ID: "initial", Verb: vip.VerbAcquire, Node: "m1", Params: map[string]any{"vip": e2eVIP},
		Deadline: time.Now().Add(10 * time.Second),
	})
	if err != nil || !res.Changed {
		t.Fatalf("m1 acquire: %+v, %v", res, err)
	}
	if got, err := client.Ask(target, time.Second); err != nil || got != "m1" {
		t.Fatalf("client to the VIP before the failover: %q, %v; want m1", got, err)
	}
	if mac, err := client.Neighbour(vipAddr); err != nil || mac.String() != m1.MAC.String() {
		t.Fatalf("client's neighbour entry for the VIP: %v, %v; want m1's %s", mac, err, m1.MAC)
	}
	// A lease's worth of renewals go by over NATS.
	time.Sleep(vip.DefaultLeaseTTL)
	if got, err := client.Ask(target, time.Second); err != nil || got != "m1" {
		t.Fatalf("client to the VIP after renewals: %q, %v; want m1", got, err)
	}

	// m1's agent is cut off from NATS; it keeps running, and so do its
	// keeper, its namespace and its server.
	isolated := time.Now()
	a1.agent.Conn().Close()
	// From here on, a prober asks until m2 answers.
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	answered := client.AnsweredBy(pctx, target, "m2")

	var recs []audit.Record
	vipTarget := url.Values{"target": {"vip/" + e2eVIP}}
	waitFor(t, 20*time.Second, "the float to be verified", func() (bool, string) {
		recs = e.records(vipTarget)
		for _, r := range recs {
			if r.Kind == audit.KindVerified {
				return true, ""
			}
			if r.Kind == audit.KindActionFailed {
				t.Fatalf("the float failed:%s", describe(recs))
			}
		}
		return false, describe(recs)
	})
	var answeredAt time.Time
	select {
	case answeredAt = <-answered:
	case <-pctx.Done():
		t.Fatalf("m2 did not answer on the VIP within 20s of cutting m1 off")
	}

	want := []string{"event", "decision", "action.started", "action.finished", "verified"}
	got := kinds(recs)
	for i, j := 0, 0; i < len(want); j++ {
		if j == len(got) {
			t.Fatalf("audit trail %v lacks %v in order%s", got, want, describe(recs))
		}
		if got[j] == want[i] {
			i++
		}
	}
	var lostAt time.Time
	for _, r := range recs {
		switch r.Kind {
		case audit.KindEvent:
			if !strings.Contains(string(r.Details), vip.EventTypeHolderLost) || !strings.Contains(string(r.Details), `"m1"`) {
				t.Errorf("event is not m1's VIPHolderLost: %s", r.Details)
			}
			if lostAt.IsZero() {
				lostAt = r.Time
			}
		case audit.KindDecision:
			var d struct {
				Decision struct {
					Rule       string `json:"rule"`
					Remediator string `json:"remediator"`
				} `json:"decision"`
			}
			if err := jsonUnmarshal(r.Details, &d); err != nil || d.Decision.Rule != "float_vip" || d.Decision.Remediator != vip.Name {
				t.Errorf("decision: rule %q remediator %q (%v), want float_vip and %s: %s", d.Decision.Rule, d.Decision.Remediator, err, vip.Name, r.Details)
			}
		case audit.KindActionStarted, audit.KindActionFinished, audit.KindVerified:
			if r.Remediator != vip.Name {
				t.Errorf("%s by %q, want %s", r.Kind, r.Remediator, vip.Name)
			}
		}
	}
	for _, r := range recs {
		if r.Kind == audit.KindActionFinished && !strings.Contains(string(r.Details), `"m2"`) {
			t.Errorf("action.finished does not name m2: %s", r.Details)
		}
	}

	if got, err := client.Ask(target, time.Second); err != nil || got != "m2" {
		t.Fatalf("client to the VIP after the failover: %q, %v; want m2", got, err)
	}
	if mac, err := client.Neighbour(vipAddr); err != nil || mac.String() != m2.MAC.String() {
		t.Fatalf("client's neighbour entry for the VIP: %v, %v; want m2's %s", mac, err, m2.MAC)
	}
	// m2 keeps it over renewals, and m1, still running, does not take it
	// back.
	time.Sleep(vip.DefaultLeaseTTL)
	if got, err := client.Ask(target, time.Second); err != nil || got != "m2" {
		t.Fatalf("client to the VIP a lease later: %q, %v; want m2", got, err)
	}
	select {
	case <-a1.stopped:
		t.Fatal("m1's agent stopped: the test was to show that a running but cut-off agent fences itself")
	default:
	}

	seen := sampler.Stop()
	if len(seen.Errs) > 0 {
		t.Errorf("sampler: %d errors, first: %v", len(seen.Errs), seen.Errs[0])
	}
	if len(seen.Both) > 0 {
		t.Errorf("SPLIT BRAIN: both masters carried the VIP at %d sampled instants, first at %s", len(seen.Both), seen.Both[0].Format("15:04:05.000000"))
	}
	m1Gone, m1Went := seen.Gone["m1"]
	m2From, m2Took := seen.First["m2"]
	if _, m1Had := seen.First["m1"]; !m1Had || !m1Went || !m2Took {
		t.Fatalf("sampler saw m1 carry the VIP %t and drop it %t, m2 carry it %t: it did not watch the failover", m1Had, m1Went, m2Took)
	}
	if !m1Gone.Before(m2From) {
		t.Errorf("m1 dropped the VIP at %s, not before m2 carried it at %s", m1Gone.Format("15:04:05.000"), m2From.Format("15:04:05.000"))
	}
	if lostAt.IsZero() {
		t.Fatal("no event record")
	}
	t.Logf("from cutting m1 off: m1 fenced +%s, VIPHolderLost recorded +%s, m2 carried the VIP +%s, m2 answered TCP +%s; %d samples, none with both",
		m1Gone.Sub(isolated).Round(time.Millisecond), lostAt.Sub(isolated).Round(time.Millisecond),
		m2From.Sub(isolated).Round(time.Millisecond), answeredAt.Sub(isolated).Round(time.Millisecond), seen.Samples)
	t.Logf("VIPHolderLost event record to the first TCP answer from m2 on the VIP: %s", answeredAt.Sub(lostAt).Round(100*time.Microsecond))
}

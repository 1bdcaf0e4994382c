package agent_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/test/testenv"
)

// relayEnv is serve's relay of agent events on an embedded NATS server
// with per-node users (bus.AgentPermissions), and one agent's publisher.
type relayEnv struct {
	streams *bus.Streams
	js      jetstream.JetStream
	pub     *agent.Publisher
	metrics *sdkmetric.ManualReader
}

func startRelay(ctx context.Context, t *testing.T) *relayEnv {
	t.Helper()
	env := startNATS(t, []string{"node-a", "node-b"}, false)
	js, err := jetstream.New(env.service)
	if err != nil {
		t.Fatal(err)
	}
	var sc bus.StreamsConfig
	sc.ApplyDefaults()
	streams, err := bus.EnsureStreams(ctx, js, sc)
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	cfg := bus.RelayConfig{Sources: agent.EventSources(), Meter: meter}
	if err := bus.RelayAgentEvents(ctx, env.service, bus.NewPublisher(js, 5*time.Second), cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	a := env.startAgent(ctx, "node-a", testenv.FreeAddr(t))
	pub, err := agent.NewPublisher(a.Conn(), "node-a")
	if err != nil {
		t.Fatal(err)
	}
	return &relayEnv{streams: streams, js: js, pub: pub, metrics: reader}
}

// ids are the ids of the events in HEALER_EVENTS, in order.
func (r *relayEnv) ids(ctx context.Context, t *testing.T) []string {
	t.Helper()
	info, err := r.streams.Events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := r.streams.Events.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := bus.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.ID)
	}
	return out
}

// refused is healer_agent_events_refused by reason.
func (r *relayEnv) refused(ctx context.Context, t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.metrics.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != "healer_agent_events_refused" || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				reason, _ := dp.Attributes.Value("reason")
				out[reason.AsString()] += dp.Value
			}
		}
	}
	return out
}

func nodeEvent(id, source, subject, key string) *bus.Event {
	return &bus.Event{SpecVersion: bus.SpecVersion, ID: id, Source: source, Type: "RuntimePanic",
		Subject: subject, Time: time.Now().UTC(), Status: bus.StatusFiring, Key: key}
}

// TestAgentRelayRefusesWhatItsNodeCannotSay: an agent's credentials let it
// publish only on its own events subject, and the relay holds it to what
// its node's detectors may say: about its own node, from a node-local
// source, with a key of its own node and an id of a plain form. Each
// refusal is answered, counted by reason, and stores nothing.
func TestAgentRelayRefusesWhatItsNodeCannotSay(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := startRelay(ctx, t)

	if res, err := r.pub.Publish(ctx, nodeEvent("rp-1", "runtimepanic", "node/node-a", "node-a/containerd")); err != nil || res.Stored != 1 {
		t.Fatalf("own event: %+v %v", res, err)
	}
	if res, err := r.pub.Publish(ctx, nodeEvent("rp-1", "runtimepanic", "node/node-a", "node-a/containerd")); err != nil || res.Duplicates != 1 {
		t.Fatalf("the same event again: %+v %v, want a duplicate", res, err)
	}
	for _, tc := range []struct {
		name   string
		ev     *bus.Event
		want   error
		reason string
	}{
		{"as alertmanager", nodeEvent("am-1", "alertmanager", "node/node-a", "node-a/fp"), bus.ErrForeignSource, "foreign_source"},
		{"as the etcd member detector", nodeEvent("em-1", "etcdmember", "node/node-a", "node-a:member"), bus.ErrForeignSource, "foreign_source"},
		{"as the node problem detector", nodeEvent("np-1", "nodeproblem", "node/node-a", "node-a/KernelDeadlock"), bus.ErrForeignSource, "foreign_source"},
		{"as a made-up source", nodeEvent("x-1", "runtimepanic2", "node/node-a", "node-a/x"), bus.ErrForeignSource, "foreign_source"},
		{"about another node", nodeEvent("rp-2", "runtimepanic", "node/node-b", "node-b/containerd"), bus.ErrForgedEvent, "other_node"},
		{"about an etcd member", nodeEvent("rp-3", "runtimepanic", "etcd/member-2", "node-a/x"), bus.ErrForgedEvent, "other_node"},
		{"with another node's key", nodeEvent("ce-1", "certexpiry", "node/node-a", "node-b:file:/etc/kubernetes/pki/apiserver.crt"), bus.ErrForeignKey, "foreign_key"},
		{"with a key only prefixed by the node's name", nodeEvent("rp-4", "runtimepanic", "node/node-a", "node-ab/containerd"), bus.ErrForeignKey, "foreign_key"},
		{"with an id holding a slash", nodeEvent("node-b/rp-5", "runtimepanic", "node/node-a", "node-a/containerd"), bus.ErrBadEvent, "bad_id"},
		{"with an id holding a newline", nodeEvent("rp-6\nam-1", "runtimepanic", "node/node-a", "node-a/containerd"), bus.ErrBadEvent, "bad_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.refused(ctx, t)[tc.reason]
			_, err := r.pub.Publish(ctx, tc.ev)
			if err == nil || !strings.Contains(err.Error(), tc.want.Error()) {
				t.Fatalf("Publish = %v, want refused with %q", err, tc.want)
			}
			if got := r.refused(ctx, t)[tc.reason]; got != before+1 {
				t.Fatalf("healer_agent_events_refused{reason=%q} = %d, want %d", tc.reason, got, before+1)
			}
		})
	}
	if ids := r.ids(ctx, t); !slices.Equal(ids, []string{"node-a/rp-1"}) {
		t.Fatalf("HEALER_EVENTS holds %q, want only node-a/rp-1", ids)
	}
}

// TestAgentEventIDsAreTheirNodes: an agent that reuses an Alertmanager
// event's id, or another node's, is stored under its own node's id and not
// taken for a duplicate of the other event.
func TestAgentEventIDsAreTheirNodes(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := startRelay(ctx, t)
	alert := nodeEvent("am-0123456789abcdef", "alertmanager", "node/node-a", "fp-1")
	if res, err := bus.NewPublisher(r.js, 5*time.Second).Publish(ctx, alert); err != nil || res.Stored != 1 {
		t.Fatalf("alert: %+v %v", res, err)
	}
	res, err := r.pub.Publish(ctx, nodeEvent(alert.ID, "runtimepanic", "node/node-a", "node-a/kubelet"))
	if err != nil || res.Stored != 1 || res.Duplicates != 0 {
		t.Fatalf("agent event reusing the alert's id: %+v %v, want stored, not a duplicate", res, err)
	}
	want := []string{alert.ID, bus.AgentEventID("node-a", alert.ID)}
	if ids := r.ids(ctx, t); !slices.Equal(ids, want) {
		t.Fatalf("HEALER_EVENTS holds %q, want %q", ids, want)
	}
}

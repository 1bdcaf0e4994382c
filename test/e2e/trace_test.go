package e2e

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/internal/telemetry"
	"github.com/selfheal/healer/test/testenv"
)

// collector is an OTLP/gRPC trace receiver on loopback that keeps every
// span it is sent.
type collector struct {
	coltrace.UnimplementedTraceServiceServer
	addr string

	mu    sync.Mutex
	spans []*tracepb.Span
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{addr: ln.Addr().String()}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return c
}

func (c *collector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// trace returns the names of the spans of trace id, and their parents.
func (c *collector) trace(id string) (names []string, byID map[string]*tracepb.Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byID = map[string]*tracepb.Span{}
	for _, s := range c.spans {
		if hex.EncodeToString(s.GetTraceId()) == id {
			names = append(names, s.GetName())
			byID[hex.EncodeToString(s.GetSpanId())] = s
		}
	}
	return names, byID
}

// An alert's trace goes from the webhook through JetStream to the engine's
// stages and the remediator, exported over OTLP to a collector; the audit
// records of the event carry its trace id.
func TestTraceFollowsAnAlert(t *testing.T) {
	col := startCollector(t)
	kube := testenv.StartKube(t)
	testenv.CreateNodes(t.Context(), t, kube.Client, "worker-1", "worker-2", "worker-3")
	h := startHealer(t, serve.Config{
		Kubeconfig: kube.KubeconfigPath, Tracing: telemetry.Config{Endpoint: col.addr, Insecure: true},
		Engine: engine.Config{Budget: guard.BudgetConfig{MinNodes: 1}},
	})
	if code, body := h.post(readTestdata(t, "kernel-deadlock-firing.json"), h.srv.WebhookToken); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "worker-1 cordoned and verified", func() (bool, string) {
		n, err := kube.Client.CoreV1().Nodes().Get(t.Context(), "worker-1", metav1.GetOptions{})
		recs := h.records(url.Values{"target": {"node/worker-1"}, "kind": {"verified"}})
		return err == nil && n.Spec.Unschedulable && len(recs) == 1, describe(recs)
	})
	// The event stays in hand until the problem clears; then its spans end.
	if code, body := h.post(readTestdata(t, "kernel-deadlock-resolved.json"), h.srv.WebhookToken); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	recs := h.records(url.Values{"target": {"node/worker-1"}})
	first := recs[0].EventID
	recs = slices.DeleteFunc(recs, func(r audit.Record) bool { return r.EventID != first })
	id := recs[0].TraceID
	if len(id) != 32 {
		t.Fatalf("event record's trace id %q", id)
	}
	for _, r := range recs {
		if r.TraceID != id {
			t.Fatalf("record %d (%s) has trace id %q, the event %q", r.Seq, r.Kind, r.TraceID, id)
		}
	}
	want := []string{"alertmanager.webhook", "engine.event", "engine.dedupe", "engine.decide", "engine.guard", "engine.approve", "engine.act", "remediate node.cordon"}
	var names []string
	var spans map[string]*tracepb.Span
	waitFor(t, 10*time.Second, "the trace at the collector", func() (bool, string) {
		names, spans = col.trace(id)
		for _, w := range want {
			if !slices.Contains(names, w) {
				return false, "spans so far: " + strings.Join(names, ", ")
			}
		}
		return true, ""
	})
	// The engine's span is a child of the webhook's, across JetStream.
	parentOf := func(name string) string {
		for _, s := range spans {
			if s.GetName() == name {
				if p := spans[hex.EncodeToString(s.GetParentSpanId())]; p != nil {
					return p.GetName()
				}
				return ""
			}
		}
		return "(missing)"
	}
	for child, parent := range map[string]string{"engine.event": "alertmanager.webhook", "engine.act": "engine.event", "remediate node.cordon": "engine.act"} {
		if got := parentOf(child); got != parent {
			t.Errorf("parent of %s = %q, want %q", child, got, parent)
		}
	}

	// /metrics has the pipeline's counters and the guards' state.
	m := metricsText(t, h.srv.URL())
	for _, re := range []string{
		`healer_events_total\{[^}]*type="NodeKernelDeadlock"[^}]*\} 2`,
		`healer_decisions_total\{[^}]*remediator="node.cordon"[^}]*\} 2`,
		`healer_actions_total\{[^}]*remediator="node.cordon"[^}]*result="finished"[^}]*step="act"[^}]*\} 1`,
		`healer_decision_duration_seconds_count\{[^}]*\} 2`,
		`healer_breaker_state\{[^}]*remediator="node.drain"[^}]*\} 0`,
		`healer_budget_nodes\{[^}]*state="total"[^}]*\} 3`,
		`healer_budget_known\{[^}]*\} 1`,
		`go_memstats_heap_alloc_bytes [0-9.e+]+`,
		`process_resident_memory_bytes [0-9.e+]+`,
	} {
		if !regexp.MustCompile(re).MatchString(m) {
			t.Errorf("/metrics lacks %s", re)
		}
	}
}

// metricsText reads /metrics.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

package agent_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/bus/bustest"
	"github.com/selfheal/healer/internal/app/agent"
)

// A request carries the engine's trace context in its NATS headers; the
// agent's span for it is a child of the caller's span.
func TestAgentRequestJoinsTheCallersTrace(t *testing.T) {
	srv := bustest.Start(t)
	rec := tracetest.NewSpanRecorder()
	agentTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	s, err := agent.NewServer("node-a", srv.NC, nil, 2, time.Minute, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.SetTracer(agentTP.Tracer("agent"))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	engineTP := sdktrace.NewTracerProvider()
	callCtx, parent := engineTP.Tracer("engine").Start(t.Context(), "remediate component.restart")
	client := bus.NewAgentClient(srv.NC, 2*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := client.Call(callCtx, action.NodeRequest{ID: "act-trace", Verb: agent.VerbPing, Node: "node-a"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	parent.End()

	var found bool
	for _, sp := range rec.Ended() {
		if sp.Name() != "agent ping" {
			continue
		}
		found = true
		if sp.Parent().TraceID() != parent.SpanContext().TraceID() || sp.Parent().SpanID() != parent.SpanContext().SpanID() || !sp.Parent().IsRemote() {
			t.Fatalf("agent span's parent %v, want the caller's span %v", sp.Parent(), parent.SpanContext())
		}
	}
	if !found {
		var names []string
		for _, sp := range rec.Ended() {
			names = append(names, sp.Name())
		}
		t.Fatalf("no span for the request; spans: %v", names)
	}
}

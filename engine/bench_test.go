package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
)

// BenchmarkPipelineDryRun measures events per second through the whole
// pipeline of one engine on embedded JetStream: dedupe (KV), decide (OPA),
// guard (dry-run: suppressed) and audit (event, decision and suppressed
// records, hash-chained), with the outcome recorded and the message
// acknowledged. Events are published before the clock starts; each has
// its own target, so they run concurrently across the workers.
func BenchmarkPipelineDryRun(b *testing.B) {
	h := newHarness(b, Config{DryRun: true, Workers: 32}, nil)
	h.stop() // publish first, then let the engine loose
	events := make([]*bus.Event, b.N)
	for i := range events {
		events[i] = event("Count", fmt.Sprintf("node/bench-%d", i), bus.StatusFiring)
	}
	pub := bus.NewPublisher(h.js, 30*time.Second)
	for i := 0; i < len(events); i += 500 {
		if _, err := pub.Publish(b.Context(), events[i:min(i+500, len(events))]...); err != nil {
			b.Fatal(err)
		}
	}
	last := events[len(events)-1]
	start := time.Now()
	b.ResetTimer()
	h.start()
	// Settled when every event has its suppressed record: 3 per event,
	// after the policy.loaded-free start.
	want := uint64(3 * b.N)
	for {
		seq, err := h.trail.LastSeq(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if seq >= want {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%d of %d records after 10 minutes", seq, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
	recs, err := h.trail.Query(b.Context(), audit.Filter{EventID: last.ID})
	if err != nil || len(recs) != 3 || recs[2].Kind != audit.KindSuppressed {
		b.Fatalf("records of the last event: %v %v", recs, err)
	}
}

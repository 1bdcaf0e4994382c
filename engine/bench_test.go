package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
)

// BenchmarkPipelineDryRun measures events per second through the whole
// pipeline of one engine on embedded JetStream: dedupe (KV), decide (OPA),
// guard (dry-run: suppressed) and audit (event, decision and suppressed
// records, hash-chained), with the outcome recorded and the message
// acknowledged. Events are published before the clock starts; each has
// its own target, so they run concurrently across the workers.
//
// It also reports js-ops/event: the messages the engine's connection sent
// to the server per event (JetStream publishes, key-value reads and
// writes, acks, pull requests), which unlike events/s does not depend on
// what else runs on the machine. The progress polling goes through a
// connection of its own so it is not counted. cpu-µs/event is the CPU time
// of the whole process (engine and embedded server) per event, which tells
// whether the machine's cores or the round trips set the pace.
func BenchmarkPipelineDryRun(b *testing.B) {
	// The default workers and maxActions; publish first, then let the
	// engine loose.
	h := newHarness(b, Config{DryRun: true}, nil)
	h.stop()
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
	_, pollJS := h.srv.Connect(b)
	poll := audit.NewTrail(pollJS, nil)
	sentBefore, cpuBefore := h.sent(), cpuTime()
	last := events[len(events)-1]
	start := time.Now()
	b.ResetTimer()
	h.start()
	// Settled when every event has its suppressed record: 3 per event,
	// after the policy.loaded-free start.
	want := uint64(3 * b.N)
	for {
		seq, err := poll.LastSeq(b.Context())
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
	took, cpu := time.Since(start), cpuTime()-cpuBefore
	b.StopTimer()
	h.stop() // its last acks are sent before the count is taken
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
	b.ReportMetric(float64(h.sent()-sentBefore)/float64(b.N), "js-ops/event")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
	recs, err := h.trail.Query(b.Context(), audit.Filter{EventID: last.ID})
	if err != nil || len(recs) != 3 || recs[2].Kind != audit.KindSuppressed {
		b.Fatalf("records of the last event: %v %v", recs, err)
	}
}

// sent returns how many messages the harness's client connection (the
// engine's) has sent to the server.
func (h *harness) sent() int64 {
	h.t.Helper()
	if err := h.srv.NC.Flush(); err != nil { // what is buffered is on its way
		h.t.Fatal(err)
	}
	cid, err := h.srv.NC.GetClientID()
	if err != nil {
		h.t.Fatal(err)
	}
	cz, err := h.srv.NS.Connz(&server.ConnzOptions{CID: cid})
	if err != nil || len(cz.Conns) != 1 {
		h.t.Fatalf("connection %d: %v", cid, err)
	}
	return cz.Conns[0].InMsgs
}

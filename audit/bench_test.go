package audit_test

import (
	"testing"

	"github.com/selfheal/healer/audit"
)

// BenchmarkAppend measures appends to a file-backed stream on an embedded
// server through one Trail, reporting records/s.
func BenchmarkAppend(b *testing.B) {
	env := startJetStream(b)
	tr := audit.NewTrail(env.js, nil)
	rec := audit.Record{
		Kind: audit.KindActionFinished, EventID: "evt-1", Target: "node/worker-1",
		Remediator: "node.cordon", Actor: "healer/engine", PolicyRevision: "rev-1",
		Details: audit.Details("duration", "1.2s", "result", "cordoned"),
	}
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := tr.Append(ctx, rec); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

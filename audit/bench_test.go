package audit_test

import (
	"testing"

	"github.com/selfheal/healer/audit"
)

// BenchmarkAppend measures appends to a file-backed stream on an embedded
// server through one Trail, reporting records/s: plain, and tagged with a
// signing key as serve appends.
func BenchmarkAppend(b *testing.B) {
	forEachTrail(b, func(b *testing.B, tr *audit.Trail) {
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
	})
}

// BenchmarkAppendAll measures batched appends (256 records a call), where
// the cost per record is the committer's, not the round trip's.
func BenchmarkAppendAll(b *testing.B) {
	forEachTrail(b, func(b *testing.B, tr *audit.Trail) {
		recs := make([]audit.Record, 256)
		for i := range recs {
			recs[i] = audit.Record{Kind: audit.KindDecision, EventID: "evt-1", Target: "node/worker-1", Actor: "healer/engine", Details: audit.Details("i", i)}
		}
		ctx := b.Context()
		b.ResetTimer()
		for b.Loop() {
			if _, err := tr.AppendAll(ctx, recs...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
	})
}

// forEachTrail runs fn as a sub-benchmark on a fresh stream for a Trail
// without a key ("plain") and one tagging records ("tagged").
func forEachTrail(b *testing.B, fn func(*testing.B, *audit.Trail)) {
	key, err := audit.NewSigningKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		opts []audit.TrailOption
	}{
		{"plain", nil},
		{"tagged", []audit.TrailOption{audit.WithSigningKey(key)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			env := startJetStream(b)
			fn(b, audit.NewTrail(env.js, nil, bc.opts...))
		})
	}
}

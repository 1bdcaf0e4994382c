package policies

import (
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// BenchmarkDecide measures one decision of the default policy for a firing
// NodeKernelDeadlock event, and reports the median and 99th percentile
// latency of single decisions besides the mean.
func BenchmarkDecide(b *testing.B) {
	p, err := Load(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	benchDecideWith(b, p)
}

func benchDecideWith(b *testing.B, p *Policy) {
	ctx := context.Background()
	in := &Input{
		Event: &bus.Event{
			SpecVersion: bus.SpecVersion, ID: "3f1c2a9e-6b1d-4c57-9d0e-8a4f2b7c1d10", Source: "alertmanager",
			Type: "NodeKernelDeadlock", Subject: "node/worker-1", Time: time.Now(),
			DataContentType: "application/json", Status: bus.StatusFiring, Key: "a1b2c3d4e5f60718",
			Data: json.RawMessage(`{"alertname":"NodeKernelDeadlock","severity":"critical","labels":{"node":"worker-1"}}`),
		},
		Context: Context{
			Now:    time.Now(),
			Budget: Budget{TotalNodes: 10, OutOfService: 1, Allowed: 2, Available: 1, Known: true},
			RecentActions: []RecentAction{
				{Remediator: "node.cordon", Target: "node/worker-7", Time: time.Now().Add(-time.Hour), Result: "finished"},
			},
		},
	}
	d, err := p.Decide(ctx, in)
	if err != nil || d.Remediator != "node.cordon" {
		b.Fatalf("Decide = %+v, %v; want node.cordon", d, err)
	}

	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := p.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	if len(durations) == 0 {
		return
	}
	slices.Sort(durations)
	pct := func(q float64) float64 {
		return float64(durations[int(q*float64(len(durations)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkDecideLiveHeap is BenchmarkDecide with 64 MiB of live heap
// beside it, as a serving replica has (watch caches, connections,
// buffers). The collector then runs far less often than around the tiny
// heap of a bare benchmark, which is what the tail latency mostly is.
func BenchmarkDecideLiveHeap(b *testing.B) {
	live := make([][]byte, 64)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	p, err := Load(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	benchDecideWith(b, p)
	runtime.KeepAlive(live)
}

package policies

import (
	"context"
	"encoding/json"
	"testing"
	"slices"
	"time"
	"os"
	"path/filepath"

	"github.com/selfheal/healer/bus"
)

func exploreInput() *Input {
	return &Input{
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
}

func benchPolicy(b *testing.B, src string) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "healer.rego"), []byte(src), 0o644)
	p, err := Load(context.Background(), dir)
	if err != nil { b.Fatal(err) }
	in := exploreInput()
	b.ReportAllocs()
	durs := make([]time.Duration, 0, 1<<20)
	for b.Loop() {
		t0 := time.Now()
		if _, err := p.Decide(context.Background(), in); err != nil { b.Fatal(err) }
		durs = append(durs, time.Since(t0))
	}
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds())/1e3, "p99-µs")
}

func BenchmarkXTrivial(b *testing.B) { benchPolicy(b, "package healer\n\ndecision := {\"reason\": \"x\"}\n") }
func BenchmarkXInput(b *testing.B) {
	k := newInputBuilder(nil); in := exploreInput()
	b.ReportAllocs()
	for b.Loop() { k.value(in) }
}
func BenchmarkXDefault(b *testing.B) {
	src, _ := os.ReadFile("healer.rego")
	benchPolicy(b, string(src))
}

func benchFile(b *testing.B, f string) {
	src, err := os.ReadFile(f)
	if err != nil { b.Fatal(err) }
	benchPolicy(b, string(src))
}
func BenchmarkXB(b *testing.B) { benchFile(b, "/tmp/variants/b.rego") }
func BenchmarkXC(b *testing.B) { benchFile(b, "/tmp/variants/c.rego") }
func BenchmarkXD(b *testing.B) { benchFile(b, "/tmp/variants/d.rego") }
func BenchmarkXE(b *testing.B) { benchFile(b, "/tmp/variants/e.rego") }
func BenchmarkXF(b *testing.B) { benchFile(b, "/tmp/variants/f.rego") }
func BenchmarkXG(b *testing.B) { benchFile(b, "/tmp/variants/g.rego") }
func BenchmarkXH(b *testing.B) { benchFile(b, "/tmp/variants/h.rego") }
func BenchmarkXI(b *testing.B) { benchFile(b, "/tmp/variants/i.rego") }
func BenchmarkXJ(b *testing.B) { benchFile(b, "/tmp/variants/j.rego") }
func BenchmarkXK(b *testing.B) { benchFile(b, "/tmp/variants/k.rego") }
func BenchmarkXL(b *testing.B) { benchFile(b, "/tmp/variants/l.rego") }
func BenchmarkXM(b *testing.B) { benchFile(b, "/tmp/variants/m.rego") }
func BenchmarkXN(b *testing.B) { benchFile(b, "/tmp/variants/n.rego") }
func BenchmarkXO(b *testing.B) { benchFile(b, "/tmp/variants/o.rego") }
func BenchmarkXP0(b *testing.B) { benchFile(b, "/tmp/variants/p0.rego") }
func BenchmarkXP1(b *testing.B) { benchFile(b, "/tmp/variants/p1.rego") }
func BenchmarkXP2(b *testing.B) { benchFile(b, "/tmp/variants/p2.rego") }
func BenchmarkXP3(b *testing.B) { benchFile(b, "/tmp/variants/p3.rego") }

//go:build linux

package scale

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/detectors/nodeproblem"
	"github.com/selfheal/healer/engine/guard"
)

// watchCost is what one of serve's Node watches costs when run alone in
// this process, on the cluster the process measurement used.
type watchCost struct {
	name    string
	sync    time.Duration // start to every node handled
	live    int64         // bytes of live heap it adds once synced (after GC)
	peak    int64         // largest live heap seen while it synced, above the start
	alloced int64         // bytes allocated while it synced
}

// watchBreakdown runs each Node watch of serve on its own in this process,
// with a client configured as serve configures it (its QPS, client-go's
// default content type, which for built-in types is protobuf), and returns
// what each costs. serve itself exposes no heap profile, so this is where
// its heap goes.
func watchBreakdown(ctx context.Context, tb testing.TB, kubeconfig string, nodes int) []watchCost {
	tb.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		tb.Fatalf("kubeconfig: %v", err)
	}
	rc.QPS, rc.Burst = 100, 200 // serve's defaults (kubeQPS, kubeBurst)
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	costs := []watchCost{
		measureWatch(ctx, tb, "budget", func(ctx context.Context) (any, error) {
			b := guard.NewBudget(guard.BudgetConfig{}, client, log)
			if err := b.Start(ctx, 10*time.Minute); err != nil {
				return nil, err
			}
			for {
				if st, err := b.State(); err == nil && st.TotalNodes == nodes {
					return b, nil
				}
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
			}
		}),
		measureWatch(ctx, tb, "node-problem detector", func(ctx context.Context) (any, error) {
			d, err := nodeproblem.New(nodeproblem.Config{}, client, nopPublisher{}, log)
			if err != nil {
				return nil, err
			}
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			select {
			case <-d.Synced():
			case err := <-done:
				return nil, fmt.Errorf("node-problem detector: %w", err)
			}
			if n := d.Stats().Nodes; n != nodes {
				return nil, fmt.Errorf("node-problem detector synced with %d nodes, want %d", n, nodes)
			}
			return d, nil
		}),
	}
	for _, c := range costs {
		tb.Logf("in this process, %s: synced %d nodes in %s; live heap +%.1f MiB (%.0f B/node), peak during sync +%.1f MiB, %.0f MiB allocated",
			c.name, nodes, c.sync.Round(100*time.Millisecond), mib(c.live), float64(c.live)/float64(nodes), mib(c.peak), mib(c.alloced))
	}
	return costs
}

// measureWatch starts a watch with start, which returns once every node
// has been handled and gives what must stay alive, and measures it; the
// watch is stopped afterwards.
func measureWatch(ctx context.Context, tb testing.TB, name string, start func(context.Context) (any, error)) watchCost {
	tb.Helper()
	ctx, cancel := context.WithCancel(ctx)
	before := liveHeap()
	peak := sampleHeap(5 * time.Millisecond)
	allocBefore := allocated()
	begin := time.Now()
	keep, err := start(ctx)
	if err != nil {
		cancel()
		tb.Fatalf("%s: %v", name, err)
	}
	c := watchCost{name: name, sync: time.Since(begin), alloced: int64(allocated() - allocBefore)}
	c.peak = peak.stop() - before
	c.live = liveHeap() - before
	runtime.KeepAlive(keep)
	cancel()
	time.Sleep(time.Second) // let the informers stop
	return c
}

// liveHeap collects garbage and returns the bytes of live heap objects.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapSampler records the largest live heap the collector reports (the
// heap marked live by the last collection), sampling it until stopped.
type heapSampler struct {
	stopCh chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	max    int64
}

func sampleHeap(interval time.Duration) *heapSampler {
	h := &heapSampler{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			metrics.Read(s)
			h.mu.Lock()
			h.max = max(h.max, int64(s[0].Value.Uint64()))
			h.mu.Unlock()
			select {
			case <-h.stopCh:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) stop() int64 {
	close(h.stopCh)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

// nopPublisher stores nothing; the clusters here have no problems to report.
type nopPublisher struct{}

func (nopPublisher) Publish(_ context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	return bus.PublishResult{Stored: len(events)}, nil
}

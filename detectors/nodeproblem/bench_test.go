//go:build unix

package nodeproblem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/test/testenv"
)

// Sizes of the benchmark. Run it once: the setup (10,000 Nodes in a real
// apiserver) takes minutes, and every figure is measured over many
// operations inside one run:
//
//	go test -run '^$' -bench Detector -benchtime 1x ./detectors/nodeproblem/
const (
	benchNodes     = 10000
	benchWorkers   = 16
	benchChanges   = 1000 // nodes whose condition is set, then cleared, in the throughput phase
	benchLatencies = 200  // sequential changes timed one by one
)

// BenchmarkDetector measures the detector on 10,000 Nodes in a real
// kube-apiserver, publishing to a real embedded JetStream:
//
//   - initial-sync: time from Run to the initial list handled, and the live
//     heap the detector adds (after GC, minus the heap before it started),
//     next to the heap of a plain Node informer without the transform;
//   - changes: CPU per condition change and per heartbeat (a patch that
//     changes nothing), events/s with 16 concurrent patchers, and the
//     latency from SetNodeCondition to the event acknowledged by JetStream.
func BenchmarkDetector(b *testing.B) {
	k := testenv.StartKube(b)
	ctx := b.Context()
	client, err := newBenchClient(k.Config)
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, benchNodes)
	for i := range names {
		names[i] = nodeName(i)
	}
	begin := time.Now()
	testenv.CreateNodesParallel(ctx, b, client, benchWorkers, names...)
	b.Logf("created %d nodes with %d workers in %s", benchNodes, benchWorkers, time.Since(begin).Round(time.Second))
	pub, _ := startBus(ctx, b)

	b.Run("initial-sync", func(b *testing.B) {
		var syncs []time.Duration
		var alloc, inuse, plain float64
		for range b.N {
			before := heap()
			d, err := New(Config{}, client, pub, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- d.Run(runCtx) }()
			select {
			case <-d.Synced():
			case err := <-done:
				b.Fatalf("Run: %v", err)
			}
			syncs = append(syncs, time.Since(start))
			after := heap()
			if n := d.Stats().Nodes; n < benchNodes {
				b.Fatalf("synced with %d nodes, want %d", n, benchNodes)
			}
			alloc = mib(after.HeapAlloc - before.HeapAlloc)
			inuse = mib(after.HeapInuse - before.HeapInuse)
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			plain = plainInformerHeap(ctx, b, client)
		}
		slices.Sort(syncs)
		med := syncs[len(syncs)/2]
		b.ReportMetric(float64(med.Milliseconds()), "ms/sync")
		b.ReportMetric(alloc, "MiB-live-heap")
		b.ReportMetric(inuse, "MiB-heap-inuse")
		b.ReportMetric(plain, "MiB-live-heap-untransformed")
		b.ReportMetric(alloc*1024*1024/benchNodes, "B/node")
		b.Logf("initial sync of %d nodes: %s; live heap +%.1f MiB (%.0f B/node), heap in use +%.1f MiB; a plain Node informer without the transform: +%.1f MiB",
			benchNodes, med.Round(time.Millisecond), alloc, alloc*1024*1024/benchNodes, inuse, plain)
	})

	b.Run("changes", func(b *testing.B) {
		for range b.N {
			benchChangesOnce(ctx, b, k.KubeconfigPath, client, pub, names)
		}
	})
}

func benchChangesOnce(ctx context.Context, b *testing.B, kubeconfig string, client kubernetes.Interface, pub Publisher, names []string) {
	// Disjoint node ranges, so every patch of a phase is a real transition.
	base := [2]int{0, benchChanges}
	load := [2]int{benchChanges, 2 * benchChanges}
	latNodes := names[2*benchChanges : 2*benchChanges+benchLatencies/2]

	// What the apiserver sustains with no detector running.
	baseWall := runPatcher(ctx, b, kubeconfig, base, corev1.ConditionTrue)
	baseWall += runPatcher(ctx, b, kubeconfig, base, corev1.ConditionFalse)
	patchRate := float64(2*benchChanges) / baseWall.Seconds()

	acks := &ackTimes{inner: pub, at: map[string]time.Time{}, waiters: map[string]chan struct{}{}}
	d, err := New(Config{}, client, acks, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	select {
	case <-d.Synced():
	case err := <-done:
		b.Fatalf("Run: %v", err)
	}

	// Throughput and CPU: set on every load node, then clear, patched by
	// a child process so that this process's CPU time is the informer's,
	// the detector's and JetStream's alone.
	wait := func(status string) {
		b.Helper()
		deadline := time.After(5 * time.Minute)
		for _, n := range names[load[0]:load[1]] {
			select {
			case <-acks.wait(ConditionKey(n, "KernelDeadlock") + "|" + status):
			case <-deadline:
				b.Fatalf("no %s event for %s within 5m", status, n)
			}
		}
	}
	cpu1, t1 := cpuTime(), time.Now()
	runPatcher(ctx, b, kubeconfig, load, corev1.ConditionTrue)
	wait(bus.StatusFiring)
	runPatcher(ctx, b, kubeconfig, load, corev1.ConditionFalse)
	wait(bus.StatusResolved)
	changes := 2 * benchChanges
	changeWall := time.Since(t1)
	changeCPU := (cpuTime() - cpu1) / time.Duration(changes)

	// Heartbeats: the same status again, as node-problem-detector and the
	// kubelet re-report it; nothing to publish, but every one is a watch
	// event to decode and look at. lastHeartbeatTime has one-second
	// precision: a patch within the second of the last one changes nothing
	// and the apiserver sends no watch event, so let a second pass.
	time.Sleep(1100 * time.Millisecond)
	updates0 := d.Stats().NodeUpdates
	cpu2 := cpuTime()
	runPatcher(ctx, b, kubeconfig, load, corev1.ConditionFalse)
	waitFor(b, time.Minute, func() bool { return d.Stats().NodeUpdates >= updates0+benchChanges })
	heartbeatCPU := (cpuTime() - cpu2) / benchChanges

	// Latency, one change at a time: from the call that sets the condition
	// (a GET and a strategic merge patch of the status, as NPD does) to
	// JetStream's ack of the event.
	var lat, rtt []time.Duration
	for i := range benchLatencies {
		node := latNodes[i/2]
		status, reason, ev := corev1.ConditionTrue, "DockerHung", bus.StatusFiring
		if i%2 == 1 {
			status, reason, ev = corev1.ConditionFalse, "KernelHasNoDeadlock", bus.StatusResolved
		}
		key := ConditionKey(node, "KernelDeadlock") + "|" + ev
		ack := acks.wait(key)
		start := time.Now()
		if _, err := testenv.PatchNodeCondition(ctx, client, node, "KernelDeadlock", status, reason, "bench"); err != nil {
			b.Fatal(err)
		}
		rtt = append(rtt, time.Since(start))
		select {
		case <-ack:
		case <-time.After(30 * time.Second):
			b.Fatalf("no %s event for %s within 30s", ev, node)
		}
		lat = append(lat, acks.get(key).Sub(start))
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if st := d.Stats(); st.PublishErrors != 0 {
		b.Errorf("publish errors during the benchmark: %+v", st)
	}

	rate := float64(changes) / changeWall.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(float64(changeCPU.Microseconds()), "cpu-µs/change")
	b.ReportMetric(float64(heartbeatCPU.Microseconds()), "cpu-µs/heartbeat")
	b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
	b.ReportMetric(ms(pct(lat, 95)), "p95-ms")
	b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
	b.Logf("%d changes on %d nodes (%d patchers in a child process): %.0f events/s published; the same patches with no detector: %.0f/s",
		changes, benchNodes, benchWorkers, rate, patchRate)
	b.Logf("CPU of this process (informer, detector, JetStream) per condition change: %s; per heartbeat: %s",
		changeCPU.Round(time.Microsecond), heartbeatCPU.Round(time.Microsecond))
	b.Logf("latency SetNodeCondition -> event acked by JetStream over %d sequential changes: p50 %s p95 %s p99 %s max %s (the GET+PATCH alone: p50 %s p95 %s)",
		len(lat), pct(lat, 50).Round(10*time.Microsecond), pct(lat, 95).Round(10*time.Microsecond), pct(lat, 99).Round(10*time.Microsecond),
		pct(lat, 100).Round(10*time.Microsecond), pct(rtt, 50).Round(10*time.Microsecond), pct(rtt, 95).Round(10*time.Microsecond))
}

// The benchmark re-runs its own test binary as the patcher, chosen by this
// environment variable ("<kubeconfig>|<first>|<end>|<status>"), so that the
// patch client's CPU time is not counted as the detector's.
const patcherEnv = "NODEPROBLEM_BENCH_PATCHER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(patcherEnv); spec != "" {
		if err := patcherMain(spec); err != nil {
			fmt.Fprintln(os.Stderr, "patcher:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runPatcher sets KernelDeadlock to status on the nodes numbered
// [r[0], r[1]) from a child process, and returns how long that took.
func runPatcher(ctx context.Context, b *testing.B, kubeconfig string, r [2]int, status corev1.ConditionStatus) time.Duration {
	b.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d|%d|%s", patcherEnv, kubeconfig, r[0], r[1], status))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("patcher: %v: %s", err, out)
	}
	return time.Since(start)
}

// patcherMain is the child process: benchWorkers concurrent
// testenv.PatchNodeCondition calls, one per node.
func patcherMain(spec string) error {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		return fmt.Errorf("bad %s %q", patcherEnv, spec)
	}
	first, err1 := strconv.Atoi(parts[1])
	end, err2 := strconv.Atoi(parts[2])
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("bad %s %q: %w", patcherEnv, spec, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", parts[0])
	if err != nil {
		return err
	}
	client, err := newBenchClient(cfg)
	if err != nil {
		return err
	}
	status := corev1.ConditionStatus(parts[3])
	reason := "KernelHasNoDeadlock"
	if status == corev1.ConditionTrue {
		reason = "DockerHung"
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	work := make(chan string)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range benchWorkers {
		wg.Go(func() {
			for n := range work {
				if _, err := testenv.PatchNodeCondition(ctx, client, n, "KernelDeadlock", status, reason, "bench"); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := first; i < end; i++ {
		work <- nodeName(i)
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func nodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// newBenchClient is how a production deployment talks to a large cluster:
// protobuf, and a rate limit that does not throttle the initial list.
func newBenchClient(cfg *rest.Config) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.ContentType = "application/vnd.kubernetes.protobuf"
	c.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	c.QPS, c.Burst = 2000, 4000
	return kubernetes.NewForConfig(c)
}

// plainInformerHeap is the live heap a Node informer without a transform
// adds, for comparison.
func plainInformerHeap(ctx context.Context, b *testing.B, client kubernetes.Interface) float64 {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	before := heap()
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Core().V1().Nodes().Informer()
	f.StartWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		b.Fatal("plain node informer did not sync")
	}
	after := heap()
	runtime.KeepAlive(inf)
	cancel()
	f.Shutdown()
	return mib(after.HeapAlloc - before.HeapAlloc)
}

// ackTimes records when JetStream acknowledged each (key, status) first.
type ackTimes struct {
	inner   Publisher
	mu      sync.Mutex
	at      map[string]time.Time
	waiters map[string]chan struct{}
}

func (p *ackTimes) Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	res, err := p.inner.Publish(ctx, events...)
	if err != nil {
		return res, err
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range events {
		k := e.Key + "|" + e.Status
		if _, ok := p.at[k]; ok {
			continue
		}
		p.at[k] = now
		if ch := p.waiters[k]; ch != nil {
			close(ch)
			delete(p.waiters, k)
		}
	}
	return res, nil
}

// wait returns a channel closed once k is acknowledged.
func (p *ackTimes) wait(k string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := p.at[k]; ok {
		close(ch)
		return ch
	}
	if old := p.waiters[k]; old != nil {
		return old
	}
	p.waiters[k] = ch
	return ch
}

func (p *ackTimes) get(k string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.at[k]
}

func heap() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func mib(n uint64) float64 {
	if int64(n) < 0 {
		return 0
	}
	return float64(n) / (1 << 20)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func waitFor(b *testing.B, within time.Duration, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("condition not met within %s", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

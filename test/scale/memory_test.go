//go:build linux

package scale

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/test/testenv"
)

// The size of BenchmarkServeMemory; TestServeMemorySmoke has its own.
var (
	flagNodes     = flag.Int("scale.nodes", 100_000, "Nodes in the cluster of BenchmarkServeMemory")
	flagImages    = flag.Int("scale.images", 20, "images listed in each Node's status")
	flagChurnRate = flag.Int("scale.churn-rate", 300, "node heartbeat patches per second during the churn")
	flagChurn     = flag.Duration("scale.churn", 30*time.Second, "how long the churn lasts")
)

// memoryRun is the shape of one measurement.
type memoryRun struct {
	nodes, images int
	// createWorkers requests are in flight while the Nodes are created.
	createWorkers int
	// churnRate heartbeat patches per second, for churn, then settle
	// before the steady figures are read.
	churnRate      int
	churn, settle  time.Duration
	serveTimeout   time.Duration // process start to serving (the budget's watch synced)
	syncTimeout    time.Duration // serving to the node-problem detector synced
	etcdQuotaGiB   int
	churnWorkers   int
	sampleInterval time.Duration
	// breakdown runs each of serve's Node watches alone in the test
	// process afterwards, to see what each costs (watchBreakdown).
	breakdown bool
}

// memoryResult is what one measurement found.
type memoryResult struct {
	nodeJSON, nodeProto int // bytes of one Node as served
	create              time.Duration
	toServing, toSynced time.Duration // from the process's start
	// servingNodes are the nodes the budget counted when serve logged
	// that it serves; budgetFull is when its gauge first counted all.
	servingNodes       int
	budgetFull         time.Duration // from the process's start
	rssSynced          procMem
	rssSteady          procMem // after the churn and settle; HWM is the peak of the whole run
	sampledPeak        int64
	sampledPeakAt      time.Duration // from the process's start
	peakLive, lastLive int64         // MiB, gctrace
	gcs                int
	heartbeats         int64
	heartbeatErrors    int64
	churnRate          float64 // heartbeats per second achieved
	budgetNodes        int64
	detectorNodes      int
	watches            []watchCost // with memoryRun.breakdown
}

// BenchmarkServeMemory measures the memory of a `healer serve` process
// watching a cluster of -scale.nodes realistic Nodes; see the package
// documentation. Run it once (-benchtime 1x): the setup takes minutes and
// the figures are of one process's life.
func BenchmarkServeMemory(b *testing.B) {
	res := measureMemory(b, memoryRun{
		nodes:          *flagNodes,
		images:         *flagImages,
		createWorkers:  32,
		churnRate:      *flagChurnRate,
		churn:          *flagChurn,
		settle:         15 * time.Second,
		serveTimeout:   10 * time.Minute,
		syncTimeout:    10 * time.Minute,
		etcdQuotaGiB:   8,
		churnWorkers:   32,
		sampleInterval: 200 * time.Millisecond,
		breakdown:      true,
	})
	b.ReportMetric(mib(res.rssSteady.HWM), "MiB-peak-rss")
	b.ReportMetric(mib(res.rssSynced.RSS), "MiB-rss-synced")
	b.ReportMetric(mib(res.rssSteady.RSS), "MiB-rss-steady")
	b.ReportMetric(float64(res.peakLive), "MiB-peak-live-heap")
	b.ReportMetric(float64(res.lastLive), "MiB-live-heap-steady")
	b.ReportMetric(res.create.Seconds(), "s-create-nodes")
	b.ReportMetric(res.toServing.Seconds(), "s-to-serving")
	b.ReportMetric(res.toSynced.Seconds(), "s-to-synced")
	b.ReportMetric(res.budgetFull.Seconds(), "s-to-budget-full")
	b.ReportMetric(float64(res.servingNodes), "nodes-in-budget-at-serving")
	b.ReportMetric(float64(res.nodeJSON)/1024, "KiB/node-json")
	b.ReportMetric(float64(res.nodeProto)/1024, "KiB/node-protobuf")
	b.ReportMetric(res.churnRate, "heartbeats/s")
	for i, unit := range []string{"budget", "nodeproblem"} {
		c := res.watches[i]
		b.ReportMetric(float64(c.live)/float64(*flagNodes), "B/node-"+unit)
		b.ReportMetric(c.sync.Seconds(), "s-sync-"+unit)
		b.ReportMetric(mib(c.peak), "MiB-peak-live-heap-"+unit)
	}
	// The framework's own figure is meaningless for a one-shot run.
	b.ReportMetric(0, "ns/op")
}

// TestServeMemorySmoke runs the harness of BenchmarkServeMemory on 200
// Nodes: the binary starts, both Node watches sync, heartbeats are patched,
// and the memory figures read from /proc and gctrace are sane.
func TestServeMemorySmoke(t *testing.T) {
	const nodes = 200
	res := measureMemory(t, memoryRun{
		nodes:          nodes,
		images:         20,
		createWorkers:  8,
		churnRate:      100,
		churn:          3 * time.Second,
		settle:         time.Second,
		serveTimeout:   2 * time.Minute,
		syncTimeout:    time.Minute,
		etcdQuotaGiB:   4,
		churnWorkers:   4,
		sampleInterval: 100 * time.Millisecond,
		breakdown:      true,
	})
	if res.budgetNodes != nodes || res.detectorNodes != nodes {
		t.Errorf("synced nodes: budget %d, node-problem detector %d; want %d", res.budgetNodes, res.detectorNodes, nodes)
	}
	// A realistic Node is 5-15 KiB as JSON.
	if res.nodeJSON < 5<<10 || res.nodeJSON > 15<<10 {
		t.Errorf("a Node is %d bytes as JSON, want 5-15 KiB", res.nodeJSON)
	}
	const minRSS, maxRSS = 20 << 20, 1 << 30
	for name, v := range map[string]int64{"peak": res.rssSteady.HWM, "synced": res.rssSynced.RSS, "steady": res.rssSteady.RSS} {
		if v < minRSS || v > maxRSS {
			t.Errorf("%s RSS %.1f MiB, want %d-%d MiB", name, mib(v), minRSS>>20, maxRSS>>20)
		}
	}
	// The kernel's RSS counters are approximate (per-CPU batches), so a
	// sample may exceed VmHWM by a little.
	const slack = 4 << 20
	if res.rssSteady.HWM+slack < res.rssSteady.RSS || res.rssSteady.HWM+slack < res.sampledPeak {
		t.Errorf("peak RSS %.1f MiB below a sampled RSS (steady %.1f MiB, sampled peak %.1f MiB)",
			mib(res.rssSteady.HWM), mib(res.rssSteady.RSS), mib(res.sampledPeak))
	}
	if res.gcs == 0 || res.peakLive <= 0 || res.peakLive<<20 > res.rssSteady.HWM {
		t.Errorf("gctrace: %d collections, peak live heap %d MiB (peak RSS %.1f MiB): want collections and a live heap below the RSS",
			res.gcs, res.peakLive, mib(res.rssSteady.HWM))
	}
	if len(res.watches) != 2 {
		t.Fatalf("%d watches measured in-process, want 2", len(res.watches))
	}
	for _, c := range res.watches {
		if c.live <= 0 || c.sync <= 0 || c.alloced <= 0 {
			t.Errorf("%s: live heap %d B, sync %s, %d B allocated: want all positive", c.name, c.live, c.sync, c.alloced)
		}
	}
	if res.heartbeats == 0 || res.heartbeatErrors != 0 {
		t.Errorf("churn: %d heartbeats, %d failed", res.heartbeats, res.heartbeatErrors)
	}
}

// measureMemory sets up the cluster, starts serve, waits for it to sync,
// churns, and reads the figures. It logs each step.
func measureMemory(tb testing.TB, r memoryRun) memoryResult {
	tb.Helper()
	ctx := tb.Context()
	var res memoryResult

	bin := buildHealer(ctx, tb)
	k := testenv.StartKubeWith(tb, testenv.KubeOptions{EtcdArgs: []string{testenv.EtcdQuotaArg(r.etcdQuotaGiB)}})
	bulk, err := protobufClient(k.Config, 5000)
	if err != nil {
		tb.Fatal(err)
	}
	res.create = testenv.CreateRealisticNodes(ctx, tb, bulk, r.createWorkers, 0, r.nodes, r.images)
	tb.Logf("created %d nodes (%d images each) with %d workers in %s (%.0f nodes/s)",
		r.nodes, r.images, r.createWorkers, res.create.Round(time.Second), float64(r.nodes)/res.create.Seconds())
	if res.nodeJSON, res.nodeProto, err = nodeSizes(ctx, k.Client, bulk, testenv.RealisticNodeName(r.nodes/2)); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("one Node as served: %d bytes JSON, %d bytes protobuf", res.nodeJSON, res.nodeProto)

	// serve as production runs it: external NATS JetStream and Redis, a
	// kubeconfig, the default configuration otherwise.
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: tb.TempDir(), ServerName: "scale-nats"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	redis := testenv.StartRedis(tb)
	dir := tb.TempDir()
	cfg := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "natsURL: %s\nredisURL: %s\nkubeconfig: %s\n",
		ns.ClientURL(), redis.URL, k.KubeconfigPath), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := startServe(tb, bin, cfg, filepath.Join(dir, "data"))
	pid := p.cmd.Process.Pid
	sampler := sampleRSS(pid, r.sampleInterval)
	defer sampler.stop()

	p.waitFor(tb, r.serveTimeout, `"healer serving" (the budget's Node watch synced)`, func() bool { return !p.serving.IsZero() })
	// The budget's start-up waits until its handler has counted the first
	// list (not only until the informer's cache holds it, which once let
	// serve start with a third of 100,000 nodes counted).
	res.servingNodes = p.servingNodes
	if res.servingNodes != r.nodes {
		tb.Errorf("serve started serving with %d of %d nodes in its budget", res.servingNodes, r.nodes)
	}
	known, total := waitBudget(ctx, tb, p.addr, int64(r.nodes), r.syncTimeout)
	res.budgetFull = time.Since(p.start)
	p.waitFor(tb, r.syncTimeout, "the node-problem detector's initial sync", func() bool { return !p.synced.IsZero() })
	res.toServing, res.toSynced = p.serving.Sub(p.start), p.synced.Sub(p.start)
	res.detectorNodes = p.npNodes
	if known != 1 || total != int64(r.nodes) {
		tb.Fatalf("after sync: healer_budget_known %d, healer_budget_nodes{state=total} %d; want 1 and %d", known, total, r.nodes)
	}
	if res.detectorNodes != r.nodes {
		tb.Fatalf("node-problem detector synced with %d nodes, want %d: %s", res.detectorNodes, r.nodes, p.logLine(syncedRE))
	}
	if res.rssSynced, err = readProcMem(pid); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("serving after %s; node-problem detector synced after %s; budget gauge %d nodes; RSS %.1f MiB (peak so far %.1f MiB)",
		res.toServing.Round(100*time.Millisecond), res.toSynced.Round(100*time.Millisecond), total, mib(res.rssSynced.RSS), mib(res.rssSynced.HWM))
	tb.Logf("the budget counted %d of %d nodes when serve started serving, all %d after %s",
		res.servingNodes, r.nodes, r.nodes, res.budgetFull.Round(100*time.Millisecond))
	tb.Logf("start-up line: %s", p.logLine(servingRE))
	tb.Logf("sync line: %s", p.logLine(syncedRE))

	churn, err := protobufClient(k.Config, float32(r.churnRate))
	if err != nil {
		tb.Fatal(err)
	}
	begin := time.Now()
	res.heartbeats, res.heartbeatErrors = heartbeat(ctx, tb, churn, r.nodes, r.churnWorkers, r.churn)
	wall := time.Since(begin)
	res.churnRate = float64(res.heartbeats) / wall.Seconds()
	tb.Logf("churn: %d heartbeat patches in %s (%.0f/s), %d failed; RSS %.1f MiB",
		res.heartbeats, wall.Round(100*time.Millisecond), res.churnRate, res.heartbeatErrors, mib(mustMem(tb, pid).RSS))
	time.Sleep(r.settle)

	// The sampler stops first, so that the peak read last covers it.
	sampler.stop()
	if res.rssSteady, err = readProcMem(pid); err != nil {
		tb.Fatal(err)
	}
	var last time.Time
	res.peakLive, res.lastLive, last, res.gcs = p.gcStats()
	var peakAt time.Time
	res.sampledPeak, peakAt = sampler.peak()
	res.sampledPeakAt = peakAt.Sub(p.start)
	if _, res.budgetNodes, err = budgetMetrics(ctx, p.addr); err != nil {
		tb.Fatal(err)
	}
	if res.budgetNodes != int64(r.nodes) {
		tb.Errorf("after the churn the budget gauge counts %d nodes, want %d", res.budgetNodes, r.nodes)
	}
	tb.Logf("steady (after %s of churn and %s): RSS %.1f MiB (anon %.1f, file %.1f); peak RSS (VmHWM) %.1f MiB, largest sample %.1f MiB at +%s",
		r.churn, r.settle, mib(res.rssSteady.RSS), mib(res.rssSteady.Anon), mib(res.rssSteady.File),
		mib(res.rssSteady.HWM), mib(res.sampledPeak), res.sampledPeakAt.Round(100*time.Millisecond))
	tb.Logf("Go heap (gctrace, %d collections): peak live %d MiB; live at the last collection (%s ago) %d MiB",
		res.gcs, res.peakLive, time.Since(last).Round(100*time.Millisecond), res.lastLive)
	p.stop(tb)
	if r.breakdown {
		res.watches = watchBreakdown(ctx, tb, k.KubeconfigPath, r.nodes)
	}
	return res
}

// protobufClient is how a client of a large cluster talks to it: protobuf,
// and a rate limit of qps.
func protobufClient(cfg *rest.Config, qps float32) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.ContentType = "application/vnd.kubernetes.protobuf"
	c.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	c.QPS, c.Burst = qps, max(int(qps)/10, 1)
	client, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// nodeSizes returns the size of the Node name as the apiserver serves it,
// as JSON and as protobuf (what client-go's typed clients, serve's among
// them, ask for).
func nodeSizes(ctx context.Context, jsonClient, protoClient kubernetes.Interface, name string) (jsonBytes, protoBytes int, err error) {
	j, err := jsonClient.CoreV1().RESTClient().Get().Resource("nodes").Name(name).DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("get node %s as JSON: %w", name, err)
	}
	pb, err := protoClient.CoreV1().RESTClient().Get().Resource("nodes").Name(name).DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("get node %s as protobuf: %w", name, err)
	}
	if len(pb) >= len(j) {
		return 0, 0, fmt.Errorf("node %s: the protobuf form (%d bytes) is not smaller than the JSON (%d bytes): not protobuf?", name, len(pb), len(j))
	}
	return len(j), len(pb), nil
}

// heartbeat patches node heartbeats for d with workers requests in flight,
// at the client's rate, going round the nodes in order; every other patch
// also renews Ready, as the kubelet's heartbeat. It returns how many
// patches succeeded and failed; the first failure is logged.
func heartbeat(ctx context.Context, tb testing.TB, client kubernetes.Interface, nodes, workers int, d time.Duration) (ok, failed int64) {
	tb.Helper()
	end := time.Now().Add(d)
	var (
		next     atomic.Int64
		okN, bad atomic.Int64
		once     sync.Once
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(end) {
				i := int(next.Add(1)-1) % nodes
				if err := testenv.HeartbeatNode(ctx, client, testenv.RealisticNodeName(i), i%2 == 0); err != nil {
					bad.Add(1)
					once.Do(func() { tb.Logf("heartbeat: %v", err) })
					continue
				}
				okN.Add(1)
			}
		})
	}
	wg.Wait()
	return okN.Load(), bad.Load()
}

// waitBudget polls serve's budget gauge until it counts want nodes, and
// returns the last healer_budget_known and healer_budget_nodes{state=total}.
func waitBudget(ctx context.Context, tb testing.TB, addr string, want int64, timeout time.Duration) (known, total int64) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		known, total, err := budgetMetrics(ctx, addr)
		if err != nil {
			tb.Fatal(err)
		}
		if known == 1 && total == want {
			return known, total
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the budget gauge counts %d nodes (known %d) %s after serve started; want %d", total, known, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustMem(tb testing.TB, pid int) procMem {
	tb.Helper()
	m, err := readProcMem(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

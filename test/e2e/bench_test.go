package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/internal/app/serve"
	etcdrem "github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/test/testenv"
)

// benchPolicy cordons on a kernel deadlock with no rate limits, so every
// injected fault is acted on; the budget is opened wide in the config.
const benchPolicy = `package healer

import rego.v1

decision := {"remediator": "node.cordon", "params": {"condition": "KernelDeadlock"}, "approval": "none",
	"reason": "benchmark: cordon on kernel deadlock"} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
}

decision := {"remediator": "node.cordon", "approval": "none", "reason": "benchmark: undo"} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "resolved"
}
`

// BenchmarkConditionToCordon injects faults one at a time the way
// node-problem-detector reports them (the KernelDeadlock condition set to
// True on a Node) and measures the time until a watch on the real
// kube-apiserver sees the node cordoned by healer: detector, JetStream,
// engine, OPA, guard, re-check on a fresh read, patch and audit in between.
// Run with -benchtime=Nx for N faults (N ≥ 100 for a meaningful p95).
func BenchmarkConditionToCordon(b *testing.B) {
	ctx := b.Context()
	kube := testenv.StartKube(b)
	names := make([]string, b.N)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%04d", i)
	}
	testenv.CreateNodes(ctx, b, kube.Client, names...)
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bench.rego"), []byte(benchPolicy), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := serve.Config{Kubeconfig: kube.KubeconfigPath, Policies: dir}
	cfg.Engine.Budget.Percent, cfg.Engine.Budget.ZonePercent = 100, 100
	h := startHealerTB(b, cfg)
	_ = h

	// One watch records when each node is first seen cordoned.
	w, err := kube.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	cordonedAt := map[string]time.Time{}
	seen := make(chan string, b.N)
	go func() {
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted || !n.Spec.Unschedulable {
				continue
			}
			mu.Lock()
			if _, done := cordonedAt[n.Name]; !done {
				cordonedAt[n.Name] = time.Now()
				seen <- n.Name
			}
			mu.Unlock()
		}
	}()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		testenv.SetNodeCondition(ctx, b, kube.Client, names[i], "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:20744 blocked for more than 120 seconds.")
		select {
		case got := <-seen:
			if got != names[i] {
				b.Fatalf("cordoned %s, expected %s", got, names[i])
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("fault %d: %s not cordoned within 10s", i, names[i])
		}
		mu.Lock()
		lat = append(lat, cordonedAt[names[i]].Sub(start))
		mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(1), "max-ms")
}

// benchRestartPolicy restarts a crashed daemon with no rate limit, so every
// crash is acted on.
const benchRestartPolicy = `package healer

import rego.v1

decision := {"remediator": "component.restart", "params": {"component": input.event.data.source}, "approval": "none",
	"reason": "benchmark: restart the crashed daemon"} if {
	input.event.type == "RuntimePanic"
	input.event.status == "firing"
}
`

// BenchmarkPanicToRestarted crashes a real process (a Go panic from a
// goroutine, written to its log as the runtime writes it) and measures the
// time until a new process answers its health check: the agent's
// runtimepanic detector (file poll, stack idle), the relay into JetStream,
// the engine and OPA, the request to the agent over NATS, the stop and
// start of the process and its health wait. Run with -benchtime=Nx.
func BenchmarkPanicToRestarted(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bench.rego"), []byte(benchRestartPolicy), 0o600); err != nil {
		b.Fatal(err)
	}
	h := startHealerTB(b, serve.Config{Policies: dir})
	d := startAgent(b, h, "bench-node", 1_000_000)
	pid := testenv.WaitFakeDaemon(b, d.addr, 0)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		d.crash(b)
		pid = testenv.WaitFakeDaemon(b, d.addr, pid)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(1), "max-ms")
}

// BenchmarkEtcdMemberReplaced kills a follower of a fresh three-member
// etcd cluster (member processes, 1,000 keys) and measures until the
// audit trail says the replacement is verified: a healthy voter with every
// key readable. The detector polls every 250ms and counts a member lost
// after 2s (lostAfter; production's default is 1m, which adds to the
// detection time one for one). It reports the phases too: kill → event
// (detection), event → action.started (policy, guard, re-check),
// started → member started (quorum check, remove, add learner, provision),
// member started → promoted (the learner joins and catches up), promoted →
// verified. Run with -benchtime=Nx.
func BenchmarkEtcdMemberReplaced(b *testing.B) {
	var total []time.Duration
	phases := map[string]time.Duration{}
	for range b.N {
		b.StopTimer()
		e := startEtcd(b, 3)
		e.putKeys(b, 1000)
		h := startHealerTB(b, e.config(e.command))
		lead, err := e.cluster.Leader(b.Context(), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		victim := (lead + 1) % 3
		target := "etcd/" + e.cluster.Member(victim).Spec.Name
		time.Sleep(500 * time.Millisecond)
		b.StartTimer()
		killed := time.Now()
		if err := e.cluster.Kill(victim); err != nil {
			b.Fatal(err)
		}
		var recs []audit.Record
		deadline := time.Now().Add(90 * time.Second)
		for done := false; !done; {
			if time.Now().After(deadline) {
				b.Fatalf("no verified replacement of %s within 90s:%s", target, describe(recs))
			}
			time.Sleep(20 * time.Millisecond)
			recs = h.records(url.Values{"target": {target}})
			for _, r := range recs {
				if r.Kind == audit.KindVerified && r.Remediator == etcdrem.Name {
					done = true
				}
			}
		}
		b.StopTimer()
		at := map[string]time.Time{"kill": killed}
		for _, r := range recs {
			var d struct {
				Step string `json:"step"`
			}
			_ = json.Unmarshal(r.Details, &d)
			key := string(r.Kind)
			if r.Kind == audit.KindActionProgress {
				key = d.Step
			}
			if _, seen := at[key]; !seen {
				at[key] = r.Time
			}
		}
		total = append(total, at[string(audit.KindVerified)].Sub(killed))
		order := []string{"kill", "event", "action.started", "member started", "promoted", "verified"}
		for i := 1; i < len(order); i++ {
			phases[strings.ReplaceAll(order[i-1], " ", "-")+"→"+strings.ReplaceAll(order[i], " ", "-")] += at[order[i]].Sub(at[order[i-1]])
		}
		h.stop()
		e.cluster.Destroy()
	}
	slices.Sort(total)
	b.ReportMetric(float64(total[len(total)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(total[len(total)-1].Milliseconds()), "max-ms")
	for name, d := range phases {
		b.ReportMetric(float64((d / time.Duration(b.N)).Milliseconds()), name+"-ms")
	}
}

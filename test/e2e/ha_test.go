package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/test/testenv"
)

// haPolicy drains the node with a kernel deadlock and only looks at the
// load's alerts.
const haPolicy = `package healer

import rego.v1

decision := {"remediator": "node.drain", "approval": "none", "reason": "kernel deadlock: drain",
	"params": {"condition": "KernelDeadlock", "timeout": "2m"}} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
}

decision := {"approval": "none", "reason": "load: observed only"} if {
	input.event.type == "HALoad"
}
`

// TestTwoReplicasSurviveKill9MidDrain runs two `healer serve` processes on
// one external JetStream, Redis and a real API server, like two replicas
// behind a Service. While 500 alerts a second come in on both, one
// replica drains a node whose pods a PodDisruptionBudget holds; the
// replica holding the node's lease is killed with SIGKILL mid-drain. The
// survivor must take the drain over and finish it under the same action
// id, every alert must be audited with its decision, no action may start
// twice, and the trail written by both must verify.
func TestTwoReplicasSurviveKill9MidDrain(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKubeWith(t, testenv.KubeOptions{Controllers: []string{"disruption"}})
	workers := []string{"drain-me"}
	for i := range 19 {
		workers = append(workers, fmt.Sprintf("w-%d", i))
	}
	testenv.CreateNodes(ctx, t, kube.Client, workers...)
	testenv.StartFakeKubelet(ctx, t, kube.Client, workers...)
	pods := testenv.CreatePods(ctx, t, kube.Client, testenv.PodSet{Namespace: "shop", Name: "cart", Node: "drain-me", Count: 3})
	minAvailable := intstr.FromInt32(3)
	if _, err := kube.Client.PolicyV1().PodDisruptionBudgets("shop").Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cart"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	redis := testenv.StartRedis(t)
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), ServerName: "ha-nats"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	dir := t.TempDir()
	polDir := filepath.Join(dir, "policies")
	if err := os.MkdirAll(polDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(polDir, "ha.rego"), []byte(haPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// A short ack wait, so the survivor takes over within seconds of the
	// kill rather than after the default 30s.
	cfgFile := filepath.Join(dir, "serve.yaml")
	cfgText := fmt.Sprintf(`natsURL: %s
redisURL: %s
kubeconfig: %s
policies: %s
nodeProblem: {disabled: true} # the alert is the one event about drain-me
engine:
  ackWait: 4s
  budget: {minNodes: 2}
audit: {signingKeyFile: %s} # one key for both replicas, as the chart's Secret
`, ns.ClientURL(), redis.URL, kube.KubeconfigPath, polDir, filepath.Join(dir, "audit-signing.key"))
	if err := os.WriteFile(cfgFile, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	whTok, apiTok := "ha-webhook-token-0123456789abcdef0123", "ha-api-token-0123456789abcdef0123456"
	env := []string{"HEALER_WEBHOOK_TOKEN=" + whTok, "HEALER_API_TOKEN=" + apiTok, "KUBERNETES_SERVICE_HOST="}
	replicas := []*proc{
		startBinaryWith(t, filepath.Join(dir, "a"), []string{"--config", cfgFile}, env),
		startBinaryWith(t, filepath.Join(dir, "b"), []string{"--config", cfgFile}, env),
	}
	var killed atomic.Int32
	killed.Store(-1)

	// The load: 50 webhook posts a second of 10 alerts each, spread over
	// both replicas; a post that fails goes to the other one, as a
	// Service would retry it.
	var next atomic.Int32
	post := func(body []byte) bool {
		for range 4 {
			i := next.Add(1) % 2
			if i == killed.Load() {
				i = 1 - i
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+replicas[i].addr+"/webhook/alertmanager", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+whTok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		return false
	}
	var (
		posted   atomic.Int64
		failed   atomic.Int64
		loadDone = make(chan struct{})
	)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var wg sync.WaitGroup
		defer wg.Wait()
		for n := 0; n < 12*50; n++ { // 12 s
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			wg.Go(func() {
				if post(loadBody(n, 10)) {
					posted.Add(10)
				} else {
					failed.Add(10)
				}
			})
		}
	}()

	time.Sleep(2 * time.Second) // the load is running
	testenv.SetNodeCondition(ctx, t, kube.Client, "drain-me", "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:20744 blocked for more than 120 seconds.")
	if !post(alertFor(readTestdata(t, "kernel-deadlock-firing.json"), "drain-me", "0da1000000000001")) {
		t.Fatal("the kernel deadlock alert was refused")
	}
	// The drain runs into the PDB: it is in the middle of evicting.
	waitFor(t, 30*time.Second, "the drain to be blocked by the PDB", func() (bool, string) {
		recs := getRecords(t, replicas[0].addr, apiTok, "target=node/drain-me")
		latest := getRecords(t, replicas[0].addr, apiTok, "limit=1")
		return strings.Contains(describe(recs), "eviction_refused"), fmt.Sprintf("%d alerts posted, latest record %s%s", posted.Load(), describe(latest), describe(recs))
	})
	js := jetStreamAt(t, ns.ClientURL())
	actions, err := js.KeyValue(ctx, bus.BucketActions)
	if err != nil {
		t.Fatal(err)
	}
	hold, err := engine.TargetLease(ctx, actions, "node/drain-me")
	if err != nil || hold == nil {
		t.Fatalf("no lease on node/drain-me while it drains: %v %v", hold, err)
	}
	victim := -1
	for i, p := range replicas {
		if p.instance == hold.Holder {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("lease holder %q is neither replica (%s, %s)", hold.Holder, replicas[0].instance, replicas[1].instance)
	}
	survivor := replicas[1-victim]
	killed.Store(int32(victim)) //nolint:gosec // 0 or 1
	if err := replicas[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-replicas[victim].done
	t.Logf("killed replica %d (engine %s) holding the drain's lease (action %s)", victim, hold.Holder, hold.ActionID)

	// The PDB relaxes; the survivor must resume the drain.
	relax := []byte(`{"spec":{"minAvailable":0}}`)
	if _, err := kube.Client.PolicyV1().PodDisruptionBudgets("shop").Patch(ctx, "cart", types.MergePatchType, relax, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var drainRecs []audit.Record
	waitFor(t, 60*time.Second, "the survivor to finish the drain", func() (bool, string) {
		drainRecs = getRecords(t, survivor.addr, apiTok, "target=node/drain-me")
		return strings.Contains(strings.Join(kinds(drainRecs), ","), "verified"), describe(drainRecs)
	})
	<-loadDone
	if failed.Load() > 0 {
		t.Errorf("%d alerts were refused by both replicas", failed.Load())
	}

	// Exactly one drain: started once, finished once, verified, all under
	// the action id the killed replica started.
	var started, finished, verified int
	for _, r := range drainRecs {
		if r.Remediator != "node.drain" {
			continue
		}
		if r.ActionID != "" && r.ActionID != hold.ActionID {
			t.Errorf("record %d %s has action %s, want %s", r.Seq, r.Kind, r.ActionID, hold.ActionID)
		}
		switch r.Kind {
		case audit.KindActionStarted:
			started++
		case audit.KindActionFinished:
			finished++
		case audit.KindVerified:
			verified++
		}
	}
	if started != 1 || finished != 1 || verified != 1 {
		t.Fatalf("drain: %d started, %d finished, %d verified; want 1 each:%s", started, finished, verified, describe(drainRecs))
	}
	for _, p := range pods {
		if _, err := kube.Client.CoreV1().Pods("shop").Get(ctx, p.Name, metav1.GetOptions{}); err == nil {
			t.Errorf("pod %s still there after the drain", p.Name)
		}
	}
	if n, err := kube.Client.CoreV1().Nodes().Get(ctx, "drain-me", metav1.GetOptions{}); err != nil || !n.Spec.Unschedulable {
		t.Errorf("drain-me not cordoned after the drain: %v", err)
	}

	// No alert lost: each one posted has its event and decision in the
	// trail (those the killed replica had in hand are redelivered to the
	// survivor after the ack wait).
	want := int(posted.Load())
	var all []audit.Record
	waitFor(t, 60*time.Second, fmt.Sprintf("%d load events decided", want), func() (bool, string) {
		all = allRecords(t, survivor.addr, apiTok)
		events, decided := map[string]bool{}, map[string]bool{}
		for _, r := range all {
			if !strings.HasPrefix(r.Target, "node/w-") {
				continue
			}
			switch r.Kind {
			case audit.KindEvent:
				events[r.EventID] = true
			case audit.KindDecision:
				decided[r.EventID] = true
			}
		}
		return len(events) == want && len(decided) == want, fmt.Sprintf("%d events, %d decided of %d", len(events), len(decided), want)
	})
	if res := audit.VerifyRecords(all); !res.OK {
		t.Fatalf("audit chain written by two replicas is broken: %+v", res)
	}
	for _, r := range all {
		if r.Kind == audit.KindActionStarted && r.Target != "node/drain-me" {
			t.Errorf("an action started on %s: %s", r.Target, r.Details)
		}
	}
	t.Logf("%d alerts at ~500/s over two replicas, one killed mid-drain; %d audit records", want, len(all))
}

// loadBody is webhook post n of the load: alerts HALoad on the worker
// nodes, each with its own fingerprint.
func loadBody(n, alerts int) []byte {
	var b strings.Builder
	b.WriteString(`{"version":"4","status":"firing","receiver":"healer","groupKey":"{}:{alertname=\"HALoad\"}","alerts":[`)
	for i := range alerts {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"status":"firing","labels":{"alertname":"HALoad","node":"w-%d","shard":"%d"},"annotations":{},"startsAt":"2026-12-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"%08x%08x"}`,
			(n*alerts+i)%19, n, n, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// allRecords pages through the whole trail.
func allRecords(t *testing.T, addr, token string) []audit.Record {
	t.Helper()
	var all []audit.Record
	after := uint64(0)
	for {
		page := getRecords(t, addr, token, fmt.Sprintf("after=%d&limit=5000", after))
		all = append(all, page...)
		if len(page) < 5000 {
			return all
		}
		after = page[len(page)-1].Seq
	}
}

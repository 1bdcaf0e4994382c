package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// ladderPolicy is the default ladder with short waits, so the escalation
// from cordon to drain happens within a test.
const ladderPolicy = `package healer

import rego.v1

decision := {"approval": "none", "reason": "kernel deadlock: cordon, then drain if it persists",
	"steps": [
		{"remediator": "node.cordon", "params": {"condition": "KernelDeadlock"}, "wait": "1s"},
		{"remediator": "node.drain", "params": {"condition": "KernelDeadlock", "timeout": "30s"}, "wait": "1m"},
	]} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
}

decision := {"remediator": "node.cordon", "approval": "none", "reason": "problem cleared: undo"} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "resolved"
}
`

// TestConditionToDrainWithPDB: node-problem-detector sets KernelDeadlock on
// a node running pods guarded by a PodDisruptionBudget that at first allows
// no disruption. healer cordons; the problem persists, so it escalates to a
// drain through the Eviction API, which the PDB blocks (429) until the
// budget is relaxed; then the pods are evicted, progress is audited, and
// when the condition clears the node is uncordoned.
func TestConditionToDrainWithPDB(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKubeWith(t, testenv.KubeOptions{Controllers: []string{"disruption"}})
	testenv.CreateNodes(ctx, t, kube.Client, "sick", "ok-1", "ok-2")
	testenv.StartFakeKubelet(ctx, t, kube.Client, "sick", "ok-1", "ok-2")
	pods := testenv.CreatePods(ctx, t, kube.Client, testenv.PodSet{Namespace: "shop", Name: "web", Node: "sick", Count: 2})
	minAvailable := intstr.FromInt32(2)
	if _, err := kube.Client.PolicyV1().PodDisruptionBudgets("shop").Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &minAvailable,
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ladder.rego"), []byte(ladderPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := serve.Config{Kubeconfig: kube.KubeconfigPath, Policies: dir}
	cfg.Engine.Budget.MinNodes = 1
	h := startHealer(t, cfg)

	testenv.SetNodeCondition(ctx, t, kube.Client, "sick", "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:20744 blocked for more than 120 seconds.")
	waitFor(t, 10*time.Second, "the drain to be blocked by the PDB", func() (bool, string) {
		recs := h.records(url.Values{"target": {"node/sick"}, "kind": {"action.progress"}})
		return strings.Contains(describe(recs), "eviction_refused"), describe(recs)
	})
	// The PDB relaxes (say, a replica came up elsewhere).
	relax := []byte(`{"spec":{"minAvailable":0}}`)
	relaxed := time.Now()
	if _, err := kube.Client.PolicyV1().PodDisruptionBudgets("shop").Patch(ctx, "web", types.MergePatchType, relax, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	waitFor(t, 40*time.Second, "the drain to finish and verify", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/sick"}})
		ks := strings.Join(kinds(recs), ",")
		return strings.Count(ks, "verified") >= 2, ks
	})
	t.Logf("time to heal: PDB relaxed to node drained and verified: %s", time.Since(relaxed).Round(time.Millisecond))
	for _, p := range pods {
		if _, err := kube.Client.CoreV1().Pods("shop").Get(ctx, p.Name, metav1.GetOptions{}); err == nil {
			t.Errorf("pod %s is still there after the drain", p.Name)
		}
	}
	var drained bool
	for _, r := range recs {
		if r.Kind == audit.KindActionFinished && r.Remediator == "node.drain" {
			drained = true
		}
	}
	if !drained || !strings.Contains(describe(recs), `"step":"escalate"`) {
		t.Fatalf("want cordon, escalation and a finished drain:%s", describe(recs))
	}

	// The condition clears: the drained node is given back.
	testenv.SetNodeCondition(ctx, t, kube.Client, "sick", "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock")
	waitFor(t, 20*time.Second, "sick uncordoned", func() (bool, string) {
		n, err := kube.Client.CoreV1().Nodes().Get(ctx, "sick", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return !n.Spec.Unschedulable, fmt.Sprintf("unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	})
	all := h.records(url.Values{"after": {"0"}})
	if res := audit.VerifyRecords(all); !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
}

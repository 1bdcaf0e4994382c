package nodedrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/test/testenv"
)

func TestDrainValidate(t *testing.T) {
	d := NewDrain(fake.NewClientset(), slog.New(slog.DiscardHandler))
	tests := []struct {
		name    string
		params  map[string]any
		wantErr string
	}{
		{name: "none"},
		{name: "all", params: map[string]any{
			"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock", "condition_status": "True",
			"timeout": "90s", "grace_period_seconds": 30.0, "delete_emptydir_data": true, "force": false,
		}},
		{name: "timeout in seconds", params: map[string]any{"timeout": 120.0}},
		{name: "pod's own grace period", params: map[string]any{"grace_period_seconds": -1}},
		{name: "unknown param", params: map[string]any{"ignore_pdb": true}, wantErr: `unknown parameter "ignore_pdb"`},
		{name: "bad timeout", params: map[string]any{"timeout": "soon"}, wantErr: "timeout"},
		{name: "zero timeout", params: map[string]any{"timeout": "0s"}, wantErr: "timeout must be positive"},
		{name: "negative timeout", params: map[string]any{"timeout": -5.0}, wantErr: "timeout must be positive"},
		{name: "grace 0 is a forced delete", params: map[string]any{"grace_period_seconds": 0.0}, wantErr: "without waiting"},
		{name: "grace below -1", params: map[string]any{"grace_period_seconds": -2.0}, wantErr: "grace_period_seconds -2"},
		{name: "grace fraction", params: map[string]any{"grace_period_seconds": 1.5}, wantErr: "whole number"},
		{name: "grace string", params: map[string]any{"grace_period_seconds": "30"}, wantErr: "whole number"},
		{name: "emptydir not a bool", params: map[string]any{"delete_emptydir_data": "yes"}, wantErr: "delete_emptydir_data must be true or false"},
		{name: "force not a bool", params: map[string]any{"force": 1.0}, wantErr: "force must be true or false"},
		{name: "cordon's params are checked as cordon checks them", params: map[string]any{"condition_status": "True"}, wantErr: "without condition"},
		{name: "bad condition status", params: map[string]any{"condition": "Ready", "condition_status": "Maybe"}, wantErr: `condition_status "Maybe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.Validate(tt.params)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, action.ErrInvalidParams) {
				t.Fatalf("err = %v, want ErrInvalidParams with %q", err, tt.wantErr)
			}
		})
	}
}

// TestDrainNeverDeletes checks, on the fake clientset (pure logic: a server
// without the Eviction API), that node.drain refuses to drain rather than
// fall back to deleting pods, and that even the drain helper's fallback
// cannot delete one through the client node.drain gives it.
func TestDrainNeverDeletes(t *testing.T) {
	ctx := t.Context()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", UID: "rs-uid", Controller: ptr(true),
		}}},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	client := fake.NewClientset(node, pod)
	// Core v1 without the pods/eviction subresource.
	client.Resources = []*metav1.APIResourceList{{GroupVersion: "v1", APIResources: []metav1.APIResource{
		{Name: "pods", Kind: "Pod", Namespaced: true}, {Name: "nodes", Kind: "Node"},
	}}}
	d := NewDrain(client, slog.New(slog.DiscardHandler))
	req := action.Request{ID: "a1", Target: "node/n1", Problem: "p1"}

	if err := d.Check(ctx, req); !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "Eviction API") {
		t.Fatalf("check without the Eviction API: %v, want ErrUnsafe", err)
	}
	if _, err := d.Act(ctx, req, nil); !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("act without the Eviction API: %v, want ErrUnsafe", err)
	}
	if n, _ := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); n.Spec.Unschedulable {
		t.Fatal("the node was cordoned although it could not be drained")
	}
	// The helper itself falls back to deleting when eviction is not
	// served; through node.drain's client that fails.
	p, err := parseDrainParams(nil)
	if err != nil {
		t.Fatal(err)
	}
	err = d.helper(ctx, p, nil).DeleteOrEvictPods([]corev1.Pod{*pod})
	if err == nil || !strings.Contains(err.Error(), "never deletes pods") {
		t.Fatalf("helper delete through node.drain's client: %v, want refused", err)
	}
	if _, err := client.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{}); err != nil {
		t.Fatalf("pod after the refused delete: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// drainEnv reads and makes objects on the real apiserver of
// TestDrainOnRealAPIServer.
type drainEnv struct {
	client kubernetes.Interface
}

// TestDrainOnRealAPIServer runs node.drain against a real kube-apiserver,
// the real disruption controller (kube-controller-manager) and a fake
// kubelet that runs and finalizes pods.
func TestDrainOnRealAPIServer(t *testing.T) {
	kube := testenv.StartKubeWith(t, testenv.KubeOptions{Controllers: []string{"disruption"}})
	ctx := t.Context()
	nodes := []string{"d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"}
	testenv.CreateNodes(ctx, t, kube.Client, nodes...)
	testenv.StartFakeKubelet(ctx, t, kube.Client, nodes...)
	d := NewDrain(kube.Client, slog.New(slog.DiscardHandler))
	// kubectl's 5s between refused evictions, shortened to keep the test
	// quick; the behaviour is the same.
	d.retryDelay = 200 * time.Millisecond
	env := &drainEnv{client: kube.Client}

	t.Run("evicts ReplicaSet pods, leaves DaemonSet pods, reports each", func(t *testing.T) {
		web := env.running(ctx, t, testenv.PodSet{Namespace: "shop", Name: "web", Node: "d1", Count: 3})
		agent := env.running(ctx, t, testenv.PodSet{Namespace: "shop", Name: "agent", Node: "d1", Count: 1, Owner: testenv.OwnedByDaemonSet})
		elsewhere := env.running(ctx, t, testenv.PodSet{Namespace: "shop", Name: "db", Node: "d7", Count: 1})
		evictedByAPI := env.watchEvictions(ctx, t, "shop")

		req := action.Request{ID: "act-1", EventID: "ev-1", EventType: "NodeKernelDeadlock", Target: "node/d1", Problem: "p1",
			Params: map[string]any{"timeout": "30s"}}
		if err := d.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
		var prog progressLog
		res, err := d.Act(ctx, req, prog.record)
		if err != nil || !res.Changed {
			t.Fatalf("act: %+v %v", res, err)
		}
		if res.Details["evicted"] != 3 {
			t.Errorf("result details %v, want 3 evicted", res.Details)
		}
		steps := prog.all()
		if len(steps) != 4 || steps[0].step != "evicting" || steps[0].details["pods"] != 3 {
			t.Fatalf("progress %+v, want evicting (3 pods) then 3 evicted", steps)
		}
		var reported []string
		for i, s := range steps[1:] {
			if s.step != "evicted" || s.details["evicted"] != i+1 || s.details["remaining"] != 2-i {
				t.Errorf("progress step %d: %+v", i+1, s)
			}
			reported = append(reported, s.details["pod"].(string))
		}
		if want := podKeys(web); !sameSet(reported, want) {
			t.Errorf("progress reported %v evicted, want %v", reported, want)
		}
		for _, p := range web {
			if !env.gone(ctx, p) {
				t.Errorf("pod %s/%s still exists after the drain", p.Namespace, p.Name)
			}
		}
		// Each went through the Eviction API, which marks the pod with a
		// DisruptionTarget condition before deleting it.
		if got := evictedByAPI(); !sameSet(got, podKeys(web)) {
			t.Errorf("pods marked EvictionByEvictionAPI: %v, want %v", got, podKeys(web))
		}
		if env.gone(ctx, agent[0]) || env.gone(ctx, elsewhere[0]) {
			t.Error("the DaemonSet pod or a pod on another node was evicted")
		}
		n := env.node(ctx, t, "d1")
		if !n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "act-1" || n.Annotations[AnnotationProblems] != "p1" ||
			n.Annotations[AnnotationReason] != "NodeKernelDeadlock" {
			t.Fatalf("node after drain: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
		if err := d.Verify(ctx, req); err != nil {
			t.Fatal(err)
		}
		if reasons := env.nodeEvents(ctx, t, "d1"); !slices.Contains(reasons, "HealerCordoned") || !slices.Contains(reasons, "HealerDrained") {
			t.Errorf("node events %v, want HealerCordoned and HealerDrained", reasons)
		}
		// Redelivered: nothing left to do.
		if res, err := d.Act(ctx, req, nil); err != nil || res.Changed {
			t.Fatalf("second act: %+v %v, want no change", res, err)
		}

		// A pod bound to the node afterwards makes Verify fail, by name.
		late := env.running(ctx, t, testenv.PodSet{Namespace: "shop", Name: "late", Node: "d1", Count: 1})
		if err := d.Verify(ctx, req); err == nil || !strings.Contains(err.Error(), late[0].Name) {
			t.Fatalf("verify with a pod left: %v, want it named", err)
		}

		res, err = d.Undo(ctx, action.Request{ID: "act-2", Target: "node/d1", Problem: "p1"})
		if err != nil || !res.Changed {
			t.Fatalf("undo: %+v %v", res, err)
		}
		if n := env.node(ctx, t, "d1"); n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "" || n.Annotations[AnnotationProblems] != "" {
			t.Fatalf("after undo: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
	})

	t.Run("a PodDisruptionBudget that never allows blocks the drain, which names the pods", func(t *testing.T) {
		pods := env.running(ctx, t, testenv.PodSet{Namespace: "blocked", Name: "api", Node: "d2", Count: 2})
		env.budget(ctx, t, "blocked", "api", 2)
		req := action.Request{ID: "act-3", Target: "node/d2", Problem: "p3", Params: map[string]any{"timeout": "2s"}}
		var prog progressLog
		begin := time.Now()
		_, err := d.Act(ctx, req, prog.record)
		took := time.Since(begin)
		if err == nil {
			t.Fatal("drain past a PodDisruptionBudget that allows no disruption succeeded")
		}
		t.Logf("error: %v (after %s)", err, took.Round(time.Millisecond))
		if !errors.Is(err, action.ErrBlocked) {
			t.Errorf("error is not ErrBlocked, so the engine would retry a drain a PDB blocks: %v", err)
		}
		for _, want := range append(podKeys(pods), "blocked/api (minAvailable 2; 2 healthy, 2 needed, 0 disruptions allowed)",
			"The disruption budget api needs 2 healthy pods and has 2 currently", "2 pod(s) still on the node after the 2s timeout") {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q", want)
			}
		}
		if took < 2*time.Second || took > 10*time.Second {
			t.Errorf("drain gave up after %s, want about the 2s timeout", took)
		}
		// Nothing was deleted behind the budget's back.
		for _, p := range pods {
			got, err := env.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil || got.DeletionTimestamp != nil || got.UID != p.UID {
				t.Errorf("pod %s after a blocked drain: %v, deletionTimestamp %v", p.Name, err, got.DeletionTimestamp)
			}
		}
		if refused := prog.steps("eviction_refused"); len(refused) != 2 {
			t.Errorf("eviction_refused progress %+v, want one per pod", refused)
		}
		if n := env.node(ctx, t, "d2"); !n.Spec.Unschedulable || n.Annotations[AnnotationProblems] != "p3" {
			t.Errorf("a blocked drain should leave the node cordoned and held: %v %v", n.Spec.Unschedulable, n.Annotations)
		}
		if err := d.Verify(ctx, req); err == nil {
			t.Error("verify passed with the pods still on the node")
		}
	})

	t.Run("a PodDisruptionBudget that allows after a while is waited out", func(t *testing.T) {
		pods := env.running(ctx, t, testenv.PodSet{Namespace: "later", Name: "api", Node: "d3", Count: 2})
		env.budget(ctx, t, "later", "api", 2)
		req := action.Request{ID: "act-4", Target: "node/d3", Problem: "p4", Params: map[string]any{"timeout": "60s"}}
		relaxed := make(chan time.Time, 1)
		go func() {
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				return
			}
			_, err := env.client.PolicyV1().PodDisruptionBudgets("later").Patch(ctx, "api", types.MergePatchType,
				[]byte(`{"spec":{"minAvailable":0}}`), metav1.PatchOptions{})
			if err != nil {
				t.Errorf("relax budget: %v", err)
			}
			relaxed <- time.Now()
		}()
		var prog progressLog
		res, err := d.Act(ctx, req, prog.record)
		at := <-relaxed
		if err != nil {
			t.Fatalf("act: %v", err)
		}
		if res.Details["evicted"] != 2 {
			t.Errorf("result %+v, want 2 evicted", res)
		}
		if refused := prog.steps("eviction_refused"); len(refused) != 2 {
			t.Errorf("eviction_refused progress %+v, want one per pod before the budget relaxed", refused)
		}
		for _, s := range prog.steps("evicted") {
			if s.at.Before(at) {
				t.Errorf("pod %v reported evicted at %s, before the budget relaxed at %s", s.details["pod"], s.at, at)
			}
		}
		for _, p := range pods {
			if !env.gone(ctx, p) {
				t.Errorf("pod %s still there", p.Name)
			}
		}
		if err := d.Verify(ctx, req); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("emptyDir data is only evicted when the policy says so", func(t *testing.T) {
		pods := env.running(ctx, t, testenv.PodSet{Namespace: "cache", Name: "redis", Node: "d4", Count: 1, EmptyDir: true})
		req := action.Request{ID: "act-5", Target: "node/d4", Problem: "p5"}
		for name, call := range map[string]func() error{
			"check": func() error { return d.Check(ctx, req) },
			"act":   func() error { _, err := d.Act(ctx, req, nil); return err },
		} {
			err := call()
			if !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "delete_emptydir_data") ||
				!strings.Contains(err.Error(), "cache/"+pods[0].Name) || !strings.Contains(err.Error(), "local storage") {
				t.Fatalf("%s with an emptyDir pod: %v, want ErrUnsafe naming the pod and the param", name, err)
			}
		}
		if n := env.node(ctx, t, "d4"); n.Spec.Unschedulable {
			t.Fatal("a refused drain cordoned the node")
		}
		req.Params = map[string]any{"delete_emptydir_data": true}
		if _, err := d.Act(ctx, req, nil); err != nil {
			t.Fatal(err)
		}
		if !env.gone(ctx, pods[0]) {
			t.Fatal("emptyDir pod not evicted with delete_emptydir_data")
		}
	})

	t.Run("force needs a human approver", func(t *testing.T) {
		pods := env.running(ctx, t, testenv.PodSet{Namespace: "bare", Name: "debug", Node: "d5", Count: 1, Owner: testenv.Unowned})
		force := map[string]any{"force": true}
		noApprover := action.Request{ID: "act-6", Target: "node/d5", Problem: "p6", Params: force}
		if err := d.Check(ctx, noApprover); !errors.Is(err, action.ErrInvalidParams) || !strings.Contains(err.Error(), "approver") {
			t.Fatalf("check with force and no approver: %v", err)
		}
		if _, err := d.Act(ctx, noApprover, nil); !errors.Is(err, action.ErrInvalidParams) {
			t.Fatalf("act with force and no approver: %v", err)
		}
		noApprover.Approvers = []string{" "}
		if _, err := d.Act(ctx, noApprover, nil); !errors.Is(err, action.ErrInvalidParams) {
			t.Fatalf("act with force and a blank approver: %v", err)
		}
		unforced := action.Request{ID: "act-7", Target: "node/d5", Problem: "p6"}
		if err := d.Check(ctx, unforced); !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "bare/"+pods[0].Name) {
			t.Fatalf("check with an unmanaged pod: %v, want ErrUnsafe naming it", err)
		}
		if n := env.node(ctx, t, "d5"); n.Spec.Unschedulable || !env.exists(ctx, pods[0]) {
			t.Fatal("a refused drain changed the node or its pods")
		}
		approved := action.Request{ID: "act-8", Target: "node/d5", Problem: "p6", Params: force, Approvers: []string{"alice@example.com"}}
		if err := d.Check(ctx, approved); err != nil {
			t.Fatal(err)
		}
		evictedByAPI := env.watchEvictions(ctx, t, "bare")
		if _, err := d.Act(ctx, approved, nil); err != nil {
			t.Fatal(err)
		}
		if !env.gone(ctx, pods[0]) || !slices.Contains(evictedByAPI(), "bare/"+pods[0].Name) {
			t.Fatal("forced drain did not evict the unmanaged pod through the Eviction API")
		}
	})

	t.Run("a human's cordon is left alone", func(t *testing.T) {
		pods := env.running(ctx, t, testenv.PodSet{Namespace: "human", Name: "web", Node: "d6", Count: 1})
		if _, err := env.client.CoreV1().Nodes().Patch(ctx, "d6", types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		req := action.Request{ID: "act-9", Target: "node/d6", Problem: "p9"}
		if err := d.Check(ctx, req); !errors.Is(err, action.ErrNotNeeded) || !strings.Contains(err.Error(), "someone else") {
			t.Fatalf("check: %v", err)
		}
		if _, err := d.Act(ctx, req, nil); !errors.Is(err, action.ErrNotNeeded) {
			t.Fatalf("act: %v", err)
		}
		if !env.exists(ctx, pods[0]) {
			t.Fatal("pods evicted from a node a human cordoned")
		}
		if res, err := d.Undo(ctx, req); err != nil || res.Changed || !env.node(ctx, t, "d6").Spec.Unschedulable {
			t.Fatalf("undo of a human's cordon: %+v %v", res, err)
		}
	})

	t.Run("conditions are re-checked on a fresh read", func(t *testing.T) {
		params := map[string]any{"condition": "KernelDeadlock"}
		req := action.Request{ID: "act-10", Target: "node/d7", Problem: "p10", Params: params}
		if err := d.Check(ctx, req); !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("unreported condition: %v, want ErrUnsafe", err)
		}
		testenv.SetNodeCondition(ctx, t, env.client, "d7", "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock")
		if err := d.Check(ctx, req); !errors.Is(err, action.ErrNotNeeded) {
			t.Fatalf("condition cleared: %v, want ErrNotNeeded", err)
		}
		testenv.SetNodeCondition(ctx, t, env.client, "d7", "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:1234 blocked for more than 120 seconds")
		if err := d.Check(ctx, req); err != nil {
			t.Fatalf("condition holds: %v", err)
		}
		if err := d.Check(ctx, action.Request{ID: "act-11", Target: "node/nowhere"}); !errors.Is(err, action.ErrNotNeeded) {
			t.Fatalf("missing node: %v", err)
		}
	})

	t.Run("a node cordoned for one problem and drained for another stays out until both clear", func(t *testing.T) {
		c := NewCordon(env.client, slog.New(slog.DiscardHandler))
		env.running(ctx, t, testenv.PodSet{Namespace: "two", Name: "web", Node: "d8", Count: 1})
		first := action.Request{ID: "act-12", Target: "node/d8", Problem: "kubelet-down"}
		second := action.Request{ID: "act-13", Target: "node/d8", Problem: "kernel-deadlock"}
		if _, err := c.Act(ctx, first, nil); err != nil {
			t.Fatal(err)
		}
		if err := d.Check(ctx, second); err != nil {
			t.Fatalf("drain of a node healer cordoned: %v", err)
		}
		if _, err := d.Act(ctx, second, nil); err != nil {
			t.Fatal(err)
		}
		if err := d.Verify(ctx, second); err != nil {
			t.Fatal(err)
		}
		if n := env.node(ctx, t, "d8"); n.Annotations[AnnotationProblems] != "kubelet-down,kernel-deadlock" || n.Annotations[AnnotationOwner] != "act-12" {
			t.Fatalf("annotations %v", n.Annotations)
		}
		if _, err := d.Undo(ctx, second); err != nil || !env.node(ctx, t, "d8").Spec.Unschedulable {
			t.Fatalf("undo of the drain while the cordon's problem holds: %v", err)
		}
		if _, err := c.Undo(ctx, first); err != nil || env.node(ctx, t, "d8").Spec.Unschedulable {
			t.Fatalf("undo of the last problem: %v", err)
		}
	})
}

// running creates the pods and waits until the fake kubelet reports them
// ready.
func (e *drainEnv) running(ctx context.Context, t *testing.T, set testenv.PodSet) []*corev1.Pod {
	t.Helper()
	pods := testenv.CreatePods(ctx, t, e.client, set)
	for _, p := range pods {
		eventually(t, 20*time.Second, func() error {
			got, err := e.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("pod %s not ready: phase %s", p.Name, got.Status.Phase)
		})
	}
	return pods
}

// budget creates a PodDisruptionBudget selecting app=name with
// minAvailable and waits until the disruption controller has computed it.
func (e *drainEnv) budget(ctx context.Context, t *testing.T, ns, name string, minAvailable int32) {
	t.Helper()
	m := intstr.FromInt32(minAvailable)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &m,
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
		},
	}
	if _, err := e.client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		b, err := e.client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if b.Status.ObservedGeneration != b.Generation || b.Status.DesiredHealthy != minAvailable || b.Status.CurrentHealthy < minAvailable {
			return fmt.Errorf("budget %s/%s not computed yet: %+v", ns, name, b.Status)
		}
		return nil
	})
}

// watchEvictions watches the namespace's pods and returns a function that
// lists those that the Eviction API marked (condition DisruptionTarget,
// reason EvictionByEvictionAPI) so far.
func (e *drainEnv) watchEvictions(ctx context.Context, t *testing.T, ns string) func() []string {
	t.Helper()
	w, err := e.client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	seen := map[string]bool{}
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error {
				continue
			}
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue && c.Reason == "EvictionByEvictionAPI" {
					mu.Lock()
					seen[pod.Namespace+"/"+pod.Name] = true
					mu.Unlock()
				}
			}
		}
	}()
	return func() []string {
		// The watch lags the drain a little.
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for k := range seen {
			out = append(out, k)
		}
		return out
	}
}

func (e *drainEnv) node(ctx context.Context, t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// gone reports whether the pod (this one, not a namesake) no longer exists.
func (e *drainEnv) gone(ctx context.Context, p *corev1.Pod) bool {
	got, err := e.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	return apierrors.IsNotFound(err) || (err == nil && got.UID != p.UID)
}

// exists reports whether the pod is there and not terminating.
func (e *drainEnv) exists(ctx context.Context, p *corev1.Pod) bool {
	got, err := e.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	return err == nil && got.UID == p.UID && got.DeletionTimestamp == nil
}

func (e *drainEnv) nodeEvents(ctx context.Context, t *testing.T, node string) []string {
	t.Helper()
	evs, err := e.client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", node).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, ev := range evs.Items {
		reasons = append(reasons, ev.Reason)
	}
	return reasons
}

// progressLog records progress calls.
type progressLog struct {
	mu  sync.Mutex
	log []progressStep
}

type progressStep struct {
	at      time.Time
	step    string
	details map[string]any
}

func (l *progressLog) record(_ context.Context, step string, details map[string]any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = append(l.log, progressStep{at: time.Now(), step: step, details: details})
}

func (l *progressLog) all() []progressStep {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.log)
}

func (l *progressLog) steps(step string) []progressStep {
	var out []progressStep
	for _, s := range l.all() {
		if s.step == step {
			out = append(out, s)
		}
	}
	return out
}

func podKeys(pods []*corev1.Pod) []string {
	keys := make([]string, 0, len(pods))
	for _, p := range pods {
		keys = append(keys, p.Namespace+"/"+p.Name)
	}
	return keys
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// eventually calls f until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

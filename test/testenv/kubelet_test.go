package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// TestFakeKubeletAndDisruptionController runs pods through their life on
// the real apiserver with the fake kubelet and the real disruption
// controller: running, deleted, evicted, and an eviction a
// PodDisruptionBudget refuses.
func TestFakeKubeletAndDisruptionController(t *testing.T) {
	k := StartKubeWith(t, KubeOptions{Controllers: []string{"disruption"}})
	ctx := t.Context()
	CreateNodes(ctx, t, k.Client, "kl-1", "kl-2")
	StartFakeKubelet(ctx, t, k.Client, "kl-1")

	t.Run("pods on the node run, pods elsewhere stay pending", func(t *testing.T) {
		mine := CreatePods(ctx, t, k.Client, PodSet{Name: "web", Node: "kl-1", Count: 2})
		other := CreatePods(ctx, t, k.Client, PodSet{Name: "db", Node: "kl-2", Count: 1, Owner: Unowned})
		for _, p := range mine {
			if p.OwnerReferences[0].Kind != "ReplicaSet" || p.OwnerReferences[0].Name != "web" {
				t.Fatalf("pod %s owner %+v, want ReplicaSet web", p.Name, p.OwnerReferences)
			}
			got := waitPod(ctx, t, k.Client, p, "running and ready", func(p *corev1.Pod) bool {
				return p != nil && p.Status.Phase == corev1.PodRunning && podReady(p) &&
					len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready && p.Status.PodIP != ""
			})
			if got.Status.StartTime == nil {
				t.Errorf("pod %s has no start time", p.Name)
			}
		}
		time.Sleep(500 * time.Millisecond)
		p, err := k.Client.CoreV1().Pods(other[0].Namespace).Get(ctx, other[0].Name, metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodPending {
			t.Fatalf("pod on a node without kubelet: phase %q, err %v; want Pending", p.Status.Phase, err)
		}
	})

	t.Run("a deleted pod is finalized", func(t *testing.T) {
		p := CreatePods(ctx, t, k.Client, PodSet{Name: "gone", Node: "kl-1", Count: 1})[0]
		waitPod(ctx, t, k.Client, p, "running", func(p *corev1.Pod) bool { return p != nil && podReady(p) })
		if err := k.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPod(ctx, t, k.Client, p, "gone", func(p *corev1.Pod) bool { return p == nil })
	})

	t.Run("a PodDisruptionBudget refuses an eviction until it allows one", func(t *testing.T) {
		pods := CreatePods(ctx, t, k.Client, PodSet{Namespace: "pdb", Name: "api", Node: "kl-1", Count: 2})
		for _, p := range pods {
			waitPod(ctx, t, k.Client, p, "ready", func(p *corev1.Pod) bool { return p != nil && podReady(p) })
		}
		minAvailable := intstr.FromInt32(2)
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "pdb"},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: &minAvailable,
				Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
			},
		}
		if _, err := k.Client.PolicyV1().PodDisruptionBudgets("pdb").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPDB(ctx, t, k.Client, "pdb", "api", func(b *policyv1.PodDisruptionBudget) bool {
			return b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy == 2 && b.Status.DesiredHealthy == 2
		})
		err := evict(ctx, k.Client, pods[0])
		if !apierrors.IsTooManyRequests(err) {
			t.Fatalf("eviction with the budget exhausted: %v, want 429", err)
		}
		// Lower the budget: the controller recomputes it and the eviction
		// goes through; the kubelet finalizes the evicted pod.
		if _, err := k.Client.PolicyV1().PodDisruptionBudgets("pdb").Patch(ctx, "api", types.MergePatchType,
			[]byte(`{"spec":{"minAvailable":1}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPDB(ctx, t, k.Client, "pdb", "api", func(b *policyv1.PodDisruptionBudget) bool {
			return b.Status.ObservedGeneration == b.Generation && b.Status.DisruptionsAllowed == 1
		})
		if err := evict(ctx, k.Client, pods[0]); err != nil {
			t.Fatalf("eviction the budget allows: %v", err)
		}
		waitPod(ctx, t, k.Client, pods[0], "gone", func(p *corev1.Pod) bool { return p == nil })
		if err := evict(ctx, k.Client, pods[1]); !apierrors.IsTooManyRequests(err) {
			t.Fatalf("second eviction, one pod left and minAvailable 1: %v, want 429", err)
		}
	})

	t.Run("a stopped kubelet leaves deleted pods terminating", func(t *testing.T) {
		CreateNodes(ctx, t, k.Client, "kl-3")
		kl := StartFakeKubelet(ctx, t, k.Client, "kl-3")
		p := CreatePods(ctx, t, k.Client, PodSet{Name: "stuck", Node: "kl-3", Count: 1})[0]
		waitPod(ctx, t, k.Client, p, "running", func(p *corev1.Pod) bool { return p != nil && podReady(p) })
		kl.Stop()
		kl.Stop()
		if err := k.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		got, err := k.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || got.DeletionTimestamp == nil {
			t.Fatalf("pod after delete with no kubelet: %v, deletionTimestamp %v; want Terminating", err, got.DeletionTimestamp)
		}
	})

	t.Run("daemonset and emptyDir pods", func(t *testing.T) {
		ds := CreatePods(ctx, t, k.Client, PodSet{Name: "agent", Node: "kl-1", Count: 1, Owner: OwnedByDaemonSet, EmptyDir: true})[0]
		if ref := metav1.GetControllerOf(ds); ref == nil || ref.Kind != "DaemonSet" {
			t.Fatalf("controller of %s: %+v", ds.Name, ref)
		}
		if len(ds.Spec.Volumes) != 1 || ds.Spec.Volumes[0].EmptyDir == nil {
			t.Fatalf("volumes of %s: %+v", ds.Name, ds.Spec.Volumes)
		}
		if _, err := k.Client.AppsV1().DaemonSets("default").Get(ctx, "agent", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

func evict(ctx context.Context, client kubernetes.Interface, p *corev1.Pod) error {
	return client.PolicyV1().Evictions(p.Namespace).Evict(ctx, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPod polls the pod until ok holds (with nil once it is gone).
func waitPod(ctx context.Context, t *testing.T, client kubernetes.Interface, p *corev1.Pod, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got, err := client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			got = nil
		case err != nil:
			t.Fatal(err)
		}
		if ok(got) {
			return got
		}
		if got != nil {
			last = fmt.Sprintf("phase %s, deletionTimestamp %v, conditions %+v", got.Status.Phase, got.DeletionTimestamp, got.Status.Conditions)
		}
	}
	t.Fatalf("pod %s/%s not %s within 20s; last: %s", p.Namespace, p.Name, what, last)
	return nil
}

func waitPDB(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string, ok func(*policyv1.PodDisruptionBudget) bool) {
	t.Helper()
	var last policyv1.PodDisruptionBudgetStatus
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, err := client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ok(b) {
			return
		}
		last = b.Status
	}
	t.Fatalf("PodDisruptionBudget %s/%s: status not as wanted within 20s; last %+v", ns, name, last)
}

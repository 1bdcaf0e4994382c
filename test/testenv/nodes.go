package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// HostnameLabel is the well-known label holding a Node's host name.
const HostnameLabel = "kubernetes.io/hostname"

// CreateNodes creates a Node for each name, the way a kubelet registers
// itself: labelled with HostnameLabel, with capacity, and with a status of
// Ready=True and no memory, disk or PID pressure. Status is a subresource,
// so it is set with a second request after the create. It returns the Nodes
// as stored and fails t on any error.
func CreateNodes(ctx context.Context, t testing.TB, client kubernetes.Interface, names ...string) []*corev1.Node {
	t.Helper()
	nodes := make([]*corev1.Node, 0, len(names))
	for _, name := range names {
		node, err := createNode(ctx, client, name)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		nodes = append(nodes, node)
	}
	return nodes
}

func createNode(ctx context.Context, client kubernetes.Interface, name string) (*corev1.Node, error) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				HostnameLabel:        name,
				"kubernetes.io/os":   "linux",
				"kubernetes.io/arch": runtime.GOARCH,
			},
		},
	}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create node %q: %w", name, err)
	}
	now := metav1.NewTime(time.Now())
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("4"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}},
	}
	updated, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("set status of node %q: %w", name, err)
	}
	return updated, nil
}

// SetNodeCondition sets one condition of a Node the way node-problem-detector
// does: a strategic merge patch of status.conditions, which merges by type and
// leaves the other conditions alone, with lastHeartbeatTime now and
// lastTransitionTime now unless the condition already had this status. It
// returns the patched Node and fails t on any error.
func SetNodeCondition(ctx context.Context, t testing.TB, client kubernetes.Interface, node string,
	condType corev1.NodeConditionType, status corev1.ConditionStatus, reason, message string) *corev1.Node {
	t.Helper()
	n, err := setNodeCondition(ctx, client, node, condType, status, reason, message)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return n
}

func setNodeCondition(ctx context.Context, client kubernetes.Interface, node string,
	condType corev1.NodeConditionType, status corev1.ConditionStatus, reason, message string) (*corev1.Node, error) {
	current, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get node %q: %w", node, err)
	}
	now := metav1.NewTime(time.Now())
	transition := now
	for _, c := range current.Status.Conditions {
		if c.Type == condType && c.Status == status && !c.LastTransitionTime.IsZero() {
			transition = c.LastTransitionTime
		}
	}
	conditions := []corev1.NodeCondition{{
		Type:               condType,
		Status:             status,
		LastHeartbeatTime:  now,
		LastTransitionTime: transition,
		Reason:             reason,
		Message:            message,
	}}
	raw, err := json.Marshal(conditions)
	if err != nil {
		return nil, fmt.Errorf("encode condition %s of node %q: %w", condType, node, err)
	}
	patch := fmt.Appendf(nil, `{"status":{"conditions":%s}}`, raw)
	patched, err := client.CoreV1().Nodes().PatchStatus(ctx, node, patch)
	if err != nil {
		return nil, fmt.Errorf("patch condition %s of node %q: %w", condType, node, err)
	}
	return patched, nil
}

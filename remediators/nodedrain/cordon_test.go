package nodedrain

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/test/testenv"
)

func TestValidate(t *testing.T) {
	c := &Cordon{}
	tests := []struct {
		name    string
		params  map[string]any
		wantErr string
	}{
		{name: "none"},
		{name: "reason", params: map[string]any{"reason": "NodeKernelDeadlock"}},
		{name: "condition", params: map[string]any{"condition": "Ready", "condition_status": []any{"False", "Unknown"}}},
		{name: "unknown param", params: map[string]any{"force": true}, wantErr: `unknown parameter "force"`},
		{name: "bad status", params: map[string]any{"condition": "Ready", "condition_status": "Maybe"}, wantErr: `condition_status "Maybe"`},
		{name: "status without condition", params: map[string]any{"condition_status": "True"}, wantErr: "without condition"},
		{name: "reason not a string", params: map[string]any{"reason": 3.0}, wantErr: "must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Validate(tt.params)
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

// TestCordonOnRealAPIServer runs node.cordon against a real kube-apiserver.
func TestCordonOnRealAPIServer(t *testing.T) {
	kube := testenv.StartKube(t)
	ctx := t.Context()
	testenv.CreateNodes(ctx, t, kube.Client, "w1", "w2", "w3", "w4", "w5")
	c := NewCordon(kube.Client, slog.New(slog.DiscardHandler))
	get := func(name string) *corev1.Node {
		n, err := kube.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	humanCordon := func(name string, on bool) {
		b := []byte(`{"spec":{"unschedulable":false}}`)
		if on {
			b = []byte(`{"spec":{"unschedulable":true}}`)
		}
		if _, err := kube.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("cordon, verify, idempotent, event, undo", func(t *testing.T) {
		req := action.Request{ID: "act-1", EventID: "ev-1", EventType: "NodeKernelDeadlock", Target: "node/w1", Problem: "p1"}
		if err := c.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
		res, err := c.Act(ctx, req, nil)
		if err != nil || !res.Changed {
			t.Fatalf("act: %+v %v", res, err)
		}
		n := get("w1")
		if !n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "act-1" || n.Annotations[AnnotationReason] != "NodeKernelDeadlock" {
			t.Fatalf("node after cordon: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
		if err := c.Verify(ctx, req); err != nil {
			t.Fatal(err)
		}
		// Redelivered: the same action finds its own work done.
		if err := c.Check(ctx, req); err != nil {
			t.Fatalf("re-check of own cordon: %v", err)
		}
		if res, err := c.Act(ctx, req, nil); err != nil || res.Changed {
			t.Fatalf("second act: %+v %v, want no change", res, err)
		}
		if n := get("w1"); n.Annotations[AnnotationOwner] != "act-1" || n.Annotations[AnnotationProblems] != "p1" {
			t.Fatalf("a repeated act changed the marks: %v", n.Annotations)
		}
		evs, err := kube.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", "w1").String()})
		if err != nil || len(evs.Items) != 1 || evs.Items[0].Reason != "HealerCordoned" {
			t.Fatalf("node events: %+v %v", evs, err)
		}
		if _, err := c.Undo(ctx, action.Request{ID: "act-2", Target: "node/w1", Problem: "p1"}); err != nil {
			t.Fatal(err)
		}
		n = get("w1")
		if n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "" {
			t.Fatalf("after undo: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
	})

	t.Run("a human's cordon is left alone", func(t *testing.T) {
		humanCordon("w2", true)
		err := c.Check(ctx, action.Request{ID: "act-3", Target: "node/w2"})
		if !errors.Is(err, action.ErrNotNeeded) || !strings.Contains(err.Error(), "someone else") {
			t.Fatalf("check: %v", err)
		}
		res, err := c.Undo(ctx, action.Request{ID: "act-4", Target: "node/w2", Problem: "p4"})
		if err != nil || res.Changed {
			t.Fatalf("undo of a human cordon: %+v %v", res, err)
		}
		if !get("w2").Spec.Unschedulable {
			t.Fatal("healer uncordoned a node a human cordoned")
		}
	})

	t.Run("a human's uncordon is respected", func(t *testing.T) {
		req := action.Request{ID: "act-5", Target: "node/w3", Problem: "p5"}
		if _, err := c.Act(ctx, req, nil); err != nil {
			t.Fatal(err)
		}
		humanCordon("w3", false)
		res, err := c.Undo(ctx, action.Request{ID: "act-6", Target: "node/w3", Problem: "p5"})
		if err != nil || !strings.Contains(res.Message, "someone else") {
			t.Fatalf("undo: %+v %v", res, err)
		}
		n := get("w3")
		if n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "" {
			t.Fatalf("after undo: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
	})

	t.Run("a human's re-cordon is respected", func(t *testing.T) {
		testenv.CreateNodes(ctx, t, kube.Client, "w6")
		req := action.Request{ID: "act-20", Target: "node/w6", Problem: "p20"}
		if _, err := c.Act(ctx, req, nil); err != nil {
			t.Fatal(err)
		}
		humanCordon("w6", false)
		humanCordon("w6", true)
		res, err := c.Undo(ctx, action.Request{ID: "act-21", Target: "node/w6", Problem: "p20"})
		if err != nil || !strings.Contains(res.Message, "cordoned again by someone else") {
			t.Fatalf("undo: %+v %v", res, err)
		}
		n := get("w6")
		if !n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "" {
			t.Fatalf("after undo: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
	})

	t.Run("a node held by two problems is uncordoned when both clear", func(t *testing.T) {
		first := action.Request{ID: "act-10", Target: "node/w5", Problem: "kubelet-down"}
		second := action.Request{ID: "act-11", Target: "node/w5", Problem: "kernel-deadlock"}
		if _, err := c.Act(ctx, first, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Check(ctx, second); err != nil {
			t.Fatalf("second problem on a node healer cordoned: %v", err)
		}
		if _, err := c.Act(ctx, second, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Verify(ctx, second); err != nil {
			t.Fatalf("verify second problem: %v", err)
		}
		// A problem that never held the node undoes nothing.
		if res, err := c.Undo(ctx, action.Request{ID: "act-12", Target: "node/w5", Problem: "stranger"}); err != nil || res.Changed {
			t.Fatalf("undo by a stranger: %+v %v", res, err)
		}
		if res, err := c.Undo(ctx, action.Request{ID: "act-13", Target: "node/w5", Problem: "kubelet-down"}); err != nil || !strings.Contains(res.Message, "stays cordoned") {
			t.Fatalf("undo of the first problem: %+v %v", res, err)
		}
		if n := get("w5"); !n.Spec.Unschedulable || n.Annotations[AnnotationOwner] != "act-10" {
			t.Fatalf("node released while the kernel deadlock still holds it: %v %v", n.Spec.Unschedulable, n.Annotations)
		}
		if _, err := c.Undo(ctx, action.Request{ID: "act-14", Target: "node/w5", Problem: "kernel-deadlock"}); err != nil {
			t.Fatal(err)
		}
		if n := get("w5"); n.Spec.Unschedulable || n.Annotations[AnnotationProblems] != "" {
			t.Fatalf("after both cleared: %v %v", n.Spec.Unschedulable, n.Annotations)
		}
	})

	t.Run("condition re-check on a fresh read", func(t *testing.T) {
		params := map[string]any{"condition": "Ready", "condition_status": []any{"False", "Unknown"}}
		req := action.Request{ID: "act-7", Target: "node/w4", Params: params}
		if err := c.Check(ctx, req); !errors.Is(err, action.ErrNotNeeded) {
			t.Fatalf("ready node: %v, want not needed", err)
		}
		testenv.SetNodeCondition(ctx, t, kube.Client, "w4", corev1.NodeReady, corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.")
		if err := c.Check(ctx, req); err != nil {
			t.Fatalf("not-ready node: %v", err)
		}
		missing := action.Request{ID: "act-8", Target: "node/w4", Params: map[string]any{"condition": "KernelDeadlock"}}
		if err := c.Check(ctx, missing); !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("unreported condition: %v, want ErrUnsafe (cannot tell)", err)
		}
		if err := c.Check(ctx, action.Request{ID: "act-9", Target: "node/gone"}); !errors.Is(err, action.ErrNotNeeded) {
			t.Fatalf("missing node: %v", err)
		}
	})
}

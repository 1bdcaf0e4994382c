package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/remediators/nodedrain"
	"github.com/selfheal/healer/test/testenv"
)

// TestNodeProblemStorm: node-problem-detector reports a kernel deadlock on
// half of 20 nodes at once. Only the blast-radius budget (max(1, 10% of
// 20) = 2) is cordoned, at no instant more; the other eight are suppressed
// with the budget as reason. When the conditions clear, the cordoned nodes
// are uncordoned; a node a human uncordoned meanwhile is left as it is.
func TestNodeProblemStorm(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKube(t)
	names := make([]string, 20)
	for i := range names {
		names[i] = fmt.Sprintf("node-%02d", i)
	}
	testenv.CreateNodes(ctx, t, kube.Client, names...)
	h := startHealer(t, serve.Config{Kubeconfig: kube.KubeconfigPath})

	// Watch for the most nodes cordoned at any one time.
	w, err := kube.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	cordoned := map[string]bool{}
	var peak atomic.Int32
	go func() {
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			cordoned[n.Name] = n.Spec.Unschedulable
			c := 0
			for _, u := range cordoned {
				if u {
					c++
				}
			}
			mu.Unlock()
			if int32(c) > peak.Load() {
				peak.Store(int32(c))
			}
		}
	}()

	sick := names[:10]
	var wg sync.WaitGroup
	for _, n := range sick {
		wg.Go(func() {
			testenv.SetNodeCondition(ctx, t, kube.Client, n, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:20744 blocked for more than 120 seconds.")
		})
	}
	wg.Wait()

	var verified, suppressed []audit.Record
	waitFor(t, 20*time.Second, "an outcome for every sick node", func() (bool, string) {
		verified = h.records(url.Values{"kind": {"verified"}})
		suppressed = h.records(url.Values{"kind": {"suppressed"}})
		return len(verified)+len(suppressed) == 10, fmt.Sprintf("%d verified, %d suppressed%s", len(verified), len(suppressed), describe(suppressed))
	})
	if len(verified) != 2 {
		t.Fatalf("%d nodes cordoned, want the budget of 2%s", len(verified), describe(verified))
	}
	for _, r := range suppressed {
		if !strings.Contains(reason(r), "budget") {
			t.Errorf("%s suppressed for %q, want the budget", r.Target, reason(r))
		}
	}
	time.Sleep(500 * time.Millisecond) // let the watch catch up with the last patch
	if p := peak.Load(); p != 2 {
		t.Fatalf("at most %d nodes were cordoned at once, want exactly the budget of 2", p)
	}

	// A human uncordons one of healer's nodes while the problem holds.
	human := strings.TrimPrefix(verified[0].Target, "node/")
	other := strings.TrimPrefix(verified[1].Target, "node/")
	if _, err := kube.Client.CoreV1().Nodes().Patch(ctx, human, types.MergePatchType, []byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The problems clear.
	for _, n := range sick {
		testenv.SetNodeCondition(ctx, t, kube.Client, n, "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock")
	}
	waitFor(t, 20*time.Second, "both held nodes released", func() (bool, string) {
		var state []string
		done := true
		for _, n := range []string{human, other} {
			node, err := kube.Client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			state = append(state, fmt.Sprintf("%s unschedulable=%v annotations=%v", n, node.Spec.Unschedulable, node.Annotations))
			if node.Spec.Unschedulable || node.Annotations[nodedrain.AnnotationOwner] != "" {
				done = false
			}
		}
		return done, strings.Join(state, "; ")
	})
	// The node changes before the undo's record is appended.
	var undone []audit.Record
	waitFor(t, 5*time.Second, "the undo on the human's node audited", func() (bool, string) {
		undone = h.records(url.Values{"target": {"node/" + human}, "kind": {"action.finished"}})
		return len(undone) == 2, describe(undone)
	})
	if !strings.Contains(string(undone[1].Details), "someone else") {
		t.Fatalf("the human's uncordon was not recorded as respected:%s", describe(undone))
	}
	all := h.records(url.Values{"after": {"0"}})
	if res := audit.VerifyRecords(all); !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
}

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// stormPolicy cordons a node with a kernel deadlock and, once it clears,
// uncordons it; no rate limits, so only the budget and pauses hold back.
const stormPolicy = `package healer

import rego.v1

decision := {"remediator": "node.cordon", "approval": "none", "reason": "kernel deadlock: cordon; uncordon once it clears",
	"params": {"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock"}} if {
	input.event.type == "NodeKernelDeadlock"
}
`

// nodeLog follows the nodes' schedulability: the order nodes were
// cordoned in, when each slot freed, and the most out at once.
type nodeLog struct {
	mu        sync.Mutex
	cordoned  map[string]bool
	order     []string    // nodes in the order they were first cordoned
	cordonAt  []time.Time // when, in the same order
	freedAt   []time.Time // when a node was uncordoned
	peak      int
	onCordon  func(node string)
	timesSeen map[string]int
}

func (l *nodeLog) observe(n *corev1.Node) {
	l.mu.Lock()
	was := l.cordoned[n.Name]
	l.cordoned[n.Name] = n.Spec.Unschedulable
	now := time.Now()
	var cordonedNow bool
	switch {
	case n.Spec.Unschedulable && !was:
		l.timesSeen[n.Name]++
		if l.timesSeen[n.Name] == 1 {
			l.order = append(l.order, n.Name)
			l.cordonAt = append(l.cordonAt, now)
		}
		cordonedNow = true
	case !n.Spec.Unschedulable && was:
		l.freedAt = append(l.freedAt, now)
	}
	out := 0
	for _, u := range l.cordoned {
		if u {
			out++
		}
	}
	l.peak = max(l.peak, out)
	cb := l.onCordon
	l.mu.Unlock()
	if cordonedNow && cb != nil {
		cb(n.Name)
	}
}

// TestStormDrainsAtTheBudgetsPace: 10 of 20 nodes get a kernel deadlock,
// under a budget of 2. Every one is cordoned in its turn, in arrival order,
// never more than 2 at once, each as a slot frees (a node healed and
// uncordoned); a kill switch set mid-storm holds everything, including the
// uncordon of nodes that recovered meanwhile, and clearing it resumes the
// storm where it stood. Before level-triggering, the 8 held back were
// suppressed and never looked at again.
func TestStormDrainsAtTheBudgetsPace(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKube(t)
	names := make([]string, 20)
	for i := range names {
		names[i] = fmt.Sprintf("storm-%02d", i)
	}
	testenv.CreateNodes(ctx, t, kube.Client, names...)
	h := startHealer(t, serve.Config{Kubeconfig: kube.KubeconfigPath, Policies: writePolicy(t, stormPolicy),
		Approvals: approval.Config{Approvers: []approval.Approver{{Name: "alice", TokenFile: approverTokenFile(t, "alice")}}}})

	w, err := kube.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	log := &nodeLog{cordoned: map[string]bool{}, timesSeen: map[string]int{}}
	// A cordoned node heals a second later (its reboot, say): the
	// condition clears, and healer uncordons it.
	var healing sync.WaitGroup
	log.onCordon = func(node string) {
		healing.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			testenv.SetNodeCondition(ctx, t, kube.Client, node, "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock")
		})
	}
	go func() {
		for ev := range w.ResultChan() {
			if n, ok := ev.Object.(*corev1.Node); ok && ev.Type != watch.Deleted {
				log.observe(n)
			}
		}
	}()

	sick := names[:10]
	for _, n := range sick { // in arrival order
		testenv.SetNodeCondition(ctx, t, kube.Client, n, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:20744 blocked for more than 120 seconds.")
		time.Sleep(150 * time.Millisecond)
	}
	cordonedCount := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.order)
	}
	waitFor(t, 30*time.Second, "four nodes cordoned", func() (bool, string) { return cordonedCount() >= 4, fmt.Sprint(cordonedCount()) })

	// The kill switch, mid-storm.
	code, body := h.pauseAPI(http.MethodPost, serve.PausesPath, map[string]any{"reason": "storm review", "by": "bob"})
	if code != http.StatusCreated {
		t.Fatalf("kill switch: %d %s", code, body)
	}
	var kill struct{ ID string }
	if err := jsonUnmarshal(body, &kill); err != nil || kill.ID == "" {
		t.Fatalf("kill switch: %s", body)
	}
	atPause := cordonedCount()
	time.Sleep(4 * time.Second) // the nodes out recover meanwhile
	log.mu.Lock()
	heldOut := []string{}
	for n, u := range log.cordoned {
		if u {
			heldOut = append(heldOut, n)
		}
	}
	during := len(log.order)
	log.mu.Unlock()
	// One cordon may have been under way when the switch was set.
	if during > atPause+1 {
		t.Fatalf("%d nodes cordoned during the pause (%d at it)", during-atPause, atPause)
	}
	if len(heldOut) == 0 {
		t.Fatal("no node stayed cordoned through the pause: its uncordon was not held back")
	}
	for _, n := range heldOut {
		recs := h.records(url.Values{"target": {"node/" + n}, "kind": {"suppressed"}})
		if !slices.ContainsFunc(recs, func(r audit.Record) bool { return strings.Contains(reason(r), "kill switch") }) {
			t.Errorf("%s's uncordon was not held back by the kill switch:%s", n, describe(recs))
		}
	}
	if code, body := h.pauseAPIAs(approverToken("alice"), http.MethodDelete, serve.PausesPath+"/"+kill.ID, nil); code != http.StatusOK {
		t.Fatalf("clear the kill switch: %d %s", code, body)
	}

	// After it: the recovered nodes are uncordoned and the storm drains.
	waitFor(t, 60*time.Second, "all 10 sick nodes healed and uncordoned", func() (bool, string) {
		log.mu.Lock()
		defer log.mu.Unlock()
		out := 0
		for _, u := range log.cordoned {
			if u {
				out++
			}
		}
		return len(log.order) == 10 && out == 0, fmt.Sprintf("%d cordoned so far (%v), %d out now", len(log.order), log.order, out)
	})
	healing.Wait()

	log.mu.Lock()
	defer log.mu.Unlock()
	if log.peak > 2 {
		t.Errorf("%d nodes out of service at once, want at most the budget of 2", log.peak)
	}
	for i, n := range sick {
		pos := slices.Index(log.order, n)
		if pos < 0 || pos > i+1 {
			t.Errorf("%s (arrival %d) cordoned at position %d: not in arrival order %v", n, i, pos, log.order)
		}
		if log.timesSeen[n] != 1 {
			t.Errorf("%s cordoned %d times, want once", n, log.timesSeen[n])
		}
	}
	// Each node's chain: its event, a decision, the cordon, its
	// verification, and the uncordon; those held back say what for.
	for i, n := range sick {
		recs := h.records(url.Values{"target": {"node/" + n}})
		ks := kinds(recs)
		if c := count(ks, "action.finished"); c != 2 {
			t.Errorf("%s: %d actions finished, want the cordon and the uncordon:%s", n, c, describe(recs))
		}
		if !slices.Contains(ks, "verified") {
			t.Errorf("%s: the cordon was not verified:%s", n, describe(recs))
		}
		if i >= 2 {
			// Held back for a full budget, or behind older problems
			// waiting for it.
			if !slices.ContainsFunc(recs, func(r audit.Record) bool {
				why := reason(r)
				return r.Kind == audit.KindSuppressed && strings.Contains(string(r.Details), `"held_by":"budget"`) &&
					(strings.Contains(why, "held back: budget 2/2 in use; re-driven when a slot frees") ||
						strings.Contains(why, "older problems wait for the budget's"))
			}) {
				t.Errorf("%s: no record says it waited for the budget: %v%s", n, ks, describe(recs))
			}
		}
		if i == 2 && !slices.ContainsFunc(recs, func(r audit.Record) bool {
			return strings.Contains(reason(r), "held back: budget 2/2 in use; re-driven when a slot frees")
		}) {
			t.Errorf("%s: not held back for the full budget:%s", n, describe(recs))
		}
	}
	// From a slot freeing to the next node cordoned.
	var gaps []time.Duration
	for i := 2; i < len(log.cordonAt); i++ {
		at := log.cordonAt[i]
		var freed time.Time
		for _, f := range log.freedAt {
			if f.Before(at) && f.After(freed) {
				freed = f
			}
		}
		if !freed.IsZero() && at.Sub(freed) < 3*time.Second { // not the pause's wait
			gaps = append(gaps, at.Sub(freed))
		}
	}
	slices.Sort(gaps)
	if len(gaps) == 0 {
		t.Fatal("no cordon followed a freed slot")
	}
	t.Logf("slot freed -> next node cordoned: median %s, max %s (%d)", gaps[len(gaps)/2], gaps[len(gaps)-1], len(gaps))
	if m := gaps[len(gaps)/2]; m > time.Second {
		t.Errorf("median %s from a slot freeing to the next cordon, want under 1s", m)
	}
	if res := audit.VerifyRecords(h.records(url.Values{"after": {"0"}})); !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

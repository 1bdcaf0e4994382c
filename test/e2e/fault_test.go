package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/remediators/nodedrain"
	"github.com/selfheal/healer/test/testenv"
)

// faultCordonPolicy cordons a node with a kernel deadlock, with no rate
// limit in the way, and only looks at the load's alerts.
const faultCordonPolicy = `package healer

import rego.v1

decision := {"remediator": "node.cordon", "approval": "none", "reason": "kernel deadlock: cordon",
	"params": {"reason": "NodeKernelDeadlock"}} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
}

decision := {"approval": "none", "reason": "load: observed only"} if {
	input.event.type == "HALoad"
}
`

// faultDrainPolicy drains a node with a kernel deadlock; the timeout is
// long enough for the drain to outlive an API server outage.
const faultDrainPolicy = `package healer

import rego.v1

decision := {"remediator": "node.drain", "approval": "none", "reason": "kernel deadlock: drain",
	"params": {"reason": "NodeKernelDeadlock", "timeout": "90s"}} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
}
`

// TestFaultNATSNodeLossUnderLoad runs healer on a three-server JetStream
// cluster with every stream and bucket replicated three times. While 100
// alerts a second come in, the server healer is connected to, which has
// been made the leader of the events and audit streams, the actions bucket
// and the engine's consumer, is shut down; a kernel deadlock alert lands
// just before, another just after. Every alert the webhook accepted must
// be audited with its decision, each sick node cordoned by exactly one
// action, and the trail, written across the failover, must verify. The
// server then comes back and catches up.
func TestFaultNATSNodeLossUnderLoad(t *testing.T) {
	ctx := t.Context()
	cluster := testenv.StartNATSCluster(t, 3)
	kube := testenv.StartKube(t)
	nodes := []string{"sick-1", "sick-2"}
	for i := range 8 {
		nodes = append(nodes, fmt.Sprintf("ok-%d", i))
	}
	testenv.CreateNodes(ctx, t, kube.Client, nodes...)

	cfg := serve.Config{NATSURL: cluster.URL(), Kubeconfig: kube.KubeconfigPath, Policies: writePolicy(t, faultCordonPolicy)}
	cfg.Streams.Replicas = 3
	cfg.NodeProblem.Disabled = true // the alerts are the only events
	cfg.Engine.Budget.MinNodes = 2  // both sick nodes may be out at once
	// An event whose acknowledgement a failover swallowed comes back
	// within seconds rather than after the default 30s.
	cfg.Engine.AckWait = 4 * time.Second
	cfg.Engine.RetryDelay = 200 * time.Millisecond
	h := startHealer(t, cfg)

	// The worst server to lose: the one healer's connection is on, leading
	// everything healer writes to and reads from.
	victim := cluster.NameOf(h.srv.NATSURL())
	if victim == "" {
		t.Fatalf("healer is connected to %s, none of the cluster's servers %s", h.srv.NATSURL(), cluster.URL())
	}
	kvStream := "KV_" + bus.BucketActions
	js := jetStreamAt(t, cluster.URL())
	for _, s := range []string{bus.StreamEvents, bus.StreamAudit, kvStream} {
		// Losing a server loses nothing only if every stream lives on all
		// three.
		st, err := js.Stream(ctx, s)
		if err != nil {
			t.Fatalf("stream %s: %v", s, err)
		}
		if info := st.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: %d replicas configured, cluster %+v; want 3, on three servers", s, info.Config.Replicas, info.Cluster)
		}
		cluster.MoveStreamLeader(s, victim)
	}
	cluster.MoveConsumerLeader(bus.StreamEvents, bus.ConsumerEngine, victim)

	// The load: 20 posts a second of 5 alerts each. A post the webhook
	// refuses (503 while the streams elect new leaders) is sent again, as
	// Alertmanager does, for up to 30s.
	var (
		accepted atomic.Int64 // alerts of the load accepted with a 2xx
		refused  atomic.Int64 // refused attempts, the retries included
		lost     atomic.Int64 // alerts never accepted
	)
	post := func(body []byte) bool {
		for deadline := time.Now().Add(30 * time.Second); ; {
			code, err := tryPost(ctx, h.srv.URL(), h.srv.WebhookToken, body)
			if err == nil && code/100 == 2 {
				return true
			}
			refused.Add(1)
			if time.Now().After(deadline) || ctx.Err() != nil {
				return false
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var load sync.WaitGroup
	load.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			load.Go(func() {
				if post(loadBody(n, 5)) {
					accepted.Add(5)
				} else {
					lost.Add(5)
				}
			})
		}
	})

	firing := readTestdata(t, "kernel-deadlock-firing.json")
	sick1, sick2 := alertFor(firing, "sick-1", "f0000000000000a1"), alertFor(firing, "sick-2", "f0000000000000a2")
	time.Sleep(time.Second) // the load runs
	if !post(sick1) {
		t.Fatal("the kernel deadlock alert for sick-1 was refused")
	}
	for _, s := range []string{bus.StreamEvents, bus.StreamAudit, kvStream} {
		if got := cluster.StreamLeader(s); got != victim {
			t.Fatalf("stream %s is led by %q, not by %s, which is about to go", s, got, victim)
		}
	}
	cluster.Stop(victim) // at once: sick-1's cordon is under way
	if !post(sick2) {
		t.Fatal("the kernel deadlock alert for sick-2 was refused after the server went")
	}
	// Alertmanager sends a firing alert again on its repeat interval.
	if !post(sick1) {
		t.Fatal("the repeated alert for sick-1 was refused")
	}
	waitFor(t, 20*time.Second, "new leaders on the surviving servers", func() (bool, string) {
		var state []string
		ok := true
		for _, s := range []string{bus.StreamEvents, bus.StreamAudit, kvStream} {
			l := cluster.StreamLeader(s)
			ok = ok && l != "" && l != victim
			state = append(state, s+"="+l)
		}
		return ok, strings.Join(state, " ")
	})
	if got := cluster.NameOf(h.srv.NATSURL()); got == victim || got == "" {
		t.Errorf("healer is connected to %s (%q) after %s went", h.srv.NATSURL(), got, victim)
	}
	time.Sleep(2 * time.Second) // the load runs on two servers
	cluster.Start(victim)
	time.Sleep(time.Second) // and on three again
	stopLoad()
	load.Wait()
	if lost.Load() > 0 {
		t.Errorf("%d alerts were never accepted, after retrying for 30s", lost.Load())
	}

	// No alert lost: every one accepted has its event and decision in the
	// trail.
	want := int(accepted.Load())
	var all []audit.Record
	waitFor(t, 60*time.Second, fmt.Sprintf("%d load alerts decided", want), func() (bool, string) {
		all = allRecords(t, h.srv.Addr(), h.srv.APIToken)
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
	// And audited once: a redelivery across the failover is recognised.
	twice := map[string]int{}
	for _, r := range all {
		if r.Kind == audit.KindEvent || r.Kind == audit.KindDecision {
			twice[string(r.Kind)+" "+r.EventID]++
		}
	}
	for k, n := range twice {
		if n > 1 {
			t.Errorf("%s audited %d times", k, n)
		}
	}

	// Each sick node cordoned once, by one action that started, finished
	// and was verified once; the repeated alert did nothing more.
	for _, node := range []string{"sick-1", "sick-2"} {
		var recs []audit.Record
		waitFor(t, 20*time.Second, node+"'s cordon verified", func() (bool, string) {
			recs = h.records(url.Values{"target": {"node/" + node}})
			return strings.Contains(strings.Join(kinds(recs), ","), "verified"), describe(recs)
		})
		assertOneAction(t, kube.Client, node, "node.cordon", recs, audit.KindVerified)
	}
	for _, r := range all {
		if r.Kind == audit.KindActionStarted && r.Target != "node/sick-1" && r.Target != "node/sick-2" {
			t.Errorf("an action started on %s: %s", r.Target, r.Details)
		}
	}

	all = allRecords(t, h.srv.Addr(), h.srv.APIToken)
	if res := audit.VerifyRecords(all); !res.OK {
		t.Fatalf("audit chain written across the failover is broken: %+v", res)
	}
	res, err := h.srv.Trail().Verify(ctx)
	if err != nil || !res.OK {
		t.Fatalf("audit stream does not verify: %+v %v", res, err)
	}
	t.Logf("%d alerts at ~100/s, %s (leader of everything) shut down and back; %d refused attempts retried; %d audit records",
		want, victim, refused.Load(), len(all))
}

// TestFaultAPIServerDownMidDrain stops kube-apiserver while healer drains
// a node whose pods a PodDisruptionBudget holds, and starts it again. The
// drain's own call fails and its event is redelivered; the re-checks
// fail while the API server is away, without counting against the
// breaker (3 consecutive failures open it); once it is back the same
// action resumes and finishes. One action: started, finished and verified
// once, the node cordoned once, the pods evicted, the breaker closed.
func TestFaultAPIServerDownMidDrain(t *testing.T) {
	d := startHeldDrain(t, guard.BreakerConfig{ConsecutiveFailures: 3, OpenFor: time.Minute})
	h := d.h

	d.kube.StopAPIServer()
	down := time.Now()
	// The drain's pending eviction fails within its 5s retry delay; the
	// redeliveries then fail at the re-check before acting.
	waitFor(t, 20*time.Second, "the drain to fail and its event to be retried while the API server is down", func() (bool, string) {
		return d.actErrors(t) > 0 && d.retries() >= 4, fmt.Sprintf("act failed %v times, event retried %d times", d.actErrors(t), d.retries())
	})
	if got := metricValue(t, h, `healer_breaker_state\{[^}]*remediator="node.drain"[^}]*\}`); got != 0 {
		t.Errorf("node.drain breaker state %v while the API server is down, want 0 (closed): one failed act is not 3", got)
	}
	d.kube.StartAPIServer()
	t.Logf("kube-apiserver away for %s; event retried %d times meanwhile", time.Since(down).Round(time.Millisecond), d.retries())
	d.lift(t)

	var recs []audit.Record
	waitFor(t, 30*time.Second, "the drain to resume, finish and verify", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/sick"}})
		ks := strings.Join(kinds(recs), ",")
		return strings.Contains(ks, "verified") || strings.Contains(ks, "action.failed"), describe(recs)
	})
	assertOneAction(t, d.kube.Client, "sick", "node.drain", recs, audit.KindVerified)
	d.assertDrained(t)
	errs := d.actErrors(t)
	if errs < 1 || errs >= 3 {
		t.Errorf("node.drain act failed %v times, want 1 or 2: the outage must hit the action itself, and the re-checks must not count", errs)
	}
	if got := metricValue(t, h, `healer_breaker_state\{[^}]*remediator="node.drain"[^}]*\}`); got != 0 {
		t.Errorf("node.drain breaker state %v after the drain, want 0 (closed)", got)
	}
	if n := h.logs.count("circuit breaker changed state", "remediator=node.drain"); n > 0 {
		t.Errorf("node.drain's breaker changed state %d times; %v failures must leave it closed", n, errs)
	}
	if res := audit.VerifyRecords(h.records(url.Values{"after": {"0"}})); !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
}

// TestFaultAPIServerDownOpensBreaker is the same outage with a breaker
// that opens at the first failure and stays open 2s. The drain's failed
// call opens it, as configured. The action has started (the node is
// cordoned, evictions were asked for), so the open breaker must not leave
// it open forever, nor record it as suppressed (nothing done): once the
// API server is back the action is closed exactly once, finished after
// the breaker lets it through again or failed, and never started twice.
func TestFaultAPIServerDownOpensBreaker(t *testing.T) {
	d := startHeldDrain(t, guard.BreakerConfig{ConsecutiveFailures: 1, OpenFor: 2 * time.Second})
	h := d.h

	d.kube.StopAPIServer()
	opened := func() bool {
		return h.logs.count("circuit breaker changed state", "remediator=node.drain", "to=open") > 0
	}
	waitFor(t, 20*time.Second, "the drain's failure to open the breaker", func() (bool, string) {
		return d.actErrors(t) > 0 && opened(), fmt.Sprintf("act failed %v times, breaker opened: %v", d.actErrors(t), opened())
	})
	time.Sleep(time.Second) // redeliveries meet the open breaker
	d.kube.StartAPIServer()
	d.lift(t)

	var recs []audit.Record
	var started audit.Record
	waitFor(t, 30*time.Second, "the started drain to be finished or failed", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/sick"}})
		closed := 0
		for _, r := range recs {
			switch {
			case r.Kind == audit.KindActionStarted:
				started = r
			case r.ActionID == started.ActionID && (r.Kind == audit.KindActionFinished || r.Kind == audit.KindActionFailed):
				closed++
			}
		}
		return started.ActionID != "" && closed > 0, fmt.Sprintf("action %s started and not closed:%s", started.ActionID, describe(recs))
	})
	time.Sleep(time.Second) // anything more would show now
	recs = h.records(url.Values{"target": {"node/sick"}})
	count := map[audit.Kind]int{}
	for _, r := range recs {
		count[r.Kind]++
		if r.Kind == audit.KindSuppressed && r.Seq > started.Seq {
			t.Errorf("record %d says nothing was done for an action under way since record %d: %s", r.Seq, started.Seq, r.Details)
		}
		if r.ActionID != "" && r.ActionID != started.ActionID {
			t.Errorf("record %d %s is of another action %s, want only %s", r.Seq, r.Kind, r.ActionID, started.ActionID)
		}
	}
	if count[audit.KindActionStarted] != 1 || count[audit.KindActionFinished]+count[audit.KindActionFailed] != 1 {
		t.Fatalf("want one action started once and closed once (finished or failed):%s", describe(recs))
	}
	if count[audit.KindActionFinished] == 1 {
		assertOneAction(t, d.kube.Client, "sick", "node.drain", recs, audit.KindVerified)
		d.assertDrained(t)
	} else {
		assertOneAction(t, d.kube.Client, "sick", "node.drain", recs, audit.KindActionFailed)
	}
	if res := audit.VerifyRecords(h.records(url.Values{"after": {"0"}})); !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
}

// heldDrain is a healer draining the node "sick", whose two pods a
// PodDisruptionBudget keeps there, on a real API server.
type heldDrain struct {
	kube *testenv.Kube
	h    *env
	pods []*corev1.Pod
	// cordonedAt is the node's cordoned-at annotation while the drain
	// waits: a second cordon would change it.
	cordonedAt string
}

// startHeldDrain starts the API server with the disruption controller,
// three nodes with fake kubelets, two pods on "sick" under a budget that
// allows no disruption, and a healer with the given breaker that drains
// "sick" on a kernel deadlock alert. It returns once the drain is waiting
// on the budget (an eviction refused, retried every 5s).
func startHeldDrain(t *testing.T, breaker guard.BreakerConfig) *heldDrain {
	t.Helper()
	ctx := t.Context()
	kube := testenv.StartKubeWith(t, testenv.KubeOptions{Controllers: []string{"disruption"}})
	testenv.CreateNodes(ctx, t, kube.Client, "sick", "ok-1", "ok-2")
	testenv.StartFakeKubelet(ctx, t, kube.Client, "sick", "ok-1", "ok-2")
	pods := testenv.CreatePods(ctx, t, kube.Client, testenv.PodSet{Namespace: "shop", Name: "web", Node: "sick", Count: 2})
	minAvailable := intstr.FromInt32(2)
	if _, err := kube.Client.PolicyV1().PodDisruptionBudgets("shop").Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := serve.Config{Kubeconfig: kube.KubeconfigPath, Policies: writePolicy(t, faultDrainPolicy)}
	cfg.NodeProblem.Disabled = true
	cfg.Engine.RetryDelay = 200 * time.Millisecond
	cfg.Engine.Breaker = breaker
	h := startHealer(t, cfg)

	if code, body := h.post(alertFor(readTestdata(t, "kernel-deadlock-firing.json"), "sick", "f0000000000000b1"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "the drain to be held by the PodDisruptionBudget", func() (bool, string) {
		recs := h.records(url.Values{"target": {"node/sick"}})
		return strings.Contains(describe(recs), "eviction_refused"), describe(recs)
	})
	n, err := kube.Client.CoreV1().Nodes().Get(ctx, "sick", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := &heldDrain{kube: kube, h: h, pods: pods, cordonedAt: n.Annotations[nodedrain.AnnotationCordonedAt]}
	if !n.Spec.Unschedulable || d.cordonedAt == "" {
		t.Fatalf("sick is not cordoned by healer while it drains: %v", n.Annotations)
	}
	return d
}

// actErrors is the number of times the drain itself failed, per /metrics.
func (d *heldDrain) actErrors(t *testing.T) float64 {
	t.Helper()
	v, _ := metricSample(t, d.h, `healer_actions_total\{[^}]*remediator="node.drain"[^}]*result="error"[^}]*step="act"[^}]*\}`)
	return v
}

// retries is the number of times the drain's event was handed back for
// redelivery.
func (d *heldDrain) retries() int {
	return d.h.logs.count(`msg="event will be retried"`, "target=node/sick")
}

// lift removes the budget, so every eviction is allowed at once: relaxing
// it would wait for the disruption controller, whose watch takes a while
// to come back after an API server outage.
func (d *heldDrain) lift(t *testing.T) {
	t.Helper()
	if err := d.kube.Client.PolicyV1().PodDisruptionBudgets("shop").Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// assertDrained checks that the pods are gone and that the node was not
// cordoned a second time.
func (d *heldDrain) assertDrained(t *testing.T) {
	t.Helper()
	for _, p := range d.pods {
		if _, err := d.kube.Client.CoreV1().Pods("shop").Get(t.Context(), p.Name, metav1.GetOptions{}); err == nil {
			t.Errorf("pod %s is still there after the drain", p.Name)
		}
	}
	n, err := d.kube.Client.CoreV1().Nodes().Get(t.Context(), "sick", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Annotations[nodedrain.AnnotationCordonedAt]; got != d.cordonedAt {
		t.Errorf("sick was cordoned again: cordoned-at %s, then %s", d.cordonedAt, got)
	}
}

// TestFaultAuditRefusedNoAction makes the real audit stream refuse writes
// (its message limit reached, with new messages discarded, as when its
// storage limit is hit) while an alert that would cordon a node comes in.
// healer must not act while it cannot audit: first nothing at all is
// recorded, then only the event and the decision (the stream takes exactly
// two more records), and the node stays schedulable; the event is kept and
// redelivered. Once the stream takes records again the event is handled
// and audited once: one event, one decision, one action, one cordon.
func TestFaultAuditRefusedNoAction(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKube(t)
	testenv.CreateNodes(ctx, t, kube.Client, "sick", "ok-1", "ok-2")
	cfg := serve.Config{Kubeconfig: kube.KubeconfigPath, Policies: writePolicy(t, faultCordonPolicy)}
	cfg.NodeProblem.Disabled = true // nothing but the alert writes to the trail
	cfg.Engine.RetryDelay = 200 * time.Millisecond
	h := startHealer(t, cfg)

	js := jetStreamAt(t, h.srv.NATSClientURL(), h.srv.NATSOptions()...)
	// limitAudit lets the audit stream take extra more records and refuse
	// the rest; a negative extra lifts the limit.
	limitAudit := func(extra int64) {
		t.Helper()
		s, err := js.Stream(ctx, bus.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := info.Config
		if extra < 0 {
			c.MaxMsgs, c.Discard = -1, jetstream.DiscardOld
		} else {
			c.MaxMsgs, c.Discard = int64(info.State.Msgs)+extra, jetstream.DiscardNew //nolint:gosec // a few hundred records
		}
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatalf("limit stream %s to %d messages: %v", bus.StreamAudit, c.MaxMsgs, err)
		}
	}
	nodeCordoned := func() bool {
		n, err := kube.Client.CoreV1().Nodes().Get(ctx, "sick", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Spec.Unschedulable || n.Annotations[nodedrain.AnnotationOwner] != ""
	}
	// retries counts the times the event was handed back for redelivery.
	retries := func() int { return h.logs.count(`msg="event will be retried"`, "target=node/sick") }

	limitAudit(0)
	if code, body := h.post(alertFor(readTestdata(t, "kernel-deadlock-firing.json"), "sick", "f0000000000000c1"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook while the audit stream refuses writes: %d %s, want 200 (the events stream takes it)", code, body)
	}
	events, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	evInfo, err := events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventSeq := evInfo.State.LastSeq
	waitFor(t, 10*time.Second, "the event to be redelivered while nothing can be audited", func() (bool, string) {
		return retries() >= 3, fmt.Sprintf("%d retries", retries())
	})
	if recs := h.records(url.Values{"target": {"node/sick"}}); len(recs) != 0 {
		t.Fatalf("records written while the audit stream refuses every write:%s", describe(recs))
	}
	if nodeCordoned() {
		t.Fatal("sick was cordoned although not even its event could be audited")
	}
	cons, err := events.Consumer(ctx, bus.ConsumerEngine)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.AckFloor.Stream >= eventSeq || ci.NumAckPending == 0 {
		t.Fatalf("the event (stream seq %d) was acknowledged although nothing of it is audited: ack floor %d, %d pending",
			eventSeq, ci.AckFloor.Stream, ci.NumAckPending)
	}

	// Room for exactly two records: the event's and the decision's. The
	// action's start is refused, so the action must not run.
	limitAudit(2)
	waitFor(t, 10*time.Second, "the event and decision audited", func() (bool, string) {
		recs := h.records(url.Values{"target": {"node/sick"}})
		return len(recs) == 2, describe(recs)
	})
	before := retries()
	waitFor(t, 10*time.Second, "the event to be redelivered while the action's start cannot be audited", func() (bool, string) {
		return retries() >= before+3, fmt.Sprintf("%d retries since the decision was audited", retries()-before)
	})
	if recs := h.records(url.Values{"target": {"node/sick"}}); strings.Join(kinds(recs), ",") != "event,decision" {
		t.Fatalf("want the event and the decision only while the action's start cannot be audited:%s", describe(recs))
	}
	if nodeCordoned() {
		t.Fatal("sick was cordoned although the action's start could not be audited")
	}

	limitAudit(-1)
	var recs []audit.Record
	waitFor(t, 20*time.Second, "the action once the trail takes records", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/sick"}})
		return strings.Contains(strings.Join(kinds(recs), ","), "verified"), describe(recs)
	})
	if got, want := strings.Join(kinds(recs), ","), "event,decision,action.started,action.finished,verified"; got != want {
		t.Errorf("audit of node/sick = %s, want %s, each once:%s", got, want, describe(recs))
	}
	assertOneAction(t, kube.Client, "sick", "node.cordon", recs, audit.KindVerified)
	waitFor(t, 5*time.Second, "the handled event acknowledged", func() (bool, string) {
		ci, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ci.AckFloor.Stream >= eventSeq, fmt.Sprintf("event at stream seq %d, ack floor %d", eventSeq, ci.AckFloor.Stream)
	})
	res, err := h.srv.Trail().Verify(ctx)
	if err != nil || !res.OK {
		t.Fatalf("audit stream does not verify: %+v %v", res, err)
	}
}

// assertOneAction checks that the records of one node hold exactly one
// action of remediator, all under one action id, which is the node's
// owner annotation: started once, then finished and verified once (final
// KindVerified) or failed once (final KindActionFailed); and that healer
// cordoned the node once (one HealerCordoned Event).
func assertOneAction(t *testing.T, client kubernetes.Interface, node, remediator string, recs []audit.Record, final audit.Kind) {
	t.Helper()
	count := map[audit.Kind]int{}
	ids := map[string]bool{}
	for _, r := range recs {
		if r.Remediator != remediator {
			continue
		}
		count[r.Kind]++
		if r.ActionID != "" {
			ids[r.ActionID] = true
		}
	}
	want := map[audit.Kind]int{audit.KindActionStarted: 1, audit.KindActionFinished: 1, final: 1, audit.KindActionFailed: 0}
	if final == audit.KindActionFailed {
		want[audit.KindActionFinished], want[audit.KindActionFailed] = 0, 1
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%s on %s: %d %s records, want %d (one action, closed with %s):%s", remediator, node, count[k], k, n, final, describe(recs))
		}
	}
	if len(ids) != 1 {
		t.Errorf("%s on %s: records under %d action ids, want one:%s", remediator, node, len(ids), describe(recs))
	}
	n, err := client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if owner := n.Annotations[nodedrain.AnnotationOwner]; !n.Spec.Unschedulable || !ids[owner] {
		t.Errorf("%s: unschedulable=%v owner %q, want cordoned by the action %v", node, n.Spec.Unschedulable, owner, ids)
	}
	evs, err := client.CoreV1().Events(metav1.NamespaceDefault).List(t.Context(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": node, "reason": "HealerCordoned"}.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 1 {
		t.Errorf("%s: %d HealerCordoned events, want 1: it was cordoned more than once, or not at all", node, len(evs.Items))
	}
}

// writePolicy writes one Rego file into a new policy directory.
func writePolicy(t *testing.T, rego string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tryPost sends a webhook body once and returns the status code. Unlike
// env.post it may be called from any goroutine.
func tryPost(ctx context.Context, base, token string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhook/alertmanager", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// count returns the number of log lines holding every one of parts.
func (l *logBuffer) count(parts ...string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// metricValue returns the value of the /metrics sample whose name and
// labels match series, or fails the test when there is none.
func metricValue(t *testing.T, h *env, series string) float64 {
	t.Helper()
	v, ok := metricSample(t, h, series)
	if !ok {
		t.Fatalf("/metrics has no sample %s", series)
	}
	return v
}

// metricSample returns the value of the /metrics sample whose name and
// labels match series, and whether there is one (a counter appears once
// it has counted).
func metricSample(t *testing.T, h *env, series string) (float64, bool) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + series + ` (\S+)$`).FindStringSubmatch(metricsText(t, h.srv.URL()))
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("/metrics sample %s: %v", series, err)
	}
	return v, true
}

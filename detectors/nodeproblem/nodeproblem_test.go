package nodeproblem

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/test/testenv"
)

// within bounds every wait for something that should happen promptly; the
// machine running the tests may be busy.
const within = 20 * time.Second

func newDetector(t *testing.T, cfg Config, client kubernetes.Interface, pub Publisher) *Detector {
	t.Helper()
	d, err := New(cfg, client, pub, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func condition(t *testing.T, n *corev1.Node, typ corev1.NodeConditionType) corev1.NodeCondition {
	t.Helper()
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	t.Fatalf("node %s has no %s condition", n.Name, typ)
	return corev1.NodeCondition{}
}

// conditionPayload decodes a condition event's data.
func conditionPayload(t *testing.T, e *bus.Event) conditionData {
	t.Helper()
	var d conditionData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		t.Fatalf("event %s data: %v", e.ID, err)
	}
	return d
}

// TestDetector runs the detector against a real kube-apiserver and a real
// embedded JetStream. Conditions are set exactly as node-problem-detector
// sets them (testenv.SetNodeCondition). Every subtest has its own nodes,
// bus and detector; the apiserver is shared, so detectors also see the
// nodes of earlier subtests, and assertions go by key.
func TestDetector(t *testing.T) {
	k := testenv.StartKube(t)
	ctx := t.Context()

	t.Run("condition set fires, cleared resolves with the same key", func(t *testing.T) {
		conds := []string{"KernelDeadlock", "ReadonlyFilesystem", "FrequentKubeletRestart",
			"FrequentDockerRestart", "FrequentContainerdRestart", "CorruptDockerOverlay2"}
		var names []string
		for i := range conds {
			names = append(names, "set-clear-"+strings.ToLower(conds[i]))
		}
		testenv.CreateNodes(ctx, t, k.Client, names...)
		pub, stream := startBus(ctx, t)
		run(ctx, t, newDetector(t, Config{}, k.Client, pub))

		for i, typ := range conds {
			t.Run(typ, func(t *testing.T) {
				node := names[i]
				key := ConditionKey(node, typ)
				set := testenv.SetNodeCondition(ctx, t, k.Client, node, corev1.NodeConditionType(typ), corev1.ConditionTrue,
					"NPDReason", "reported by node-problem-detector")
				held := condition(t, set, corev1.NodeConditionType(typ))
				firing := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
				if firing.Type != "Node"+typ || firing.Subject != "node/"+node || firing.Source != Source || firing.Key != node+"/"+typ {
					t.Errorf("firing event: type %q subject %q source %q key %q", firing.Type, firing.Subject, firing.Source, firing.Key)
				}
				if want := ConditionEventID(node, typ, "True", held.LastTransitionTime.Time, bus.StatusFiring); firing.ID != want {
					t.Errorf("firing id %s, want %s (node, type, status, lastTransitionTime)", firing.ID, want)
				}
				if !firing.Time.Equal(held.LastTransitionTime.Time) {
					t.Errorf("firing time %s, want the lastTransitionTime %s (For 0)", firing.Time, held.LastTransitionTime)
				}
				data := conditionPayload(t, firing)
				if data.Node != node || data.Condition.Type != typ || data.Condition.Status != "True" ||
					data.Condition.Reason != "NPDReason" || data.Condition.Message != "reported by node-problem-detector" ||
					!data.Condition.LastTransitionTime.Equal(held.LastTransitionTime.Time) || data.Rule.EventType != "Node"+typ || data.HeldFor == "" {
					t.Errorf("firing data %s", firing.Data)
				}

				cleared := testenv.SetNodeCondition(ctx, t, k.Client, node, corev1.NodeConditionType(typ), corev1.ConditionFalse,
					"NPDRecovered", "problem is gone")
				clear := condition(t, cleared, corev1.NodeConditionType(typ))
				resolved := waitEvent(ctx, t, stream, key, bus.StatusResolved, within)
				if resolved.Key != firing.Key || resolved.Type != firing.Type || resolved.Subject != firing.Subject || resolved.ID == firing.ID {
					t.Errorf("resolved %s %s %s %s does not pair with firing %s %s %s %s",
						resolved.ID, resolved.Type, resolved.Subject, resolved.Key, firing.ID, firing.Type, firing.Subject, firing.Key)
				}
				if want := ConditionEventID(node, typ, "False", clear.LastTransitionTime.Time, bus.StatusResolved); resolved.ID != want {
					t.Errorf("resolved id %s, want %s", resolved.ID, want)
				}
				if d := conditionPayload(t, resolved); d.Condition.Status != "False" || d.Condition.Reason != "NPDRecovered" {
					t.Errorf("resolved data %s", resolved.Data)
				}
				if n := len(eventsFor(ctx, t, stream, key)); n != 2 {
					t.Errorf("%d events stored for %s, want firing and resolved", n, key)
				}
			})
		}
	})

	t.Run("For delays the firing event", func(t *testing.T) {
		const node, forDur = "for-2s", 2 * time.Second
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		rec := &recorder{inner: pub}
		run(ctx, t, newDetector(t, Config{Conditions: []ConditionRule{{Type: "KernelDeadlock", For: forDur}}}, k.Client, rec))

		set := testenv.SetNodeCondition(ctx, t, k.Client, node, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "task docker:20744 blocked for more than 120 seconds")
		ltt := condition(t, set, "KernelDeadlock").LastTransitionTime.Time
		key := ConditionKey(node, "KernelDeadlock")
		assertNoEventUntil(ctx, t, stream, key, ltt.Add(forDur-150*time.Millisecond))
		e := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		if !e.Time.Equal(ltt.Add(forDur)) {
			t.Errorf("firing time %s, want lastTransitionTime+For %s", e.Time, ltt.Add(forDur))
		}
		if a, ok := rec.find(key, bus.StatusFiring); !ok || a.at.Before(ltt.Add(forDur)) {
			t.Errorf("published at %s, before lastTransitionTime+For %s", a.at, ltt.Add(forDur))
		}
		if d := conditionPayload(t, e); d.Rule.For != "2s" {
			t.Errorf("data rule %+v", d.Rule)
		}
	})

	t.Run("a condition that clears within For emits nothing", func(t *testing.T) {
		const node, forDur = "flap", 3 * time.Second
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		run(ctx, t, newDetector(t, Config{Conditions: []ConditionRule{{Type: "KernelDeadlock", For: forDur}}}, k.Client, pub))

		key := ConditionKey(node, "KernelDeadlock")
		set := testenv.SetNodeCondition(ctx, t, k.Client, node, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "blocked")
		ltt := condition(t, set, "KernelDeadlock").LastTransitionTime.Time
		testenv.SetNodeCondition(ctx, t, k.Client, node, "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock")
		// Well past the moment the first hold would have counted.
		assertNoEventUntil(ctx, t, stream, key, ltt.Add(forDur+time.Second))

		// The detector is alive: a hold that lasts does count.
		again := testenv.SetNodeCondition(ctx, t, k.Client, node, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "blocked again")
		e := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		if ltt2 := condition(t, again, "KernelDeadlock").LastTransitionTime.Time; !e.Time.Equal(ltt2.Add(forDur)) {
			t.Errorf("firing time %s, want the second hold's lastTransitionTime+For %s", e.Time, ltt2.Add(forDur))
		}
	})

	t.Run("Ready Unknown counts after the grace period and resolves when Ready", func(t *testing.T) {
		const node, grace = "not-ready", 3 * time.Second
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		cfg := Config{}
		cfg.ApplyDefaults()
		for i := range cfg.Conditions {
			if cfg.Conditions[i].Type == "Ready" {
				cfg.Conditions[i].For = grace
			}
		}
		run(ctx, t, newDetector(t, cfg, k.Client, pub))

		key := ConditionKey(node, "Ready")
		set := testenv.SetNodeCondition(ctx, t, k.Client, node, corev1.NodeReady, corev1.ConditionUnknown,
			"NodeStatusUnknown", "Kubelet stopped posting node status.")
		ltt := condition(t, set, corev1.NodeReady).LastTransitionTime.Time
		assertNoEventUntil(ctx, t, stream, key, ltt.Add(grace-150*time.Millisecond))
		e := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		if e.Type != "NodeNotReady" || e.Subject != "node/"+node || !e.Time.Equal(ltt.Add(grace)) {
			t.Errorf("firing %s %s at %s, want NodeNotReady node/%s at %s", e.Type, e.Subject, e.Time, node, ltt.Add(grace))
		}
		if d := conditionPayload(t, e); d.Condition.Status != "Unknown" || d.Condition.Reason != "NodeStatusUnknown" {
			t.Errorf("firing data %s", e.Data)
		}
		testenv.SetNodeCondition(ctx, t, k.Client, node, corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status")
		r := waitEvent(ctx, t, stream, key, bus.StatusResolved, within)
		if r.Type != "NodeNotReady" {
			t.Errorf("resolved type %s", r.Type)
		}
	})

	t.Run("a restarted detector publishes the same ids", func(t *testing.T) {
		const node = "restart"
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		key := ConditionKey(node, "KernelDeadlock")
		testenv.SetNodeCondition(ctx, t, k.Client, node, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "blocked")

		first := &recorder{inner: pub}
		stop := run(ctx, t, newDetector(t, Config{}, k.Client, first))
		e := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		stop()

		second := &recorder{inner: pub}
		d2 := newDetector(t, Config{}, k.Client, second)
		run(ctx, t, d2)
		var again ackedEvent
		waitUntil(t, within, "the new instance publishes the condition's firing event", func() bool {
			var ok bool
			again, ok = second.find(key, bus.StatusFiring)
			return ok
		})
		if again.event.ID != e.ID {
			t.Errorf("after a restart the firing event has id %s, first %s", again.event.ID, e.ID)
		}
		if st := d2.Stats(); st.Duplicates == 0 {
			t.Errorf("JetStream reported no duplicates to the restarted detector: %+v", st)
		}
		if evs := eventsFor(ctx, t, stream, key); len(evs) != 1 {
			t.Errorf("%d events stored for %s after a restart, want 1: %v", len(evs), key, describe(evs))
		}
	})

	t.Run("a cleared condition on a node healer cordoned is resolved at start", func(t *testing.T) {
		const annotated, plain = "annotated", "plain"
		testenv.CreateNodes(ctx, t, k.Client, annotated, plain)
		for _, n := range []string{annotated, plain} {
			testenv.SetNodeCondition(ctx, t, k.Client, n, "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock")
		}
		// Held for its KernelDeadlock condition and for an alert; not for
		// its Ready condition.
		held := bus.ProblemID(Source, ConditionKey(annotated, "KernelDeadlock")) + ",3f2a9c0d1e4b5a6c"
		patch := []byte(`{"metadata":{"annotations":{"` + AnnotationProblems + `":"` + held + `"}}}`)
		if _, err := k.Client.CoreV1().Nodes().Patch(ctx, annotated, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("annotate node %s: %v", annotated, err)
		}
		pub, stream := startBus(ctx, t)
		d := newDetector(t, Config{}, k.Client, pub)
		run(ctx, t, d)

		r := waitEvent(ctx, t, stream, ConditionKey(annotated, "KernelDeadlock"), bus.StatusResolved, within)
		if r.Type != "NodeKernelDeadlock" || r.Subject != "node/"+annotated {
			t.Errorf("resolved %s %s", r.Type, r.Subject)
		}
		ltt := condition(t, getNode(ctx, t, k.Client, annotated), "KernelDeadlock").LastTransitionTime.Time
		if want := ConditionEventID(annotated, "KernelDeadlock", "False", ltt, bus.StatusResolved); r.ID != want {
			t.Errorf("resolved id %s, want %s", r.ID, want)
		}
		// Everything the initial list called for is published by now.
		waitUntil(t, within, "initial events published", func() bool { return d.Stats().Queued == 0 })
		if evs := eventsFor(ctx, t, stream, ConditionKey(plain, "KernelDeadlock")); len(evs) != 0 {
			t.Errorf("node without %s got events at start: %v", AnnotationProblems, describe(evs))
		}
		// Ready=True is the clear state of the NodeNotReady rule, but healer
		// does not hold the node for NodeNotReady: no event, so no undo is
		// decided for a cordon some other problem made.
		if evs := eventsFor(ctx, t, stream, ConditionKey(annotated, "Ready")); len(evs) != 0 {
			t.Errorf("annotated node not held for Ready got events at start: %v", describe(evs))
		}
		if evs := eventsFor(ctx, t, stream, ConditionKey(plain, "Ready")); len(evs) != 0 {
			t.Errorf("node without %s got events at start: %v", AnnotationProblems, describe(evs))
		}
	})

	t.Run("node problem Events fire", func(t *testing.T) {
		const node = "kernel-events"
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		cfg := Config{Events: []EventRule{{Reason: "TaskHung", Sources: []string{"kernel-monitor"}}, {Reason: "OOMKilling"}}}
		run(ctx, t, newDetector(t, cfg, k.Client, pub))

		now := metav1.NewTime(time.Now())
		npdEvent := func(name, reason, component, message string) *corev1.Event {
			return &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
				InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)},
				Reason:         reason,
				Message:        message,
				Source:         corev1.EventSource{Component: component, Host: node},
				FirstTimestamp: now,
				LastTimestamp:  now,
				Count:          1,
				Type:           corev1.EventTypeWarning,
			}
		}
		create := func(e *corev1.Event) *corev1.Event {
			t.Helper()
			created, err := k.Client.CoreV1().Events(e.Namespace).Create(ctx, e, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create event %s: %v", e.Name, err)
			}
			return created
		}
		create(npdEvent(node+".starting", "Starting", "kubelet", "Starting kubelet."))
		create(npdEvent(node+".other-monitor", "TaskHung", "abrt-adaptor", "task x blocked"))
		stale := npdEvent(node+".stale", "TaskHung", "kernel-monitor", "task y blocked for more than 120 seconds.")
		stale.FirstTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
		stale.LastTimestamp = stale.FirstTimestamp
		create(stale)
		hung := create(npdEvent(node+".taskhung", "TaskHung", "kernel-monitor", "task docker:20744 blocked for more than 120 seconds."))

		key := EventKey(node, "TaskHung")
		e := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		if e.Type != "NodeTaskHung" || e.Subject != "node/"+node || e.ID != NodeEventID(hung.UID, 1) {
			t.Errorf("event %s %s %s, want NodeTaskHung node/%s %s", e.ID, e.Type, e.Subject, node, NodeEventID(hung.UID, 1))
		}
		var data eventData
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data.Node != node || data.Reason != "TaskHung" || data.Source != "kernel-monitor" || data.Count != 1 ||
			!strings.Contains(data.Message, "blocked for more than 120 seconds") || data.LastTimestamp.IsZero() {
			t.Errorf("event data %s", e.Data)
		}

		// It happens again: the recorder bumps count and lastTimestamp.
		hung.Count = 2
		hung.LastTimestamp = metav1.NewTime(time.Now().Add(time.Second))
		if _, err := k.Client.CoreV1().Events(hung.Namespace).Update(ctx, hung, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update event %s: %v", hung.Name, err)
		}
		waitUntil(t, within, "the second occurrence is stored", func() bool { return len(eventsFor(ctx, t, stream, key)) == 2 })
		if evs := eventsFor(ctx, t, stream, key); evs[1].ID != NodeEventID(hung.UID, 2) {
			t.Errorf("second occurrence id %s, want %s", evs[1].ID, NodeEventID(hung.UID, 2))
		}
		// Created before the update, so handled before it: no reason rule,
		// a source the TaskHung rule does not accept, older than maxEventAge.
		if evs := eventsFor(ctx, t, stream, EventKey(node, "Starting")); len(evs) != 0 {
			t.Errorf("a kubelet Starting event was reported: %v", describe(evs))
		}
		if evs := eventsFor(ctx, t, stream, key); len(evs) != 2 {
			t.Errorf("TaskHung from another source, or an hour old, was reported: %v", describe(evs))
		}
	})

	t.Run("only node-problem-detector's Events count", func(t *testing.T) {
		const node = "npd-only"
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		d := newDetector(t, Config{}, k.Client, pub)
		reader := sdkmetric.NewManualReader()
		if _, err := d.RegisterMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")); err != nil {
			t.Fatal(err)
		}
		run(ctx, t, d)

		now := metav1.NewTime(time.Now())
		create := func(name string, edit func(e *corev1.Event)) *corev1.Event {
			t.Helper()
			e := &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{Name: node + "." + name, Namespace: metav1.NamespaceDefault},
				InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)},
				Reason:         "TaskHung",
				Message:        "task docker:20744 blocked for more than 120 seconds.",
				Source:         corev1.EventSource{Component: "kernel-monitor", Host: node},
				FirstTimestamp: now, LastTimestamp: now, Count: 1, Type: corev1.EventTypeWarning,
			}
			edit(e)
			created, err := k.Client.CoreV1().Events(e.Namespace).Create(ctx, e, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create event %s: %v", e.Name, err)
			}
			return created
		}
		// Written by someone else, each in one way.
		create("mallory", func(e *corev1.Event) { e.Source.Component = "mallory" })
		create("crd-node", func(e *corev1.Event) { e.InvolvedObject.APIVersion = "evil.example/v1" })
		create("namespaced-node", func(e *corev1.Event) { e.InvolvedObject.Namespace = metav1.NamespaceDefault })
		create("pod", func(e *corev1.Event) { e.InvolvedObject.Kind = "Pod" })                                                        // not listed: the field selector
		create("elsewhere", func(e *corev1.Event) { e.Namespace = metav1.NamespaceSystem; e.InvolvedObject.Namespace = e.Namespace }) // not watched
		// node-problem-detector's own, created last, so handled last.
		real := create("kernel-monitor", func(*corev1.Event) {})

		key := EventKey(node, "TaskHung")
		e := waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		if e.ID != NodeEventID(real.UID, 1) {
			t.Errorf("event %s, want the kernel-monitor one %s", e.ID, NodeEventID(real.UID, 1))
		}
		if evs := eventsFor(ctx, t, stream, key); len(evs) != 1 {
			t.Errorf("%d events for %s, want only the kernel-monitor one: %v", len(evs), key, describe(evs))
		}
		want := map[string]int64{IgnoredSource: 1, IgnoredNotANode: 2, IgnoredNamespace: 0}
		if got := d.Stats().Ignored; !maps.Equal(got, want) {
			t.Errorf("ignored %v, want %v", got, want)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "healer_nodeproblem_events_ignored" {
					for _, p := range sum.DataPoints {
						why, _ := p.Attributes.Value("reason")
						got[why.AsString()] = p.Value
					}
				}
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("healer_nodeproblem_events_ignored %v, want %v", got, want)
		}
	})

	t.Run("a deleted node's counting problems resolve", func(t *testing.T) {
		const node = "deleted"
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		run(ctx, t, newDetector(t, Config{}, k.Client, pub))
		testenv.SetNodeCondition(ctx, t, k.Client, node, "ReadonlyFilesystem", corev1.ConditionTrue, "FilesystemIsReadOnly", "Filesystem is read-only")
		key := ConditionKey(node, "ReadonlyFilesystem")
		waitEvent(ctx, t, stream, key, bus.StatusFiring, within)
		if err := k.Client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete node %s: %v", node, err)
		}
		r := waitEvent(ctx, t, stream, key, bus.StatusResolved, within)
		if d := conditionPayload(t, r); !d.NodeDeleted || d.Condition.Status != statusNodeDeleted {
			t.Errorf("resolved data %s, want nodeDeleted", r.Data)
		}
	})

	t.Run("publishing is retried until JetStream acknowledges", func(t *testing.T) {
		const node = "bus-down"
		testenv.CreateNodes(ctx, t, k.Client, node)
		pub, stream := startBus(ctx, t)
		rec := &recorder{inner: pub}
		rec.failFirst.Store(3)
		d := newDetector(t, Config{}, k.Client, rec)
		run(ctx, t, d)
		testenv.SetNodeCondition(ctx, t, k.Client, node, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "blocked")
		waitEvent(ctx, t, stream, ConditionKey(node, "KernelDeadlock"), bus.StatusFiring, within)
		if st := d.Stats(); st.PublishErrors < 3 {
			t.Errorf("stats %+v: want the 3 failed attempts counted", st)
		}
	})

	t.Run("Run fails at once without permission to list nodes", func(t *testing.T) {
		pub, _ := startBus(ctx, t)
		nobody := k.UserClient(t, k.AddUser("nobody"))
		d := newDetector(t, Config{}, nobody, pub)
		err := d.Run(ctx)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "list nodes") {
			t.Fatalf("Run = %v, want a forbidden error naming the list of nodes", err)
		}
	})
}

func getNode(ctx context.Context, t *testing.T, c kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

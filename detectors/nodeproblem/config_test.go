package nodeproblem

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/remediators/nodedrain"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	want := map[string]ConditionRule{
		"KernelDeadlock":            {Type: "KernelDeadlock", Statuses: []string{"True"}, EventType: "NodeKernelDeadlock"},
		"ReadonlyFilesystem":        {Type: "ReadonlyFilesystem", Statuses: []string{"True"}, EventType: "NodeReadonlyFilesystem"},
		"FrequentKubeletRestart":    {Type: "FrequentKubeletRestart", Statuses: []string{"True"}, EventType: "NodeFrequentKubeletRestart"},
		"FrequentDockerRestart":     {Type: "FrequentDockerRestart", Statuses: []string{"True"}, EventType: "NodeFrequentDockerRestart"},
		"FrequentContainerdRestart": {Type: "FrequentContainerdRestart", Statuses: []string{"True"}, EventType: "NodeFrequentContainerdRestart"},
		"CorruptDockerOverlay2":     {Type: "CorruptDockerOverlay2", Statuses: []string{"True"}, EventType: "NodeCorruptDockerOverlay2"},
		"Ready":                     {Type: "Ready", Statuses: []string{"False", "Unknown"}, For: 2 * time.Minute, EventType: "NodeNotReady"},
	}
	if len(c.Conditions) != len(want) {
		t.Errorf("%d default conditions, want %d", len(c.Conditions), len(want))
	}
	for _, r := range c.Conditions {
		w, ok := want[r.Type]
		if !ok || !slices.Equal(r.Statuses, w.Statuses) || r.For != w.For || r.EventType != w.EventType {
			t.Errorf("default rule %+v, want %+v", r, w)
		}
	}
	var reasons []string
	for _, r := range c.Events {
		reasons = append(reasons, r.Reason+"->"+r.EventType)
		if len(r.Sources) != 0 {
			t.Errorf("default event rule %s limits sources to %v", r.Reason, r.Sources)
		}
	}
	if !slices.Equal(reasons, []string{"TaskHung->NodeTaskHung", "OOMKilling->NodeOOMKilling", "KernelOops->NodeKernelOops"}) {
		t.Errorf("default event rules %v", reasons)
	}
	if want := []string{"kernel-monitor", "system-log-monitor", "abrt-adaptor", "custom-plugin-monitor"}; !slices.Equal(c.Sources, want) {
		t.Errorf("default sources %v, want node-problem-detector's %v", c.Sources, want)
	}
	if !slices.Equal(c.Namespaces, []string{"default"}) {
		t.Errorf("default namespaces %v, want [default]", c.Namespaces)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{}},
		{name: "rule defaults filled", cfg: Config{Conditions: []ConditionRule{{Type: "GPUFailure"}}}},
		{name: "empty lists watch nothing", cfg: Config{Conditions: []ConditionRule{}, Events: []EventRule{}}},
		{name: "condition without type", cfg: Config{Conditions: []ConditionRule{{Statuses: []string{"True"}, EventType: "X"}}}, wantErr: "conditions[0]: type is required"},
		{name: "two rules for one type", cfg: Config{Conditions: []ConditionRule{{Type: "KernelDeadlock"}, {Type: "KernelDeadlock", For: time.Minute}}}, wantErr: "a second rule for condition KernelDeadlock"},
		{name: "bad status", cfg: Config{Conditions: []ConditionRule{{Type: "Ready", Statuses: []string{"false"}}}}, wantErr: `status "false": must be True, False or Unknown`},
		{name: "negative for", cfg: Config{Conditions: []ConditionRule{{Type: "Ready", For: -time.Second}}}, wantErr: "for -1s: must not be negative"},
		{name: "event without reason", cfg: Config{Events: []EventRule{{EventType: "X"}}}, wantErr: "events[0]: reason is required"},
		{name: "empty source", cfg: Config{Events: []EventRule{{Reason: "TaskHung", Sources: []string{" "}}}}, wantErr: "empty source name"},
		{name: "a rule narrows the sources", cfg: Config{Events: []EventRule{{Reason: "TaskHung", Sources: []string{"kernel-monitor"}}}}},
		{name: "a rule source not believed", cfg: Config{Events: []EventRule{{Reason: "TaskHung", Sources: []string{"mallory"}}}}, wantErr: `source "mallory" is not one of nodeproblem sources`},
		{name: "own sources", cfg: Config{Sources: []string{"my-monitor"}, Events: []EventRule{{Reason: "GPUFailure", Sources: []string{"my-monitor"}}}}},
		{name: "no sources", cfg: Config{Sources: []string{}}, wantErr: "sources: at least one is required"},
		{name: "no sources, no events", cfg: Config{Sources: []string{}, Namespaces: []string{}, Events: []EventRule{}}},
		{name: "empty detector source", cfg: Config{Sources: []string{"kernel-monitor", ""}}, wantErr: "sources[1]: empty source name"},
		{name: "no namespaces", cfg: Config{Namespaces: []string{}}, wantErr: "namespaces: at least one is required"},
		{name: "bad namespace", cfg: Config{Namespaces: []string{"Default"}}, wantErr: `namespaces[0] "Default"`},
		{name: "namespace twice", cfg: Config{Namespaces: []string{"default", "kube-system", "default"}}, wantErr: `namespaces[2] "default": listed twice`},
		{name: "empty label", cfg: Config{Labels: []string{""}}, wantErr: "labels[0]"},
		{name: "negative max event age", cfg: Config{MaxEventAge: -time.Second}, wantErr: "maxEventAge"},
		{name: "negative publish timeout", cfg: Config{PublishTimeout: -time.Second}, wantErr: "publishTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.ApplyDefaults()
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestConditionEventID(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 3, 12, 4, 0, time.UTC)
	id := ConditionEventID("w1", "KernelDeadlock", "True", t0, bus.StatusFiring)
	same := map[string]string{
		"same instant in another zone": ConditionEventID("w1", "KernelDeadlock", "True", t0.In(time.FixedZone("CET", 3600)), bus.StatusFiring),
		"sub-second part dropped":      ConditionEventID("w1", "KernelDeadlock", "True", t0.Add(400*time.Millisecond), bus.StatusFiring),
	}
	for name, other := range same {
		if other != id {
			t.Errorf("%s: %s != %s", name, other, id)
		}
	}
	differ := map[string]string{
		"other node":       ConditionEventID("w2", "KernelDeadlock", "True", t0, bus.StatusFiring),
		"other condition":  ConditionEventID("w1", "ReadonlyFilesystem", "True", t0, bus.StatusFiring),
		"other status":     ConditionEventID("w1", "KernelDeadlock", "Unknown", t0, bus.StatusFiring),
		"other transition": ConditionEventID("w1", "KernelDeadlock", "True", t0.Add(time.Second), bus.StatusFiring),
		"resolved":         ConditionEventID("w1", "KernelDeadlock", "True", t0, bus.StatusResolved),
		"no field bleeds":  ConditionEventID("w1K", "ernelDeadlock", "True", t0, bus.StatusFiring),
	}
	for name, other := range differ {
		if other == id {
			t.Errorf("%s: same id %s", name, id)
		}
	}
	if NodeEventID(types.UID("u1"), 1) == NodeEventID(types.UID("u1"), 2) || NodeEventID("u1", 1) == NodeEventID("u2", 1) {
		t.Error("node event ids do not tell occurrences or events apart")
	}
}

// The detector's copy of the annotation name must be the one node.cordon
// writes, or resolved events at start-up would never be sent.
func TestAnnotationIsTheCordonRemediators(t *testing.T) {
	if AnnotationProblems != nodedrain.AnnotationProblems {
		t.Fatalf("AnnotationProblems %q, node.cordon writes %q", AnnotationProblems, nodedrain.AnnotationProblems)
	}
}

// slimNode is pure logic; the fake clientset only satisfies New.
func TestSlimNodeKeepsOnlyWhatIsUsed(t *testing.T) {
	d, err := New(Config{}, fake.NewClientset(), &recorder{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ltt := metav1.NewTime(time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC))
	full := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: "w1", UID: "uid-1", ResourceVersion: "42",
			Labels: map[string]string{
				"kubernetes.io/hostname":                "w1",
				"node-role.kubernetes.io/control-plane": "",
				"topology.kubernetes.io/zone":           "eu-1a",
				"topology.kubernetes.io/region":         "eu-1",
			},
			Annotations: map[string]string{
				AnnotationProblems:                                       "p1",
				"healer.io/owner":                                        "act-1",
				"node.alpha.kubernetes.io/ttl":                           "0",
				"kubectl.kubernetes.io/last-applied-configuration":       strings.Repeat("x", 4096),
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
		},
		Spec: corev1.NodeSpec{PodCIDR: "10.0.0.0/24", ProviderID: "x://1"},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, LastTransitionTime: ltt},
				{Type: "KernelDeadlock", Status: corev1.ConditionTrue, Reason: "DockerHung", Message: "blocked",
					LastTransitionTime: ltt, LastHeartbeatTime: metav1.Now()},
				{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastTransitionTime: ltt},
			},
			Images:   []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1}},
			Capacity: corev1.ResourceList{corev1.ResourcePods: {}},
		},
	}
	out, err := d.slimNode(full)
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*nodeInfo)
	if slim.Name != "w1" || slim.UID != "uid-1" || slim.ResourceVersion != "42" {
		t.Errorf("identity lost: %+v", slim.ObjectMeta)
	}
	wantLabels := map[string]string{"node-role.kubernetes.io/control-plane": "", "topology.kubernetes.io/zone": "eu-1a"}
	if got := slim.labelMap(); !maps.Equal(got, wantLabels) || len(slim.Labels) != 0 {
		t.Errorf("labels %v (map %v), want %v", got, slim.Labels, wantLabels)
	}
	if len(slim.Annotations) != 2 || slim.Annotations[AnnotationProblems] != "p1" || slim.Annotations["healer.io/owner"] != "act-1" {
		t.Errorf("annotations %v, want only healer's", slim.Annotations)
	}
	var kept []corev1.NodeConditionType
	for _, c := range slim.conditions {
		kept = append(kept, c.Type)
	}
	if !slices.Equal(kept, []corev1.NodeConditionType{"KernelDeadlock", corev1.NodeReady}) {
		t.Errorf("conditions %v, want the watched ones", kept)
	}
	if kd := slim.condition("KernelDeadlock"); kd.Status != corev1.ConditionTrue || kd.Reason != "DockerHung" || kd.Message != "blocked" || !kd.LastTransitionTime.Equal(&ltt) {
		t.Errorf("KernelDeadlock %+v", kd)
	}
	if len(slim.ManagedFields) != 0 {
		t.Errorf("managed fields kept: %+v", slim.ManagedFields)
	}
	again, err := d.slimNode(slim)
	if err != nil || again != any(slim) {
		t.Errorf("slimNode of its own output = %v, %v; want it unchanged (idempotent)", again, err)
	}
	cp := slim.DeepCopyObject().(*nodeInfo)
	cp.labels[1] = "changed"
	cp.conditions[0].Status = corev1.ConditionFalse
	cp.Annotations[AnnotationProblems] = "changed"
	if slim.labels[1] == "changed" || slim.conditions[0].Status != corev1.ConditionTrue || slim.Annotations[AnnotationProblems] != "p1" {
		t.Error("DeepCopyObject shares state with the original")
	}
}

// Interned texts are shared between nodes, and the interner stops growing
// at its bound.
func TestInterner(t *testing.T) {
	var in interner
	a := in.intern(string([]byte("kubelet is posting ready status")))
	b := in.intern(string([]byte("kubelet is posting ready status")))
	if unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("equal texts are not shared")
	}
	for i := range 2 * maxInterned {
		in.intern(fmt.Sprint("msg-", i))
	}
	if n := len(in.m); n != maxInterned {
		t.Errorf("interner holds %d strings, want its bound %d", n, maxInterned)
	}
}

// TestUntrusted: only an Event that node-problem-detector could have
// posted about a Node counts. The apiserver test of the same is in
// TestDetector; this one covers what a real apiserver never delivers
// (another namespace, another kind).
func TestUntrusted(t *testing.T) {
	var cfg Config
	cfg.ApplyDefaults()
	d := newDetector(t, cfg, fake.NewClientset(), &recorder{})
	npd := func(edit func(e *corev1.Event)) *corev1.Event {
		e := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "worker-1.17f", Namespace: metav1.NamespaceDefault},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "worker-1", UID: "worker-1"},
			Reason:         "TaskHung",
			Source:         corev1.EventSource{Component: "kernel-monitor", Host: "worker-1"},
		}
		if edit != nil {
			edit(e)
		}
		return e
	}
	tests := []struct {
		name string
		e    *corev1.Event
		want string
	}{
		{"node-problem-detector's", npd(nil), ""},
		{"each of its monitors", npd(func(e *corev1.Event) { e.Source.Component = "custom-plugin-monitor" }), ""},
		{"events.k8s.io reportingController", npd(func(e *corev1.Event) {
			e.Source = corev1.EventSource{}
			e.ReportingController = "system-log-monitor"
		}), ""},
		{"core API group spelled out", npd(func(e *corev1.Event) { e.InvolvedObject.APIVersion = "v1" }), ""},
		{"another source", npd(func(e *corev1.Event) { e.Source.Component = "mallory" }), IgnoredSource},
		{"no source", npd(func(e *corev1.Event) { e.Source.Component = "" }), IgnoredSource},
		{"another reportingController", npd(func(e *corev1.Event) {
			e.Source = corev1.EventSource{}
			e.ReportingController = "mallory"
		}), IgnoredSource},
		{"another namespace", npd(func(e *corev1.Event) { e.Namespace = "team-a" }), IgnoredNamespace},
		{"a Pod named like a node", npd(func(e *corev1.Event) { e.InvolvedObject.Kind = "Pod" }), IgnoredNotANode},
		{"a Node of another API group", npd(func(e *corev1.Event) { e.InvolvedObject.APIVersion = "evil.example/v1" }), IgnoredNotANode},
		{"a namespaced Node", npd(func(e *corev1.Event) { e.InvolvedObject.Namespace = "default" }), IgnoredNotANode},
		{"no name", npd(func(e *corev1.Event) { e.InvolvedObject.Name = "" }), IgnoredNotANode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := d.untrusted(tt.e); got != tt.want {
				t.Errorf("untrusted = %q, want %q", got, tt.want)
			}
		})
	}
}

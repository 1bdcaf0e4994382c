package nodeproblem

import (
	"maps"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// healerAnnotationPrefix marks the Node annotations healer itself sets;
// only those are kept in the cache.
const healerAnnotationPrefix = "healer.io/"

// nodeInfo is what the Node informer's cache holds for a Node: its name,
// uid and resourceVersion, healer's annotations, the labels of
// Config.Labels and the watched conditions. A Node as the apiserver sends it
// is 5-15 KiB (images, managed fields, capacity, addresses) and even an
// empty *corev1.Node takes 896 bytes; at 100,000 nodes that difference is
// the detector's memory.
type nodeInfo struct {
	metav1.ObjectMeta
	// labels are the kept labels as key, value pairs, sorted by key: a
	// slice costs a fraction of a small map.
	labels []string
	// conditions are the watched conditions, without their heartbeat time.
	conditions []nodeCondition
}

// nodeCondition is a Node condition without lastHeartbeatTime, which
// changes on every heartbeat and says nothing about a problem.
type nodeCondition struct {
	Type               corev1.NodeConditionType
	Status             corev1.ConditionStatus
	Reason, Message    string
	LastTransitionTime metav1.Time
}

var _ runtime.Object = (*nodeInfo)(nil)

// GetObjectKind tells the informer that a nodeInfo carries no type meta.
func (n *nodeInfo) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject returns a copy of n sharing nothing mutable with it.
func (n *nodeInfo) DeepCopyObject() runtime.Object {
	c := &nodeInfo{labels: slices.Clone(n.labels), conditions: slices.Clone(n.conditions)}
	n.DeepCopyInto(&c.ObjectMeta)
	return c
}

// condition returns the node's condition of type t, or nil.
func (n *nodeInfo) condition(t corev1.NodeConditionType) *nodeCondition {
	if n == nil {
		return nil
	}
	for i := range n.conditions {
		if n.conditions[i].Type == t {
			return &n.conditions[i]
		}
	}
	return nil
}

// labelMap returns the kept labels as a map, for event data.
func (n *nodeInfo) labelMap() map[string]string {
	if len(n.labels) == 0 {
		return nil
	}
	m := make(map[string]string, len(n.labels)/2)
	for i := 0; i+1 < len(n.labels); i += 2 {
		m[n.labels[i]] = n.labels[i+1]
	}
	return m
}

// slimNode is the Node informer's transform: a *corev1.Node becomes a
// *nodeInfo. It is idempotent, as transforms must be (with watch-list the
// informer passes objects through it twice).
func (d *Detector) slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	info := &nodeInfo{ObjectMeta: metav1.ObjectMeta{
		Name:            n.Name,
		UID:             n.UID,
		ResourceVersion: n.ResourceVersion,
	}}
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		if d.keepLabel(k) {
			info.labels = append(info.labels, d.strings.intern(k), d.strings.intern(n.Labels[k]))
		}
	}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, healerAnnotationPrefix) {
			if info.Annotations == nil {
				info.Annotations = map[string]string{}
			}
			info.Annotations[k] = v
		}
	}
	kept := 0
	for i := range n.Status.Conditions {
		if d.conditions[n.Status.Conditions[i].Type] != nil {
			kept++
		}
	}
	if kept > 0 {
		info.conditions = make([]nodeCondition, 0, kept)
		for _, c := range n.Status.Conditions {
			rule := d.conditions[c.Type]
			if rule == nil {
				continue
			}
			info.conditions = append(info.conditions, nodeCondition{
				// The rule's copy of the type, and interned texts: the
				// same few strings on every healthy node.
				Type:               corev1.NodeConditionType(rule.Type),
				Status:             corev1.ConditionStatus(d.strings.intern(string(c.Status))),
				Reason:             d.strings.intern(c.Reason),
				Message:            d.strings.intern(c.Message),
				LastTransitionTime: c.LastTransitionTime,
			})
		}
	}
	return info, nil
}

// interner keeps one copy of the short texts that repeat on every node
// (label values, condition reasons and messages). It stops taking new
// strings once it holds maxInterned, so unusual texts cannot grow it
// without bound; those are then simply not shared.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

const (
	maxInterned    = 4096
	maxInternedLen = 256
)

func (in *interner) intern(s string) string {
	if s == "" || len(s) > maxInternedLen {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if c, ok := in.m[s]; ok {
		return c
	}
	if in.m == nil {
		in.m = map[string]string{}
	}
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

// slimEvent is the Event informer's transform. Events whose reason no rule
// names keep only their identity (the informer needs the key); the others
// keep what an event's data reports.
func (d *Detector) slimEvent(obj any) (any, error) {
	e, ok := obj.(*corev1.Event)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Event{ObjectMeta: metav1.ObjectMeta{
		Name:              e.Name,
		Namespace:         e.Namespace,
		UID:               e.UID,
		ResourceVersion:   e.ResourceVersion,
		CreationTimestamp: e.CreationTimestamp,
	}}
	if len(d.events[e.Reason]) == 0 {
		return slim, nil
	}
	slim.InvolvedObject = corev1.ObjectReference{
		Kind: e.InvolvedObject.Kind, APIVersion: e.InvolvedObject.APIVersion,
		Namespace: e.InvolvedObject.Namespace, Name: e.InvolvedObject.Name,
	}
	slim.Reason = e.Reason
	slim.Message = e.Message
	slim.Source = e.Source
	slim.ReportingController = e.ReportingController
	slim.Type = e.Type
	slim.Count = e.Count
	slim.FirstTimestamp = e.FirstTimestamp
	slim.LastTimestamp = e.LastTimestamp
	slim.EventTime = e.EventTime
	slim.Series = e.Series
	return slim, nil
}

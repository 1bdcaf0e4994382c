package nodeproblem

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/selfheal/healer/bus"
)

// onEvent handles a Node Event seen for the first time (old == nil) or
// updated, which is how a recorder reports that it happened again (count
// and lastTimestamp go up). Every new occurrence is a firing event; there
// is no resolve.
func (d *Detector) onEvent(old, e *corev1.Event) {
	if len(d.events[e.Reason]) == 0 {
		return // no rule names its reason (the kubelet's NodeReady, say): of no interest
	}
	count, last := eventCount(e), lastSeen(e)
	if old != nil && old.UID == e.UID && eventCount(old) == count && lastSeen(old).Equal(last) {
		return // a resync or an unrelated change: nothing happened again
	}
	if why := d.untrusted(e); why != "" {
		d.ignored(why).Add(1)
		// Debug only: whoever writes such Events could flood the log.
		d.log.Debug("node event ignored", "why", why, "event", e.Namespace+"/"+e.Name, "reason", e.Reason,
			"source", eventSource(e), "involved_kind", e.InvolvedObject.Kind, "involved_name", e.InvolvedObject.Name)
		return
	}
	rule := d.eventRule(e)
	if rule == nil {
		return
	}
	now := d.now()
	if age := now.Sub(last); age > d.cfg.MaxEventAge {
		d.log.Debug("node event too old to report", "node", e.InvolvedObject.Name, "reason", e.Reason,
			"event", e.Namespace+"/"+e.Name, "age", age.Round(time.Second))
		return
	}
	ev := d.nodeEvent(rule, e, count, last)
	d.log.Info("node event", "node", e.InvolvedObject.Name, "reason", e.Reason, "source", eventSource(e),
		"count", count, "event_type", ev.Type, "event_id", ev.ID)
	d.out.push(ev)
}

// Why a Node Event whose reason a rule names is ignored: the values of the
// reason attribute of the healer_nodeproblem_events_ignored metric.
const (
	// IgnoredNotANode: the Event's involved object is not a core Node
	// (another kind or API group, a namespace, no name).
	IgnoredNotANode = "not_a_node"
	// IgnoredNamespace: the Event is not in one of Config.Namespaces.
	IgnoredNamespace = "namespace"
	// IgnoredSource: its source is not one of Config.Sources.
	IgnoredSource = "source"
)

// untrusted says why e is not an Event node-problem-detector could have
// posted about a Node (one of the Ignored reasons), or "" when it could.
func (d *Detector) untrusted(e *corev1.Event) string {
	o := e.InvolvedObject
	switch {
	case o.Kind != "Node" || (o.APIVersion != "" && o.APIVersion != "v1") || o.Namespace != "" || o.Name == "":
		return IgnoredNotANode
	case !slices.Contains(d.cfg.Namespaces, e.Namespace):
		return IgnoredNamespace
	case !slices.Contains(d.cfg.Sources, eventSource(e)):
		return IgnoredSource
	}
	return ""
}

// ignored is the counter of Events ignored for why.
func (d *Detector) ignored(why string) *atomic.Int64 {
	switch why {
	case IgnoredNotANode:
		return &d.ignoredNotANode
	case IgnoredNamespace:
		return &d.ignoredNamespace
	default:
		return &d.ignoredSource
	}
}

// ignoredCounts returns the counters of ignored Events by why.
func (d *Detector) ignoredCounts() map[string]int64 {
	return map[string]int64{
		IgnoredNotANode:  d.ignoredNotANode.Load(),
		IgnoredNamespace: d.ignoredNamespace.Load(),
		IgnoredSource:    d.ignoredSource.Load(),
	}
}

// eventRule returns the first rule matching e, or nil.
func (d *Detector) eventRule(e *corev1.Event) *EventRule {
	source := eventSource(e)
	for _, r := range d.events[e.Reason] {
		if len(r.Sources) == 0 || slices.Contains(r.Sources, source) {
			return r
		}
	}
	return nil
}

// eventData is the data of a Node Event's event.
type eventData struct {
	Node           string    `json:"node"`
	Reason         string    `json:"reason"`
	Message        string    `json:"message,omitempty"`
	Source         string    `json:"source,omitempty"`
	Type           string    `json:"type,omitempty"`
	Count          int32     `json:"count"`
	FirstTimestamp time.Time `json:"firstTimestamp,omitzero"`
	LastTimestamp  time.Time `json:"lastTimestamp"`
	// Event names the Kubernetes Event, namespace/name.
	Event string `json:"event"`
}

func (d *Detector) nodeEvent(rule *EventRule, e *corev1.Event, count int32, last time.Time) *bus.Event {
	node := e.InvolvedObject.Name
	data := eventData{
		Node:          node,
		Reason:        e.Reason,
		Message:       e.Message,
		Source:        eventSource(e),
		Type:          e.Type,
		Count:         count,
		LastTimestamp: last.UTC(),
		Event:         e.Namespace + "/" + e.Name,
	}
	if !e.FirstTimestamp.IsZero() {
		data.FirstTimestamp = e.FirstTimestamp.UTC()
	}
	raw, err := json.Marshal(data)
	if err != nil {
		// Only strings, numbers and times: cannot fail.
		d.log.Error("encode node event data", "node", node, "reason", e.Reason, "err", err)
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              NodeEventID(e.UID, count),
		Source:          Source,
		Type:            rule.EventType,
		Subject:         "node/" + node,
		Time:            last.UTC(),
		DataContentType: "application/json",
		Status:          bus.StatusFiring,
		Key:             EventKey(node, e.Reason),
		Data:            raw,
	}
}

// EventKey is the key of the events made from one Event reason on one
// node, for example "worker-3/TaskHung".
func EventKey(node, reason string) string { return node + "/" + reason }

// NodeEventID is the id of the event for one occurrence of a Kubernetes
// Event: its uid and its count, so the same occurrence seen again gets the
// same id and the next occurrence a new one.
func NodeEventID(uid types.UID, count int32) string {
	h := sha256.New()
	h.Write([]byte("event"))
	h.Write([]byte{0})
	h.Write([]byte(uid))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(int64(count), 10)))
	return "np-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// eventSource is the component that reported e: source.component for
// core/v1 Events (node-problem-detector's "kernel-monitor"), else the
// events.k8s.io reportingController.
func eventSource(e *corev1.Event) string {
	if e.Source.Component != "" {
		return e.Source.Component
	}
	return e.ReportingController
}

// eventCount is how often e has happened.
func eventCount(e *corev1.Event) int32 {
	switch {
	case e.Count > 0:
		return e.Count
	case e.Series != nil && e.Series.Count > 0:
		return e.Series.Count
	default:
		return 1
	}
}

// lastSeen is when e last happened.
func lastSeen(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	default:
		return e.CreationTimestamp.Time
	}
}

package nodeproblem

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/selfheal/healer/bus"
)

// problem is a watched condition that holds on a node. It counts (and its
// firing event is emitted) once it has held for its rule's For.
type problem struct {
	rule *ConditionRule
	// cond is the condition as last seen.
	cond nodeCondition
	// since is when the condition started to hold: its lastTransitionTime,
	// or when it was first seen if the condition has none.
	since time.Time
	// labels are the node's kept labels, for the event data.
	labels []string
	// timer fires when the condition starts to count; gen tells a timer
	// that was replaced from the current one.
	timer *time.Timer
	gen   int
	fired bool
}

// Condition states that are not condition statuses, for the resolved event
// of a problem whose condition is gone.
const (
	statusAbsent      = "Absent"
	statusNodeDeleted = "NodeDeleted"
)

// onNode handles a Node seen for the first time (old == nil) or changed.
func (d *Detector) onNode(old, n *nodeInfo) {
	d.nodeUpdates.Add(1)
	if old == nil {
		d.nodes.Add(1)
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	if old != nil && old.UID != n.UID {
		// Deleted and created again between two observations (a relist
		// after a long disconnection): the old node's problems are over.
		d.nodeGoneLocked(old.Name, now)
		old = nil
	}
	// The problems node.cordon holds the node for (perhaps fired by an
	// earlier run or another replica).
	var held []string
	if v := n.Annotations[AnnotationProblems]; v != "" {
		held = strings.Split(v, ",")
	}
	byType := d.problems[n.Name]
	for i := range d.cfg.Conditions {
		rule := &d.cfg.Conditions[i]
		t := corev1.NodeConditionType(rule.Type)
		c := n.condition(t)
		holding := c != nil && slices.Contains(rule.Statuses, string(c.Status))
		p := byType[t]
		healerHolds := len(held) > 0 && slices.Contains(held, bus.ProblemID(Source, ConditionKey(n.Name, rule.Type)))
		switch {
		case holding && p == nil:
			p = &problem{rule: rule, cond: *c, since: sinceOf(c, now), labels: n.labels}
			if byType == nil {
				byType = map[corev1.NodeConditionType]*problem{}
				d.problems[n.Name] = byType
			}
			byType[t] = p
			d.scheduleLocked(n.Name, p, now)
		case holding:
			prev := p.cond
			p.cond, p.labels = *c, n.labels
			// Same status with a new transition time: it cleared and came
			// back between two observations, so a hold that did not count
			// yet starts again. A change between holding statuses (Ready
			// False to Unknown) continues the hold.
			if !p.fired && c.Status == prev.Status && !c.LastTransitionTime.Equal(&prev.LastTransitionTime) {
				p.since = sinceOf(c, now)
				d.scheduleLocked(n.Name, p, now)
			}
		case p != nil:
			if p.timer != nil {
				p.timer.Stop()
			}
			delete(byType, t)
			if p.fired || healerHolds {
				d.resolveLocked(n.Name, n.labels, p, c, false, now)
			}
		case c != nil && healerHolds && transitioned(old, c):
			// Not seen holding by this detector, but healer holds the
			// node cordoned for this condition: it may have cleared while
			// healer was down, or between two observations. A node held
			// for other problems (an alert, another condition) gets no
			// resolved event for this one.
			d.resolveLocked(n.Name, n.labels, &problem{rule: rule}, c, false, now)
		}
	}
	if byType != nil && len(byType) == 0 {
		delete(d.problems, n.Name)
	}
}

// onNodeDeleted ends the problems of a deleted Node. obj is a *nodeInfo,
// or a cache.DeletedFinalStateUnknown when the deletion was noticed on a
// relist.
func (d *Detector) onNodeDeleted(obj any) {
	name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		d.log.Error("node informer delivered an unexpected deletion", "type", fmt.Sprintf("%T", obj), "err", err)
		return
	}
	d.nodeUpdates.Add(1)
	d.nodes.Add(-1)
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped {
		d.nodeGoneLocked(name, now)
	}
}

// nodeGoneLocked cancels the timers of a node's problems and emits resolved
// events for those that counted.
func (d *Detector) nodeGoneLocked(node string, now time.Time) {
	for t, p := range d.problems[node] {
		if p.timer != nil {
			p.timer.Stop()
		}
		if p.fired {
			d.resolveLocked(node, p.labels, p, nil, true, now)
		}
		delete(d.problems[node], t)
	}
	delete(d.problems, node)
}

// scheduleLocked fires p now if it has held for its rule's For, else arms
// (or re-arms) its timer for the moment it will have.
func (d *Detector) scheduleLocked(node string, p *problem, now time.Time) {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.gen++
	wait := p.since.Add(p.rule.For).Sub(now)
	if wait <= 0 {
		d.fireLocked(node, p, now)
		return
	}
	gen := p.gen
	p.timer = time.AfterFunc(wait, func() { d.onDue(node, p, gen) })
	d.log.Debug("condition holds; it counts after its grace period", "node", node,
		"condition", p.rule.Type, "status", p.cond.Status, "counts_in", wait.Round(time.Millisecond))
}

// onDue runs when a problem's For has passed.
func (d *Detector) onDue(node string, p *problem, gen int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || p.fired || p.gen != gen || d.problems[node][corev1.NodeConditionType(p.rule.Type)] != p {
		return
	}
	d.fireLocked(node, p, d.now())
}

// fireLocked emits the firing event of a problem that now counts.
func (d *Detector) fireLocked(node string, p *problem, now time.Time) {
	p.fired = true
	p.timer = nil
	e := d.conditionEvent(node, p.labels, p, &p.cond, bus.StatusFiring, false, now)
	d.log.Info("node problem", "node", node, "condition", p.rule.Type, "status", p.cond.Status,
		"reason", p.cond.Reason, "event_type", e.Type, "event_id", e.ID)
	d.out.push(e)
}

// resolveLocked emits the resolved event of a problem. c is the condition
// as it is now, or nil when it is gone from the node; nodeDeleted says the
// whole node is gone.
func (d *Detector) resolveLocked(node string, labels []string, p *problem, c *nodeCondition, nodeDeleted bool, now time.Time) {
	e := d.conditionEvent(node, labels, p, c, bus.StatusResolved, nodeDeleted, now)
	d.log.Info("node problem cleared", "node", node, "condition", p.rule.Type, "event_type", e.Type,
		"event_id", e.ID, "had_fired", p.fired)
	d.out.push(e)
}

// conditionData is the data of a condition event.
type conditionData struct {
	Node      string            `json:"node"`
	Labels    map[string]string `json:"labels,omitempty"`
	Condition conditionInfo     `json:"condition"`
	Rule      ruleInfo          `json:"rule"`
	// HeldFor is how long the condition had held: until now for a firing
	// event, until it cleared for a resolved one (Go duration syntax).
	HeldFor string `json:"heldFor,omitempty"`
	// NodeDeleted is set on the resolved event of a deleted node's problem.
	NodeDeleted bool `json:"nodeDeleted,omitempty"`
}

type conditionInfo struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime,omitzero"`
}

type ruleInfo struct {
	Type      string   `json:"type"`
	Statuses  []string `json:"statuses"`
	For       string   `json:"for"`
	EventType string   `json:"eventType"`
}

// conditionEvent builds the event for a problem firing, or resolved with
// the condition now c (nil: gone from the node, or the node is deleted).
func (d *Detector) conditionEvent(node string, labels []string, p *problem, c *nodeCondition,
	status string, nodeDeleted bool, now time.Time) *bus.Event {
	rule := p.rule
	data := conditionData{
		Node:   node,
		Labels: (&nodeInfo{labels: labels}).labelMap(),
		Rule:   ruleInfo{Type: rule.Type, Statuses: rule.Statuses, For: rule.For.String(), EventType: rule.EventType},
	}
	var (
		condStatus string
		transition time.Time
		at         time.Time
	)
	switch {
	case status == bus.StatusFiring:
		condStatus, transition = string(c.Status), c.LastTransitionTime.Time
		at = p.since.Add(rule.For)
		data.HeldFor = now.Sub(p.since).Round(time.Second).String()
	case c != nil:
		condStatus, transition = string(c.Status), c.LastTransitionTime.Time
		at = transition
		if at.IsZero() {
			at = now
		}
		if !p.since.IsZero() {
			data.HeldFor = at.Sub(p.since).Round(time.Second).String()
		}
	default:
		// The condition or the node is gone: no transition time to go by,
		// so the id is made from when the problem started.
		condStatus, transition, at = statusAbsent, p.since, now
		if nodeDeleted {
			condStatus = statusNodeDeleted
			data.NodeDeleted = true
		}
		data.HeldFor = now.Sub(p.since).Round(time.Second).String()
		c = &nodeCondition{Type: corev1.NodeConditionType(rule.Type), Status: corev1.ConditionStatus(condStatus)}
	}
	data.Condition = conditionInfo{
		Type:    string(c.Type),
		Status:  string(c.Status),
		Reason:  c.Reason,
		Message: c.Message,
	}
	if !c.LastTransitionTime.IsZero() {
		data.Condition.LastTransitionTime = c.LastTransitionTime.UTC()
	}
	raw, err := json.Marshal(data)
	if err != nil {
		// Only strings, times and a map of strings: cannot fail.
		d.log.Error("encode condition event data", "node", node, "condition", rule.Type, "err", err)
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              ConditionEventID(node, rule.Type, condStatus, transition, status),
		Source:          Source,
		Type:            rule.EventType,
		Subject:         "node/" + node,
		Time:            at.UTC(),
		DataContentType: "application/json",
		Status:          status,
		Key:             ConditionKey(node, rule.Type),
		Data:            raw,
	}
}

// ConditionKey is the key of the events of one condition type on one node:
// its firing and resolved events, across restarts, share it.
func ConditionKey(node, conditionType string) string { return node + "/" + conditionType }

// ConditionEventID is the id of the event for one state of a node
// condition: the node, the condition type, its status and lastTransitionTime
// (to the second, the precision the API keeps), and the event status. The
// same state seen again (an informer resync, a relist, a restarted or second
// replica) gets the same id, so JetStream stores it once.
func ConditionEventID(node, conditionType, conditionStatus string, lastTransition time.Time, status string) string {
	h := sha256.New()
	for _, s := range []string{node, conditionType, conditionStatus, strconv.FormatInt(lastTransition.Unix(), 10), status} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "np-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// sinceOf is when condition c started to hold.
func sinceOf(c *nodeCondition, now time.Time) time.Time {
	if c.LastTransitionTime.IsZero() {
		return now
	}
	return c.LastTransitionTime.Time
}

// transitioned reports whether condition c is new or changed since old.
func transitioned(old *nodeInfo, c *nodeCondition) bool {
	oc := old.condition(c.Type)
	return oc == nil || oc.Status != c.Status || !oc.LastTransitionTime.Equal(&c.LastTransitionTime)
}

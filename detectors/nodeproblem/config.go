package nodeproblem

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultSources returns the components node-problem-detector reports
// Node Events as: its kernel and system log monitors, its ABRT adaptor and
// its custom plugin monitor.
func DefaultSources() []string {
	return []string{"kernel-monitor", "system-log-monitor", "abrt-adaptor", "custom-plugin-monitor"}
}

// Config says which Node conditions and Node Events are problems, and which
// event type each becomes.
type Config struct {
	// Conditions are the Node conditions to watch, at most one rule per
	// condition type. Nil means the defaults (see ApplyDefaults); an empty
	// list watches no conditions.
	Conditions []ConditionRule `json:"conditions"`
	// Events are the Node Events to report. They are tried in order and the
	// first rule that matches an Event wins. Nil means the defaults; an
	// empty list watches no Events.
	Events []EventRule `json:"events"`
	// Sources are the components whose Node Events are believed:
	// source.component, or reportingController for events.k8s.io Events.
	// Anyone allowed to create Events can write any source, so this is
	// no proof, but an Event from a component not listed here is ignored
	// whatever the rules say, and counted. Nil means
	// node-problem-detector's monitors (DefaultSources).
	Sources []string `json:"sources"`
	// Namespaces are the namespaces whose Node Events are watched at all.
	// node-problem-detector, like the kubelet, posts its Node Events in
	// "default", the namespace Events about cluster-scoped objects go to;
	// Events about Nodes elsewhere were written by someone else. Nil means
	// ["default"].
	Namespaces []string `json:"namespaces"`
	// Labels are the Node labels kept in the detector's cache and copied
	// into every event's data, so policies can tell a control-plane node
	// or a zone apart. An entry ending in "/" is a prefix: every label
	// starting with it is kept. Nil means the defaults; an empty list keeps
	// none.
	Labels []string `json:"labels"`
	// MaxEventAge is how old a Node Event's latest occurrence may be for
	// it to be reported. Older Events seen when the detector starts were
	// reported before it restarted, or are too stale to act on.
	MaxEventAge time.Duration `json:"maxEventAge"`
	// PublishTimeout bounds one attempt to have a batch of events
	// acknowledged by JetStream; failed attempts are retried.
	PublishTimeout time.Duration `json:"publishTimeout"`
}

// ConditionRule makes a Node condition a problem.
type ConditionRule struct {
	// Type is the condition type, for example "KernelDeadlock".
	Type string `json:"type"`
	// Statuses are the condition statuses that make it hold. Default
	// ["True"].
	Statuses []string `json:"statuses"`
	// For is how long the condition must have held, measured from its
	// lastTransitionTime, before it counts as a problem. A condition that
	// stops holding earlier produces no event at all. Default 0.
	For time.Duration `json:"for"`
	// EventType is the type of the events emitted. Default "Node"+Type.
	EventType string `json:"eventType"`
}

// EventRule makes a Node Event a problem. Events have no end, so only
// firing events are emitted for them.
type EventRule struct {
	// Reason is the Event's reason, for example "TaskHung".
	Reason string `json:"reason"`
	// Sources, when not empty, narrow Config.Sources for this rule: the
	// reporting components accepted (source.component, or
	// reportingController for events.k8s.io Events), for example
	// "kernel-monitor". Empty accepts every source of Config.Sources.
	Sources []string `json:"sources"`
	// EventType is the type of the events emitted. Default "Node"+Reason.
	EventType string `json:"eventType"`
}

// ApplyDefaults fills zero fields. The default conditions are the six that
// node-problem-detector sets (KernelDeadlock, ReadonlyFilesystem,
// FrequentKubeletRestart, FrequentDockerRestart, FrequentContainerdRestart,
// CorruptDockerOverlay2), each holding when True and counting at once, plus
// Ready holding when False or Unknown for 2 minutes (event type
// NodeNotReady). The default Events are TaskHung, OOMKilling and KernelOops
// from any of the DefaultSources, watched in the "default" namespace. Rules
// get Statuses ["True"] and EventType "Node"+Type (or "Node"+Reason) when
// they leave them empty.
func (c *Config) ApplyDefaults() {
	if c.Conditions == nil {
		// The condition types node-problem-detector sets with its
		// default configuration.
		for _, t := range []string{
			"KernelDeadlock", "ReadonlyFilesystem", "FrequentKubeletRestart",
			"FrequentDockerRestart", "FrequentContainerdRestart", "CorruptDockerOverlay2",
		} {
			c.Conditions = append(c.Conditions, ConditionRule{Type: t})
		}
		c.Conditions = append(c.Conditions, ConditionRule{
			Type: "Ready", Statuses: []string{"False", "Unknown"}, For: 2 * time.Minute, EventType: "NodeNotReady",
		})
	}
	for i := range c.Conditions {
		r := &c.Conditions[i]
		if len(r.Statuses) == 0 {
			r.Statuses = []string{"True"}
		}
		if r.EventType == "" && r.Type != "" {
			r.EventType = "Node" + r.Type
		}
	}
	if c.Events == nil {
		// The Event reasons node-problem-detector's kernel monitor reports.
		for _, reason := range []string{"TaskHung", "OOMKilling", "KernelOops"} {
			c.Events = append(c.Events, EventRule{Reason: reason})
		}
	}
	for i := range c.Events {
		r := &c.Events[i]
		if r.EventType == "" && r.Reason != "" {
			r.EventType = "Node" + r.Reason
		}
	}
	if c.Sources == nil {
		c.Sources = DefaultSources()
	}
	if c.Namespaces == nil {
		c.Namespaces = []string{metav1.NamespaceDefault}
	}
	if c.Labels == nil {
		c.Labels = []string{"node-role.kubernetes.io/", "topology.kubernetes.io/zone"}
	}
	if c.MaxEventAge == 0 {
		c.MaxEventAge = 10 * time.Minute
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
}

// Validate reports every rule that could not work.
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, r := range c.Conditions {
		where := fmt.Sprintf("nodeproblem: conditions[%d]", i)
		if r.Type == "" {
			errs = append(errs, fmt.Errorf("%s: type is required", where))
		} else if seen[r.Type] {
			errs = append(errs, fmt.Errorf("%s: a second rule for condition %s (one rule per condition type)", where, r.Type))
		}
		seen[r.Type] = true
		if len(r.Statuses) == 0 {
			errs = append(errs, fmt.Errorf("%s (%s): statuses: at least one is required", where, r.Type))
		}
		for _, s := range r.Statuses {
			if s != "True" && s != "False" && s != "Unknown" {
				errs = append(errs, fmt.Errorf("%s (%s): status %q: must be True, False or Unknown", where, r.Type, s))
			}
		}
		if r.For < 0 {
			errs = append(errs, fmt.Errorf("%s (%s): for %s: must not be negative", where, r.Type, r.For))
		}
		if r.EventType == "" {
			errs = append(errs, fmt.Errorf("%s (%s): eventType is required", where, r.Type))
		}
	}
	for i, r := range c.Events {
		where := fmt.Sprintf("nodeproblem: events[%d]", i)
		if r.Reason == "" {
			errs = append(errs, fmt.Errorf("%s: reason is required", where))
		}
		if r.EventType == "" {
			errs = append(errs, fmt.Errorf("%s (%s): eventType is required", where, r.Reason))
		}
		for _, s := range r.Sources {
			if strings.TrimSpace(s) == "" {
				errs = append(errs, fmt.Errorf("%s (%s): sources: empty source name", where, r.Reason))
			} else if !slices.Contains(c.Sources, s) {
				errs = append(errs, fmt.Errorf("%s (%s): source %q is not one of nodeproblem sources %v, so the rule could never match it", where, r.Reason, s, c.Sources))
			}
		}
	}
	if len(c.Events) > 0 {
		if len(c.Sources) == 0 {
			errs = append(errs, errors.New("nodeproblem: sources: at least one is required to believe any Node Event"))
		}
		if len(c.Namespaces) == 0 {
			errs = append(errs, errors.New("nodeproblem: namespaces: at least one is required to watch Node Events"))
		}
	}
	for i, s := range c.Sources {
		if strings.TrimSpace(s) == "" {
			errs = append(errs, fmt.Errorf("nodeproblem: sources[%d]: empty source name", i))
		}
	}
	for i, ns := range c.Namespaces {
		if msgs := validation.ValidateNamespaceName(ns, false); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("nodeproblem: namespaces[%d] %q: %s", i, ns, strings.Join(msgs, "; ")))
		} else if slices.Contains(c.Namespaces[:i], ns) {
			errs = append(errs, fmt.Errorf("nodeproblem: namespaces[%d] %q: listed twice", i, ns))
		}
	}
	for i, l := range c.Labels {
		if l == "" || l == "/" {
			errs = append(errs, fmt.Errorf("nodeproblem: labels[%d]: %q is neither a label key nor a prefix", i, l))
		}
	}
	if c.MaxEventAge <= 0 {
		errs = append(errs, fmt.Errorf("nodeproblem: maxEventAge %s: must be positive", c.MaxEventAge))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("nodeproblem: publishTimeout %s: must be positive", c.PublishTimeout))
	}
	return errors.Join(errs...)
}

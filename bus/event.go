package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SpecVersion is the CloudEvents specification version healer speaks.
const SpecVersion = "1.0"

// Status values carried in the event's "status" extension attribute.
const (
	// StatusFiring marks an event that reports a problem.
	StatusFiring = "firing"
	// StatusResolved marks an event that reports the problem has cleared.
	// A resolved event may trigger an undo step but never a new remediation.
	StatusResolved = "resolved"
)

// Event is a detector's report of a fault (or of its recovery), with
// CloudEvents 1.0 attribute names. Subject names the target, for example
// "node/worker-3", "etcd/member-2" or "vip/10.10.0.100".
type Event struct {
	SpecVersion string    `json:"specversion"`
	ID          string    `json:"id"`
	Source      string    `json:"source"`
	Type        string    `json:"type"`
	Subject     string    `json:"subject"`
	Time        time.Time `json:"time"`
	// DataContentType is always application/json when Data is set.
	DataContentType string `json:"datacontenttype,omitempty"`
	// Status is an extension attribute: StatusFiring or StatusResolved.
	Status string `json:"status"`
	// Key is an extension attribute naming the problem instance (for an
	// alert, its fingerprint). The firing and the resolved event of one
	// problem share a key, so the latest state of a problem can be looked up.
	Key string `json:"key"`
	// Trigger is an extension attribute set on an event healer made
	// itself to look at a problem again: TriggerRedrive when a hold that
	// kept it back has cleared, TriggerResync when a detector re-asserts
	// what it still sees. Empty on a detector's news.
	Trigger string `json:"trigger,omitempty"`
	// Origin is an extension attribute of a re-driven or re-asserted
	// event: the id of the detector's event it repeats.
	Origin string          `json:"origin,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// Triggers of the events healer makes itself (Event.Trigger).
const (
	// TriggerRedrive is a problem's latest event published again because
	// what held it back (a budget slot, a rate window, a pause, a
	// breaker) has cleared.
	TriggerRedrive = "redrive"
	// TriggerResync is a detector's periodic re-assertion of a problem it
	// still sees.
	TriggerResync = "resync"
)

// Repeat returns a copy of e as trigger makes it again, with the id id.
// Its origin is e's origin, or e itself when e is a detector's news.
func (e *Event) Repeat(trigger, id string) *Event {
	c := *e
	c.ID, c.Trigger = id, trigger
	if c.Origin == "" {
		c.Origin = e.ID
	}
	return &c
}

// OriginID is the id of the detector's event e is or repeats.
func (e *Event) OriginID() string {
	if e.Origin != "" {
		return e.Origin
	}
	return e.ID
}

// Validate reports whether e has everything the engine relies on.
func (e *Event) Validate() error {
	var missing []string
	if e.SpecVersion != SpecVersion {
		return fmt.Errorf("event %q: specversion %q, want %q", e.ID, e.SpecVersion, SpecVersion)
	}
	for _, f := range []struct{ name, v string }{
		{"id", e.ID}, {"source", e.Source}, {"type", e.Type}, {"subject", e.Subject}, {"key", e.Key},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("event %q: missing %s", e.ID, strings.Join(missing, ", "))
	}
	if e.Status != StatusFiring && e.Status != StatusResolved {
		return fmt.Errorf("event %q: status %q, want %q or %q", e.ID, e.Status, StatusFiring, StatusResolved)
	}
	switch e.Trigger {
	case "", TriggerRedrive, TriggerResync:
	default:
		return fmt.Errorf("event %q: trigger %q, want none, %q or %q", e.ID, e.Trigger, TriggerRedrive, TriggerResync)
	}
	if e.Time.IsZero() {
		return fmt.Errorf("event %q: missing time", e.ID)
	}
	if y := e.Time.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("event %q: time %s outside years 1 to 9999", e.ID, e.Time)
	}
	return nil
}

// ProblemID names the problem instance an event reports: the same for its
// firing and its resolved events, across restarts. node.cordon keeps the
// ids of the problems that hold a node in the node's annotations, so a
// detector can tell whether healer holds a node for a given problem.
func ProblemID(source, key string) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// ProblemID is the id of the problem instance e reports.
func (e *Event) ProblemID() string { return ProblemID(e.Source, e.Key) }

// Resolved reports whether the event says the problem has cleared.
func (e *Event) Resolved() bool { return e.Status == StatusResolved }

// TargetKind returns the part of Subject before the first slash ("node" for
// "node/worker-3"), or "" when Subject has no kind.
func (e *Event) TargetKind() string {
	kind, _, ok := strings.Cut(e.Subject, "/")
	if !ok {
		return ""
	}
	return kind
}

// TargetName returns the part of Subject after the first slash.
func (e *Event) TargetName() string {
	_, name, _ := strings.Cut(e.Subject, "/")
	return name
}

// ErrBadEvent is returned for a message on the events stream that is not a
// valid event. Such messages are audited and terminated, never retried.
var ErrBadEvent = errors.New("bad event")

// DecodeEvent parses and validates an event from its JSON form.
func DecodeEvent(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	return &e, nil
}

// EventSubject is the NATS subject a detector's event is published on:
// healer.events.<source>.<key-token>. All of one problem instance's news
// shares it, so the last message on the subject is the problem's latest
// state.
func EventSubject(source, key string) string {
	return SubjectEvents + "." + token(source) + "." + token(key)
}

// NATSSubject is the NATS subject e is published on: EventSubject for a
// detector's news, and one token more (the trigger) for an event healer
// made itself, so that a re-driven or re-asserted copy never stands in
// for the problem's latest state.
func (e *Event) NATSSubject() string {
	s := EventSubject(e.Source, e.Key)
	if e.Trigger != "" {
		s += "." + e.Trigger
	}
	return s
}

// ProblemSubject returns the subject of the problem's news for the subject
// an event came on (the same, or without its trigger token).
func ProblemSubject(subject string) string {
	if n := strings.Count(subject, "."); n > 3 {
		i := strings.LastIndexByte(subject, '.')
		return subject[:i]
	}
	return subject
}

// token turns s into a single NATS subject token. Tokens that are already
// safe are kept readable; anything else is replaced by a short hash.
func token(s string) string {
	if s == "" {
		return "_"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		safe := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !safe {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:12])
		}
	}
	return s
}

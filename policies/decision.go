package policies

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Approval values a decision may ask for.
const (
	// ApprovalNone lets the engine act without asking anyone.
	ApprovalNone = "none"
	// ApprovalOne makes the engine wait for one human approval.
	ApprovalOne = "one"
	// ApprovalTwo makes the engine wait for two approvals by different people.
	ApprovalTwo = "two"
)

// NoRuleMatched is the reason of the decision returned when the policy does
// not define data.healer.decision for an input.
const NoRuleMatched = "no policy rule matched"

// Decision is what a policy decides for one event. A Decision without a
// Remediator means "do nothing"; its Reason says why and is audited too.
type Decision struct {
	// Remediator names the remediator to run, for example "node.cordon".
	Remediator string `json:"remediator,omitempty"`
	// Params are passed to the remediator. Numbers are float64, as
	// encoding/json would decode them.
	Params map[string]any `json:"params,omitempty"`
	// Approval is ApprovalNone, ApprovalOne or ApprovalTwo.
	Approval string `json:"approval"`
	// RateLimit is the main rate limit of the action, if any.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// RateLimits are further rate limits, all of which must allow the action.
	RateLimits []RateLimit `json:"rate_limits,omitempty"`
	// DryRun asks the engine to audit what it would do without doing it.
	DryRun bool `json:"dry_run,omitempty"`
	// Reason explains the decision to humans. It is never empty.
	Reason string `json:"reason"`
	// Rule optionally names the policy rule that matched.
	Rule string `json:"rule,omitempty"`
	// Steps, when set, make the decision an escalation ladder: the engine
	// runs each step in order, waits up to its Wait for the problem to
	// clear, and moves to the next step if it has not. Remediator is then
	// the first step's remediator.
	Steps []Step `json:"steps,omitempty"`
}

// Step is one rung of an escalation ladder.
type Step struct {
	Remediator string         `json:"remediator"`
	Params     map[string]any `json:"params,omitempty"`
	// Wait is how long the problem may persist after this step before the
	// engine escalates to the next one (or, after the last, gives up).
	Wait time.Duration `json:"wait"`
	// Escalate says when the ladder moves past this step: EscalateUnlessCleared
	// (the default) when the step failed or the problem persists past Wait;
	// EscalateOnFailure only when the step failed, so a verified success
	// ends the ladder. The latter suits problems no detector reports as
	// cleared, such as a crash: the restart that verified healthy was the cure.
	Escalate string `json:"escalate,omitempty"`
}

// When a ladder escalates past a step.
const (
	EscalateUnlessCleared = "unless_cleared"
	EscalateOnFailure     = "on_failure"
)

// MarshalJSON writes Wait as a duration string, as policies write it.
func (s Step) MarshalJSON() ([]byte, error) {
	type plain struct {
		Remediator string         `json:"remediator"`
		Params     map[string]any `json:"params,omitempty"`
		Wait       string         `json:"wait"`
		Escalate   string         `json:"escalate,omitempty"`
	}
	b, err := json.Marshal(plain{Remediator: s.Remediator, Params: s.Params, Wait: FormatDuration(s.Wait), Escalate: s.Escalate})
	if err != nil {
		return nil, fmt.Errorf("step %s: %w", s.Remediator, err)
	}
	return b, nil
}

// Ladder returns the steps to run: Steps, or the one step the decision's
// remediator and params make.
func (d Decision) Ladder() []Step {
	if len(d.Steps) > 0 {
		return d.Steps
	}
	if d.Remediator == "" {
		return nil
	}
	return []Step{{Remediator: d.Remediator, Params: d.Params}}
}

// Limits returns all rate limits of d: RateLimit followed by RateLimits.
func (d Decision) Limits() []RateLimit {
	out := make([]RateLimit, 0, len(d.RateLimits)+1)
	if d.RateLimit != nil {
		out = append(out, *d.RateLimit)
	}
	return append(out, d.RateLimits...)
}

// Validate reports whether d fits the decision contract. An empty Approval
// is set to ApprovalNone; everything else is left as it is.
func (d *Decision) Validate() error {
	var errs []error
	switch d.Approval {
	case "":
		d.Approval = ApprovalNone
	case ApprovalNone, ApprovalOne, ApprovalTwo:
	default:
		errs = append(errs, fmt.Errorf("approval %q: want %q, %q or %q", d.Approval, ApprovalNone, ApprovalOne, ApprovalTwo))
	}
	if d.RateLimit != nil {
		if err := d.RateLimit.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rate_limit: %w", err))
		}
	}
	for i := range d.RateLimits {
		if err := d.RateLimits[i].Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rate_limits[%d]: %w", i, err))
		}
	}
	if strings.TrimSpace(d.Reason) == "" {
		errs = append(errs, errors.New("reason: missing"))
	}
	for i, st := range d.Steps {
		if st.Remediator == "" {
			errs = append(errs, fmt.Errorf("steps[%d]: remediator missing", i))
		}
		if st.Wait < 0 {
			errs = append(errs, fmt.Errorf("steps[%d]: wait %s is negative", i, st.Wait))
		}
		switch st.Escalate {
		case "", EscalateUnlessCleared, EscalateOnFailure:
		default:
			errs = append(errs, fmt.Errorf("steps[%d]: escalate %q: want %q or %q", i, st.Escalate, EscalateUnlessCleared, EscalateOnFailure))
		}
	}
	if len(d.Steps) > 0 {
		switch d.Remediator {
		case "":
			d.Remediator = d.Steps[0].Remediator
		case d.Steps[0].Remediator:
		default:
			errs = append(errs, fmt.Errorf("remediator %q differs from the first step's %q", d.Remediator, d.Steps[0].Remediator))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("decision (remediator %q): %w", d.Remediator, err)
	}
	return nil
}

// RateLimit allows at most Max actions per Per for one Key. In JSON, "per"
// is a duration string such as "10m" or "1h", or a number of seconds.
type RateLimit struct {
	Key string        `json:"key"`
	Max int           `json:"max"`
	Per time.Duration `json:"per"`
}

// Validate reports whether l is usable: a key, and positive max and per.
func (l RateLimit) Validate() error {
	var errs []error
	if l.Key == "" {
		errs = append(errs, errors.New("key: missing"))
	}
	if l.Max <= 0 {
		errs = append(errs, fmt.Errorf("max %d: want more than 0", l.Max))
	}
	if l.Per <= 0 {
		errs = append(errs, fmt.Errorf("per %s: want more than 0", l.Per))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rate limit %q: %w", l.Key, err)
	}
	return nil
}

// rateLimitJSON is the wire form of RateLimit.
type rateLimitJSON struct {
	Key string          `json:"key"`
	Max int             `json:"max"`
	Per json.RawMessage `json:"per"`
}

// MarshalJSON writes Per as a short duration string ("10m", "1h30m").
func (l RateLimit) MarshalJSON() ([]byte, error) {
	per, err := json.Marshal(FormatDuration(l.Per))
	if err != nil {
		return nil, fmt.Errorf("rate limit %q: %w", l.Key, err)
	}
	return json.Marshal(rateLimitJSON{Key: l.Key, Max: l.Max, Per: per})
}

// UnmarshalJSON reads Per as a duration string or a number of seconds.
// UnmarshalJSON reads Wait as a duration string or a number of seconds.
func (s *Step) UnmarshalJSON(b []byte) error {
	var w struct {
		Remediator string          `json:"remediator"`
		Params     map[string]any  `json:"params"`
		Wait       json.RawMessage `json:"wait"`
		Escalate   string          `json:"escalate"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("step: %w", err)
	}
	*s = Step{Remediator: w.Remediator, Params: w.Params, Escalate: w.Escalate}
	d, err := jsonDuration(w.Wait)
	if err != nil {
		return fmt.Errorf("step %s: wait: %w", w.Remediator, err)
	}
	s.Wait = d
	return nil
}

// jsonDuration reads a duration given as a string ("10m") or a number of
// seconds; absent is zero.
func jsonDuration(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return time.ParseDuration(s)
	}
	return secondsDuration(string(raw))
}

func (l *RateLimit) UnmarshalJSON(b []byte) error {
	var w rateLimitJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	*l = RateLimit{Key: w.Key, Max: w.Max}
	d, err := jsonDuration(w.Per)
	if err != nil {
		return fmt.Errorf("rate limit %q: per: %w", w.Key, err)
	}
	l.Per = d
	return nil
}

// secondsDuration parses a whole number of seconds.
func secondsDuration(s string) (time.Duration, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: want a duration string or a whole number of seconds", s)
	}
	if n > math.MaxInt64/int64(time.Second) || n < math.MinInt64/int64(time.Second) {
		return 0, fmt.Errorf("%s seconds: out of range", s)
	}
	return time.Duration(n) * time.Second, nil
}

// FormatDuration formats d the way policies write durations: "10m" rather
// than time.Duration's "10m0s".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

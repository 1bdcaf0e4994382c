package policies

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"github.com/selfheal/healer/bus"
)

// How a candidate policy's decision differs from the one recorded.
const (
	ChangeSame      = "same"
	ChangeMore      = "would act more"
	ChangeLess      = "would act less"
	ChangeDifferent = "would act differently"
	ChangeError     = "error"
)

// Recorded is an event as the audit trail holds it, with what the engine
// knew when it decided, and the decision it came to.
type Recorded struct {
	Event    *bus.Event
	Time     time.Time
	Budget   Budget
	Recent   []RecentAction
	Decision Decision
	Revision string
}

// Replayed is a recorded event decided again by a candidate policy.
type Replayed struct {
	EventID  string    `json:"event_id"`
	Target   string    `json:"target"`
	Type     string    `json:"type"`
	Status   string    `json:"status"`
	Time     time.Time `json:"time"`
	Then     Decision  `json:"then"`
	Revision string    `json:"then_policy_revision"`
	Now      Decision  `json:"now"`
	Change   string    `json:"change"`
	Error    string    `json:"error,omitempty"`
}

// Replay decides rec again with p, in the context it was first decided in
// (its time, the budget and the recent actions then), and compares.
func (p *Policy) Replay(ctx context.Context, rec Recorded) Replayed {
	out := Replayed{
		EventID: rec.Event.ID, Target: rec.Event.Subject, Type: rec.Event.Type, Status: rec.Event.Status,
		Time: rec.Time, Then: rec.Decision, Revision: rec.Revision,
	}
	d, err := p.Decide(ctx, &Input{Event: rec.Event, Context: Context{Now: rec.Time, Budget: rec.Budget, RecentActions: rec.Recent}})
	if err == nil {
		err = d.Validate()
	}
	if err != nil {
		out.Change, out.Error = ChangeError, err.Error()
		return out
	}
	out.Now, out.Change = d, Compare(rec.Decision, d)
	return out
}

// acts reports whether a decision makes healer act.
func acts(d Decision) bool { return d.Remediator != "" && !d.DryRun }

// Compare says how decision now differs from decision then in what healer
// would do: acting where it did not, not acting where it did, or acting
// otherwise (another remediator, other params, approval, ladder or rate
// limits). Wording alone (reason, rule) is the same.
func Compare(then, now Decision) string {
	switch {
	case !acts(then) && !acts(now):
		return ChangeSame
	case !acts(then):
		return ChangeMore
	case !acts(now):
		return ChangeLess
	}
	if then.Approval == "" {
		then.Approval = ApprovalNone
	}
	if now.Approval == "" {
		now.Approval = ApprovalNone
	}
	if then.Remediator != now.Remediator || then.Approval != now.Approval ||
		!sameJSON(then.Params, now.Params) || !sameJSON(then.Ladder(), now.Ladder()) || !sameJSON(then.Limits(), now.Limits()) {
		return ChangeDifferent
	}
	return ChangeSame
}

// sameJSON compares two values as their JSON forms decode, so that a
// recorded decision (decoded from JSON) equals a fresh one.
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	if errA != nil || errB != nil {
		return false
	}
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}

// ReplaySummary counts replayed events by change.
type ReplaySummary struct {
	Events    int `json:"events"`
	Same      int `json:"same"`
	More      int `json:"would_act_more"`
	Less      int `json:"would_act_less"`
	Different int `json:"would_act_differently"`
	Errors    int `json:"errors"`
}

// Add counts r.
func (s *ReplaySummary) Add(r Replayed) {
	s.Events++
	switch r.Change {
	case ChangeSame:
		s.Same++
	case ChangeMore:
		s.More++
	case ChangeLess:
		s.Less++
	case ChangeDifferent:
		s.Different++
	default:
		s.Errors++
	}
}

package engine

import (
	"context"
	"fmt"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
)

// dedupe audits an event the first time it is seen and settles
// duplicates: of the event (its id), and of its problem (an open problem's
// news while an action for it is open, a re-drive or a re-assertion that
// changes nothing).
func (e dedupeStage) run(ctx context.Context, r *run) (bool, error) {
	r.problemKey = problemKey(r.ev.Subject, r.ev.ProblemID())
	p, _, err := e.problems.get(ctx, r.problemKey)
	if err != nil {
		return false, err
	}
	r.problem = p
	if r.ev.Trigger != "" {
		counts, err := e.triggerCounts(ctx, r)
		if err != nil {
			return false, err
		}
		if !counts {
			r.quiet = true
			return true, nil
		}
	}
	st, _, err := getJSON[eventState](ctx, e.Streams.Actions, eventKey(r.ev.ID))
	if err != nil {
		return false, err
	}
	if st != nil {
		r.decided = st.Decision
	}
	if st != nil && st.State == outcomeDone {
		r.unchanged = true
		return true, e.suppress(ctx, r, outcomeDone, "duplicate event: already handled", "handled_at", st.Time)
	}
	if st == nil {
		// The first time: the event's record goes to the trail with the
		// next ones, and its state is written after it (flush).
		r.fresh, r.stateDue = true, true
		e.Metrics.Event(ctx, r.ev.Source, r.ev.Type)
		e.auditLater(ctx, r, audit.KindEvent, audit.DetailsOf(r.ev))
	}
	if p == nil || p.EventID == r.ev.ID || r.ev.Trigger != "" {
		return false, nil
	}
	// News of a problem that is open already.
	switch {
	case !r.ev.Resolved() && p.Status == bus.StatusFiring && p.Phase == PhaseActing && p.ActingEvent != r.ev.ID:
		// Another event's action is open (on another replica: this one
		// handles a problem's events in order). News of an acted problem
		// is decided again, as a new fault of it may need a new action
		// (a second panic); its remediator's re-check says whether.
		r.unchanged = true
		return true, e.suppress(ctx, r, outcomeDone, fmt.Sprintf("problem already handled: %s action %s; it stays open until the problem clears", p.Remediator, p.ActionID),
			"problem_phase", p.Phase)
	case !r.ev.Resolved() && p.Status == bus.StatusResolved && p.Acted:
		r.reopened = true
		return true, e.suppress(ctx, r, outcomeDone, fmt.Sprintf("the problem came back before the undo owed for %s action %s ran: the target stays as that action left it", p.Remediator, p.ActionID))
	case r.ev.Resolved() && p.Phase == PhaseHeld && !p.Acted && p.Hold != nil:
		r.closing = true
		e.auditLater(ctx, r, audit.KindProblemClosed, audit.Details(
			"reason", "the problem cleared while held back; nothing was done for it",
			"held_by", p.Hold.Kind, "held_since", p.Hold.Since, "hold", p.Hold.Reason, "problem", r.ev.ProblemID()))
		return true, nil
	}
	return false, nil
}

// triggerCounts reports whether a re-drive or a re-assertion is to be
// handled: a re-drive when its problem is still held back as it was; a
// re-assertion when its problem is held back by something that has
// cleared, or when it has no record and its news was never settled
// (something lost it). A problem settled without an action keeps no
// record: its news's outcome says it was handled.
func (e dedupeStage) triggerCounts(ctx context.Context, r *run) (bool, error) {
	p := r.problem
	switch {
	case p == nil && r.ev.Trigger == bus.TriggerResync:
		st, _, err := getJSON[eventState](ctx, e.Streams.Actions, eventKey(r.ev.OriginID()))
		return st == nil, err
	case p == nil:
		return false, nil
	case p.Phase != PhaseHeld || p.Hold == nil || p.Status != r.ev.Status:
		return false, nil
	case r.ev.Trigger == bus.TriggerRedrive:
		return true, nil
	default:
		return e.holdCleared(p, e.now()), nil
	}
}

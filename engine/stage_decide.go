package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
)

// decide asks the current policy and audits the decision.
func (e decideStage) run(ctx context.Context, r *run) (bool, error) {
	r.policy = e.Policies.Current()
	if r.policy == nil {
		return false, fmt.Errorf("%w: no policy loaded", errTransient)
	}
	now := e.now()
	in := policies.Input{Event: r.ev, Context: policies.Context{
		Now:           now,
		Budget:        e.budgetInput(r.ev),
		RecentActions: e.recentFor(r.ev.Subject, now),
	}}
	d, err := e.decideInTime(ctx, r.policy, &in)
	e.Metrics.Decision(ctx, d.Remediator, e.now().Sub(now))
	if err == nil {
		err = d.Validate()
	}
	var late lateDecision
	switch {
	case errors.As(err, &late):
		return true, e.suppress(ctx, r, outcomeSuppressed, late.Error(), "decision_timeout", late.limit.String())
	case err != nil:
		return true, e.suppress(ctx, r, outcomeSuppressed, "policy evaluation failed: "+err.Error())
	}
	r.decision, r.remName = d, d.Remediator
	// A retry that comes to the same decision under the same policy is not
	// audited again; a different one is.
	dj, err := json.Marshal(d)
	if err != nil {
		return true, e.suppress(ctx, r, outcomeSuppressed, "policy decision cannot be encoded: "+err.Error())
	}
	digest := hashKey("", r.policy.Revision, string(dj))
	if digest != r.decided {
		// The decision as encoded for the digest, not encoded again; the
		// members in the order a map would give them.
		e.auditLater(ctx, r, audit.KindDecision, audit.DetailsOf(struct {
			Budget      policies.Budget `json:"budget"`
			Decision    json.RawMessage `json:"decision"`
			EventStatus string          `json:"event_status"`
		}{in.Context.Budget, dj, r.ev.Status}))
		r.decided, r.stateDue = digest, true
		if err := e.shadow(ctx, r, &in, d); err != nil {
			return false, err
		}
	}
	if d.Remediator == "" {
		return true, nil
	}
	// Every step must be runnable before the first one runs.
	for _, st := range d.Ladder() {
		rem, ok := e.Remediators[st.Remediator]
		if !ok {
			return true, e.suppress(ctx, r, outcomeSuppressed, fmt.Sprintf("remediator %q is not available in this healer (available: %v)", st.Remediator, e.Remediators.Names()))
		}
		if err := rem.Validate(st.Params); err != nil {
			return true, e.suppress(ctx, r, outcomeDone, "invalid params from policy: "+err.Error())
		}
	}
	if r.ev.Resolved() {
		if _, ok := e.Remediators[d.Remediator].(action.Undoer); !ok {
			return true, e.suppress(ctx, r, outcomeDone, fmt.Sprintf("problem cleared; %s has no undo step", d.Remediator))
		}
		r.undo = true
	}
	return false, e.selectStep(ctx, r, 0)
}

// decideInTime asks p for the decision on in, cut off after
// DecisionTimeout. A decision cut off returns a lateDecision.
func (e decideStage) decideInTime(ctx context.Context, p *policies.Policy, in *policies.Input) (policies.Decision, error) {
	dctx, cancel := context.WithTimeoutCause(ctx, e.cfg.DecisionTimeout, e.late)
	defer cancel()
	d, err := p.Decide(dctx, in)
	if err != nil && ctx.Err() == nil && context.Cause(dctx) == e.late {
		return policies.Decision{}, e.late
	}
	return d, err
}

// lateDecision is why a decision was cut off: it took longer than limit.
type lateDecision struct{ limit time.Duration }

// Error says so, as the suppressed record's reason.
func (l lateDecision) Error() string {
	return fmt.Sprintf("policy decision exceeded its %s deadline", l.limit)
}

// shadow decides the event with the candidate policies too and audits how
// their decision differs from the live one. It never changes what the
// engine does, and its failures only get logged; the error it returns is
// that of appending the live decision's records first.
func (e decideStage) shadow(ctx context.Context, r *run, in *policies.Input, live policies.Decision) error {
	if e.Shadow == nil {
		return nil
	}
	cand := e.Shadow.Current()
	if cand == nil {
		return nil
	}
	d, err := e.decideInTime(ctx, cand, in)
	if err == nil {
		err = d.Validate()
	}
	change := policies.ChangeError
	details := map[string]any{"live": live, "shadow_revision": cand.Revision}
	if err != nil {
		details["error"] = err.Error()
	} else {
		change = policies.Compare(live, d)
		details["shadow"] = d
	}
	if change == policies.ChangeSame {
		return nil
	}
	details["change"] = change
	// The shadow record follows the live decision's in the trail.
	if err := e.flush(ctx, r); err != nil {
		return err
	}
	rec := audit.Record{
		Kind: audit.KindPolicyShadow, EventID: r.ev.ID, Target: r.ev.Subject, Remediator: d.Remediator,
		Actor: Actor, PolicyRevision: cand.Revision, Details: audit.DetailsOf(details),
	}
	if _, err := e.Trail.Append(ctx, rec); err != nil {
		e.Log.WarnContext(ctx, "shadow decision not audited", "event_id", r.ev.ID, "err", err)
	}
	return nil
}

func (e decideStage) budgetInput(ev *bus.Event) policies.Budget {
	if e.Budget == nil {
		return policies.Budget{}
	}
	node := ""
	if ev.TargetKind() == "node" {
		node = ev.TargetName()
	}
	s, err := e.Budget.StateFor(node)
	if err != nil {
		return policies.Budget{}
	}
	return policies.Budget{
		TotalNodes: s.TotalNodes, OutOfService: s.OutOfService, InFlight: s.InFlight,
		Allowed: s.Allowed, Available: s.Available, Known: true,
		Zone: s.Zone, ZoneNodes: s.ZoneNodes, ZoneOutOfService: s.ZoneOutOfService, ZoneAllowed: s.ZoneAllowed,
	}
}

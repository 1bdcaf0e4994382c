package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/policies"
)

// The pipeline, top to bottom. A stage returns stop=true when the event's
// outcome is settled (and audited), or an error to have the event
// redelivered later.
func (e *Engine) pipeline() []stage {
	return []stage{
		{"dedupe", e.dedupe},   // seen this event before? audit it the first time
		{"decide", e.decide},   // ask the policy; audit the decision
		{"guard", e.guard},     // still current, dry-run, breaker, budget, rate limits
		{"approve", e.approve}, // humans, when the policy asks for it
		{"act", e.act},         // each step: re-check, claim, act (or undo), verify, wait for the problem to clear
	}
}

type stage struct {
	name string
	run  func(context.Context, *run) (stop bool, err error)
}

// Outcomes of an event, kept in the key-value bucket.
const (
	outcomeDone       = "done"       // handled; a duplicate is ignored
	outcomeSuppressed = "suppressed" // nothing done for a reason that may pass; a later copy is looked at again
)

// run is one event going through the pipeline.
type run struct {
	msg      jetstream.Msg
	worker   workerSlot // given to other events while a stage waits
	seq      uint64     // stream sequence of msg
	attempt  uint64
	ev       *bus.Event
	policy   *policies.Policy
	decision policies.Decision
	// The ladder step being run: its index, remediator and params.
	stepIndex  int
	remName    string
	rem        action.Remediator
	params     map[string]any
	stepFailed bool
	undo       bool
	idemKey    string
	actionID   string
	state      actionPhase // the step's action, as found in the bucket and moved on
	reserved   *guard.Reservation
	slot       func() // gives back the action slot held (see actionSlot); nil when none
	tookOut    bool
	outcome    string
	lease      atomic.Pointer[lease] // the action this run holds, renewed while it runs
	stopRenew  func()                // stops the renewals, once started (keepLease)
	target     *targetLease          // the target's lease, held while the current step acts and verifies
	decided    string                // digest of the decision already audited for this event
	approvers  []string              // the humans who approved this action, if any
	stepDoneAt time.Time             // when an earlier attempt finished the current step
	// pending are audit records not yet appended (see auditLater);
	// stateDue says the event's or decision's record is among them, so
	// the event's state is to be written once they are in.
	pending  []audit.Record
	stateDue bool
	// fresh says the event had no state in the bucket: no attempt got as
	// far as claiming an action for it (flush writes the state first).
	fresh bool

	// The event's open problem: its key, its record as the event found it
	// (nil when it was not open) and what this run did to it, written
	// when the event settles (see settleProblem).
	problemKey string
	problem    *Problem
	hold       *Hold // what held the run back, when something did
	acted      bool  // a step (not an undo) finished
	failed     bool  // a step, or the whole ladder, failed
	reopened   bool  // the problem came back before its owed undo ran
	closing    bool  // the problem cleared while held back: close it
	unchanged  bool  // the problem's record stays as it is
	// quiet says the event is a re-drive or a re-assertion that changes
	// nothing: it is acked without a record or a state.
	quiet bool
}

// request is what the remediator is asked to do for this run.
func (r *run) request() action.Request {
	return action.Request{
		ID: r.actionID, EventID: r.ev.ID, EventType: r.ev.Type, Target: r.ev.Subject,
		Problem: r.ev.ProblemID(), Params: r.params, Approvers: r.approvers,
	}
}

// handle runs one event message through the pipeline and acks it once its
// outcome is audited.
func (e *Engine) handle(ctx context.Context, m jetstream.Msg, worker workerSlot) {
	start := e.now()
	meta, err := m.Metadata()
	if err != nil {
		e.Log.WarnContext(ctx, "event without metadata", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	ev, err := bus.DecodeEvent(m.Data())
	if err != nil {
		e.badEvent(ctx, m, meta, err)
		return
	}
	r := &run{msg: m, seq: meta.Sequence.Stream, attempt: meta.NumDelivered, ev: ev, outcome: outcomeDone, worker: worker}
	// The trace the event's message carries (from the webhook) goes on
	// here: through the stages, the remediator and the node's agent.
	ctx, span := e.Tracer.Start(bus.ExtractTrace(ctx, m.Headers()), "engine.event", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("healer.event_id", ev.ID), attribute.String("healer.target", ev.Subject),
			attribute.String("healer.event_type", ev.Type), attribute.Int64("healer.attempt", int64(min(r.attempt, 1<<62))))) //nolint:gosec // bounded
	defer func() {
		span.SetAttributes(attribute.String("healer.outcome", r.outcome), attribute.String("healer.remediator", r.remName))
		span.End()
	}()
	log := e.Log.With("event_id", ev.ID, "target", ev.Subject, "type", ev.Type, "status", ev.Status, "attempt", r.attempt)

	defer func() {
		if r.stopRenew != nil {
			r.stopRenew()
		}
	}()
	defer func() {
		if r.state.open() {
			r.leaveTarget() // the redelivery resumes the action and takes the lease back
		} else {
			e.releaseTarget(ctx, r)
		}
	}()
	defer func() {
		if r.reserved != nil {
			r.reserved.Release(ctx, r.tookOut)
		}
	}()
	defer r.releaseSlot()

	for _, st := range e.pipeline() {
		sctx, sspan := e.Tracer.Start(ctx, "engine."+st.name)
		stop, err := e.runStage(sctx, st, r, log)
		if err != nil {
			sspan.RecordError(err)
			sspan.SetStatus(codes.Error, err.Error())
		}
		sspan.End()
		if err != nil {
			e.retry(ctx, r, st.name, err, log)
			return
		}
		if stop {
			break
		}
	}
	if r.quiet {
		// A re-drive or re-assertion that changes nothing: no record, no
		// state; a redelivery of it would come to the same.
		if err := m.Ack(); err != nil {
			log.WarnContext(ctx, "ack event", "err", err)
		}
		e.Metrics.Handled(ctx, "quiet", e.now().Sub(start))
		return
	}
	// Settled: the records still pending go to the trail, then the
	// problem's record and the event's outcome to their buckets, then the
	// ack, in that order, so that an event is acked only once its records
	// are stored and a copy of it would be recognised.
	if err := e.appendPending(ctx, r); err != nil {
		e.retry(ctx, r, "audit", err, log)
		return
	}
	if err := e.settleProblem(ctx, r); err != nil {
		log.WarnContext(ctx, "record the open problem; will retry", "err", err)
		_ = m.NakWithDelay(e.cfg.RetryDelay)
		return
	}
	if err := putJSON(ctx, e.Streams.Actions, eventKey(ev.ID), eventState{State: r.outcome, Time: e.now()}); err != nil {
		log.WarnContext(ctx, "record event outcome; will retry", "err", err)
		_ = m.NakWithDelay(e.cfg.RetryDelay)
		return
	}
	// A plain ack, not a double one: waiting for the server to confirm it
	// would buy nothing, since a lost ack only means a redelivery, which
	// the outcome just written settles as a duplicate.
	if err := m.Ack(); err != nil {
		log.WarnContext(ctx, "ack event", "err", err)
	}
	e.Metrics.Handled(ctx, r.outcome, e.now().Sub(start))
	log.DebugContext(ctx, "event handled", "outcome", r.outcome, "remediator", r.remName, "took", e.now().Sub(start))
}

// runStage runs one stage of the run. A panic in it is recovered, counted
// and logged with its stack, and returned as a *stagePanic: a transient
// error, so the event is handed back for redelivery and, after
// MaxAttempts, given up and audited like any other (action.failed for an
// action under way, else suppressed), naming the stage and the panic.
func (e *Engine) runStage(ctx context.Context, st stage, r *run, log *slog.Logger) (stop bool, err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		p := &stagePanic{stage: st.name, value: panicValue(v)}
		e.Metrics.StagePanic(ctx, st.name)
		log.ErrorContext(ctx, "stage panicked; the event is handed back", "stage", st.name, "panic", p.value, "stack", string(debug.Stack()))
		stop, err = false, p
	}()
	return st.run(ctx, r)
}

// stagePanic is a panic recovered in a stage. It is transient: a panic on
// one delivery (a nil field in an odd answer) may not recur on the next.
type stagePanic struct {
	stage string
	value string
}

// Error names the stage and the panic value.
func (p *stagePanic) Error() string { return fmt.Sprintf("stage %s panicked: %s", p.stage, p.value) }

// Unwrap makes a stage panic an errTransient.
func (p *stagePanic) Unwrap() error { return errTransient }

// panicValue is a recovered value as audit records show it: its text,
// cut to a length that keeps a record small.
func panicValue(v any) string {
	const limit = 512
	s := fmt.Sprint(v)
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "…"
	}
	return s
}

// dedupe audits an event the first time it is seen and settles
// duplicates: of the event (its id), and of its problem (an open problem's
// news while an action for it is open, a re-drive or a re-assertion that
// changes nothing).
func (e *Engine) dedupe(ctx context.Context, r *run) (bool, error) {
	r.problemKey = problemKey(r.ev.Subject, r.ev.ProblemID())
	p, _, err := e.problems.get(ctx, r.problemKey)
	if err != nil {
		return false, err
	}
	r.problem = p
	if r.ev.Trigger != "" {
		counts, err := e.triggerCounts(ctx, r)
		if err != nil || !counts {
			r.quiet = err == nil
			return !counts, err
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
func (e *Engine) triggerCounts(ctx context.Context, r *run) (bool, error) {
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

// decide asks the current policy and audits the decision.
func (e *Engine) decide(ctx context.Context, r *run) (bool, error) {
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
func (e *Engine) decideInTime(ctx context.Context, p *policies.Policy, in *policies.Input) (policies.Decision, error) {
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
func (e *Engine) shadow(ctx context.Context, r *run, in *policies.Input, live policies.Decision) error {
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

// ladder returns the steps this run executes: an undo reverses only the
// decision's remediator.
func (r *run) ladder() []policies.Step {
	if r.undo {
		return []policies.Step{{Remediator: r.decision.Remediator, Params: r.decision.Params}}
	}
	return r.decision.Ladder()
}

// selectStep makes step i the current one and loads its action state: a
// step finished by an earlier attempt is marked so, an open one is taken
// over (see takeOver).
func (e *Engine) selectStep(ctx context.Context, r *run, i int) error {
	st := r.ladder()[i]
	r.stepIndex, r.remName, r.params, r.rem = i, st.Remediator, st.Params, e.Remediators[st.Remediator]
	r.actionID, r.state, r.stepFailed = "", actionNew, false
	r.lease.Store(nil)
	name := st.Remediator
	if i > 0 {
		name = fmt.Sprintf("%s#%d", st.Remediator, i) // a ladder may use one remediator twice
	}
	r.idemKey = idempotencyKey(r.ev.ID, name, r.ev.Subject)
	if r.fresh {
		// No state of the event was found, so no action of it has been
		// claimed: that happens only after the event's state is written.
		// Should one exist all the same (written by hand, or outliving
		// the event's state), claiming it fails and the redelivery, no
		// longer fresh, reads it.
		return nil
	}
	as, rev, err := getJSON[actionState](ctx, e.Streams.Actions, r.idemKey)
	if err != nil || as == nil {
		return err
	}
	switch {
	case as.State.done():
		r.actionID, r.state, r.stepDoneAt = as.ActionID, as.State, as.Time
		return nil
	case as.State.open():
		return e.takeOver(ctx, r, as, rev)
	default:
		// Not written by an engine: acting on it could repeat or skip a
		// step, so the event is given up on, audited.
		return fmt.Errorf("action %s: unknown state %q in the actions bucket", as.ActionID, as.State)
	}
}

// disruptive reports whether any step of the decision takes a node out of
// service, so the budget applies to the whole ladder.
func (e *Engine) disruptive(d policies.Decision) bool {
	for _, st := range d.Ladder() {
		if rem := e.Remediators[st.Remediator]; rem != nil && rem.Info().Disruptive {
			return true
		}
	}
	return false
}

// act runs the ladder: for each step, act (or undo) and verify, then wait
// up to the step's Wait for the problem to clear; escalate to the next
// step when it has not, or when the step failed.
func (e *Engine) act(ctx context.Context, r *run) (bool, error) {
	steps := r.ladder()
	for i := r.stepIndex; i < len(steps); i++ {
		if i != r.stepIndex {
			if err := e.selectStep(ctx, r, i); err != nil {
				return false, err
			}
		}
		var finishedAt time.Time
		switch {
		case r.state.done():
			if len(steps) == 1 {
				return true, e.suppress(ctx, r, outcomeDone, fmt.Sprintf("duplicate: action %s for this event already %s", r.actionID, r.state))
			}
			r.stepFailed = r.state == actionFailed
			finishedAt = r.stepDoneAt // resumed: wait only what is left of the step's wait
		default:
			stop, err := e.runStep(ctx, r)
			if err != nil {
				return false, err
			}
			if stop && !r.stepFailed {
				return true, nil // settled: undone, not needed, or not safe
			}
			finishedAt = e.now()
		}
		if len(steps) == 1 && steps[0].Wait == 0 && steps[0].Escalate == "" {
			return true, nil // a plain decision: acting and verifying is all
		}
		if !r.stepFailed && steps[i].Escalate == policies.EscalateOnFailure {
			return true, e.audit(ctx, r, audit.KindVerified, audit.Details("ok", true, "ladder", "ends: "+steps[i].Remediator+" succeeded", "ladder_step", i))
		}
		if !r.stepFailed {
			cleared, err := e.waitCleared(ctx, r, finishedAt.Add(steps[i].Wait))
			if err != nil {
				return false, err
			}
			if cleared {
				return true, e.audit(ctx, r, audit.KindVerified, audit.Details("ok", true, "problem", "cleared", "ladder_step", i))
			}
		}
		if i+1 < len(steps) {
			why := fmt.Sprintf("problem persists %s after %s", steps[i].Wait, steps[i].Remediator)
			if r.stepFailed {
				why = steps[i].Remediator + " failed"
			}
			if err := e.audit(ctx, r, audit.KindActionProgress, audit.Details("step", "escalate", "from", steps[i].Remediator, "to", steps[i+1].Remediator, "ladder_step", i+1, "why", why)); err != nil {
				return false, err
			}
		}
	}
	r.failed = true
	return true, e.audit(ctx, r, audit.KindActionFailed, audit.Details("step", "ladder", "error", fmt.Sprintf("the problem persists after all %d steps", len(steps))))
}

// runStep acts (or undoes) the current step and verifies it, holding one
// of the engine's action slots meanwhile. Once it is verified, the target
// is free for other actions while a ladder waits for the problem to clear.
func (e *Engine) runStep(ctx context.Context, r *run) (stop bool, err error) {
	if r.slot == nil { // the first step's was taken by the guard
		if r.slot, err = e.actionSlot(ctx, r); err != nil {
			return false, err
		}
	}
	defer r.releaseSlot()
	stop, err = e.actStep(ctx, r)
	if err != nil || (stop && !r.stepFailed) {
		return stop, err
	}
	if !r.stepFailed {
		if _, err := e.verifyStep(ctx, r); err != nil {
			return false, err
		}
	}
	e.releaseTarget(ctx, r)
	return stop, nil
}

// actionSlot takes one of the MaxActions slots. While every one is taken
// the event's records so far go to the trail, and the event gives its
// worker to other events (most of which never act) and waits. Once the
// engine is stopping no new step starts: the event is handed back for
// redelivery. An action resumed after a crash or a takeover does not
// wait: it is already under way in the world, and its target lease is
// not renewed while it would be queued.
func (e *Engine) actionSlot(ctx context.Context, r *run) (release func(), err error) {
	if r.state.open() {
		return func() {}, nil
	}
	if e.isStopping() {
		return nil, errStopping
	}
	release = func() { <-e.actions }
	select {
	case e.actions <- struct{}{}:
		return release, nil
	default:
	}
	if err := e.flush(ctx, r); err != nil {
		return nil, err
	}
	e.Metrics.ActionSlotWait(ctx, 1)
	reacquire := r.yieldSlot()
	select {
	case e.actions <- struct{}{}:
	case <-e.stopping:
		err = errStopping
	case <-ctx.Done():
		err = fmt.Errorf("%w: waiting for one of %d action slots: %w", errTransient, cap(e.actions), ctx.Err())
	}
	e.Metrics.ActionSlotWait(ctx, -1)
	if err == nil && e.isStopping() {
		<-e.actions // a slot and the stop came at once: start nothing new
		err = errStopping
	}
	reacquire()
	if err != nil {
		return nil, err
	}
	return release, nil
}

// releaseSlot gives the run's action slot back, if it holds one.
func (r *run) releaseSlot() {
	if r.slot != nil {
		r.slot()
		r.slot = nil
	}
}

// isStopping reports whether Run's context has ended.
func (e *Engine) isStopping() bool {
	select {
	case <-e.stopping:
		return true
	default:
		return false
	}
}

// waitCleared waits until the problem has cleared (a newer resolved event
// is in the stream) or until deadline. The wait (a rung's, often minutes)
// gives the event's worker to other events, and ends when the engine
// stops: the redelivery waits only what is left of it.
func (e *Engine) waitCleared(ctx context.Context, r *run, deadline time.Time) (bool, error) {
	if cleared, _, err := e.superseded(ctx, r); err != nil || cleared || !e.now().Before(deadline) {
		return cleared, err
	}
	reacquire := r.yieldSlot()
	defer reacquire()
	for {
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("%w: %w", errTransient, ctx.Err())
		case <-e.stopping:
			return false, fmt.Errorf("%w: waiting for the problem to clear", errStopping)
		case <-time.After(min(250*time.Millisecond, time.Until(deadline))):
		}
		cleared, _, err := e.superseded(ctx, r)
		if err != nil || cleared {
			return cleared, err
		}
		if !e.now().Before(deadline) {
			return false, nil
		}
	}
}

// takeOver resumes an action claimed by an earlier attempt: this engine's
// own, or another instance's whose lease has run out (it crashed). While
// another instance's lease is live, the event waits for redelivery.
func (e *Engine) takeOver(ctx context.Context, r *run, st *actionState, rev uint64) error {
	now := e.now()
	if st.Holder != "" && st.Holder != e.instance && now.Sub(st.Renewed) < e.cfg.AckWait {
		return fmt.Errorf("%w: action %s is held by engine %s until %s", errTransient, st.ActionID, st.Holder, st.Renewed.Add(e.cfg.AckWait).Format(time.RFC3339))
	}
	next := *st
	next.Holder, next.Renewed = e.instance, now
	b := stateJSON(next)
	newRev, err := e.Streams.Actions.Update(ctx, r.idemKey, b, rev)
	if err != nil {
		return fmt.Errorf("%w: take over action %s: %w", errTransient, st.ActionID, err)
	}
	r.actionID, r.state = st.ActionID, st.State
	e.keepLease(ctx, r, &lease{key: r.idemKey, st: next, rev: newRev})
	return nil
}

// guard checks everything that must hold before acting. Undo steps give
// capacity back and are not limited.
func (e *Engine) guard(ctx context.Context, r *run) (bool, error) {
	name := r.remName
	if e.Pauses != nil {
		p, err := e.Pauses.Blocking(name, r.ev.Subject)
		if err != nil {
			return false, fmt.Errorf("%w: %w", errTransient, err)
		}
		if p != nil {
			what := "paused"
			if !p.From.IsZero() {
				what = "maintenance window"
			}
			until := "until cleared"
			if !p.Until.IsZero() {
				until = "until " + p.Until.UTC().Format(time.RFC3339)
			}
			return true, e.holdBack(ctx, r, Hold{Kind: HoldPause, Ref: p.ID, Until: p.Until,
				Reason: fmt.Sprintf("held back: %s: %s, by %s, %s (pause %s): %s; re-driven when it ends", what, p.Scope(), p.By, until, p.ID, p.Reason)},
				"pause", p.ID)
		}
	}
	if e.cfg.DryRun || r.decision.DryRun {
		what := "run " + name
		if r.undo {
			what = "undone " + name
		}
		return true, e.suppress(ctx, r, outcomeDone, "dry-run: would have "+what, "params", r.decision.Params)
	}
	// Is the event still current? The stream is read only here, where the
	// answer can change what is done. An action an earlier attempt
	// claimed is settled by the act stage (a claim given back, a started
	// action finished, never dropped).
	if !r.state.open() {
		if cleared, why, err := e.superseded(ctx, r); err != nil {
			return false, err
		} else if cleared {
			return true, e.suppress(ctx, r, outcomeDone, why)
		}
	}
	if e.Breakers.State(name).String() == "open" {
		if r.state == actionStarted {
			// An action already under way is not dropped half done (a
			// node cordoned and half drained): its redelivery resumes it,
			// as the breaker's probe once it half-opens, or it fails
			// after maxAttempts.
			return false, fmt.Errorf("%w: circuit breaker open for %s; action %s resumes when it lets a probe through", errTransient, name, r.actionID)
		}
		at := e.Breakers.HalfOpensAt(name)
		return true, e.holdBack(ctx, r, Hold{Kind: HoldBreaker, Ref: name, Until: at,
			Reason: fmt.Sprintf("held back: circuit breaker open for %s after repeated failures; re-driven when it half-opens at %s", name, at.UTC().Format(time.RFC3339))})
	}
	if r.undo {
		return false, nil // an undo gives capacity back: no budget, no rate limits
	}
	// The budget and the rate limits are spent by an event about to start
	// an action, holding an action slot, not by one that would then queue
	// for one (and, stopped meanwhile, spend them again on its
	// redelivery). A step an earlier attempt began or finished needs none.
	if r.state == actionNew {
		release, err := e.actionSlot(ctx, r)
		if err != nil {
			return false, err
		}
		r.slot = release
	}
	if e.disruptive(r.decision) {
		if e.Budget == nil {
			return true, e.suppress(ctx, r, outcomeSuppressed, "blast-radius budget unknown: Kubernetes is not configured (fail closed)")
		}
		// Oldest first: news does not take a slot that older problems,
		// held back, wait for.
		if ahead := e.problems.waitingAhead(r.problemKey, r.problem, e.now()); ahead > 0 {
			if st, err := e.Budget.StateFor(r.ev.TargetName()); err == nil && ahead >= st.Available {
				why := budgetHoldReason(guard.ErrBudgetExhausted, st)
				if st.Available > 0 {
					why = fmt.Sprintf("held back: %d older problems wait for the budget's %d free slots; re-driven in turn", ahead, st.Available)
				}
				return true, e.holdBack(ctx, r, Hold{Kind: HoldBudget, Reason: why}, "budget", st, "waiting_ahead", ahead)
			}
		}
		res, st, err := e.Budget.Reserve(ctx, r.ev.TargetName())
		if err != nil {
			if e.Notifier != nil && errors.Is(err, guard.ErrBudgetExhausted) {
				e.Notifier.Notify(ctx, Notice{Kind: NoticeBudgetExhausted, Remediator: name, Target: r.ev.Subject,
					Text: err.Error(), Runbook: runbookOf(r)})
			}
			h := Hold{Kind: HoldBudget, Reason: budgetHoldReason(err, st)}
			if !errors.Is(err, guard.ErrBudgetExhausted) {
				h.Ref = holdRefUnknown // waits for no slot, so nobody waits behind it
			}
			return true, e.holdBack(ctx, r, h, "budget", st)
		}
		r.reserved = res
	}
	// Another action on the target: wait for it before using up rate
	// limits (acting takes the lease for real).
	if err := e.targetFree(ctx, r); err != nil {
		return false, err
	}
	if r.state == actionNew { // a resumed action already passed its rate limits
		limits := make([]guard.Limit, 0, 2)
		for _, l := range r.decision.Limits() {
			limits = append(limits, guard.Limit{Key: l.Key, Max: l.Max, Per: l.Per})
		}
		if len(limits) > 0 {
			denied, retryAfter, err := e.Limiter.Allow(ctx, limits)
			if err != nil {
				until := e.now().Add(limiterRetry)
				return true, e.holdBack(ctx, r, Hold{Kind: HoldRate, Until: until,
					Reason: fmt.Sprintf("held back: rate limiter unavailable (fail closed): %v; re-driven at %s", err, until.UTC().Format(time.RFC3339))})
			}
			if denied != nil {
				until := e.now().Add(retryAfter)
				return true, e.holdBack(ctx, r, Hold{Kind: HoldRate, Ref: denied.Key, Until: until,
					Reason: fmt.Sprintf("held back: rate limit %s reached (%d per %s); re-driven at %s", denied.Key, denied.Max, denied.Per, until.UTC().Format(time.RFC3339))},
					"retry_after", retryAfter.Round(time.Second).String())
			}
		}
	}
	return false, nil
}

// superseded reports whether a newer event of the same problem makes this
// one moot: a firing event whose problem has since resolved, or a resolved
// event whose problem has since come back. It reads the stream, not a cache.
func (e *Engine) superseded(ctx context.Context, r *run) (bool, string, error) {
	// A re-drive or a re-assertion repeats the problem's news; the news
	// itself, on the problem's own subject, says what is true now.
	last, err := e.Streams.Events.GetLastMsgForSubject(ctx, bus.ProblemSubject(r.msg.Subject()))
	if errors.Is(err, jetstream.ErrMsgNotFound) && r.ev.Trigger != "" {
		return false, "", nil // the news is older than the stream keeps
	}
	if err != nil {
		return false, "", fmt.Errorf("%w: look up latest state of %s: %w", errTransient, r.ev.Subject, err)
	}
	if r.ev.Trigger == "" && last.Sequence <= r.seq {
		return false, "", nil
	}
	newer, err := bus.DecodeEvent(last.Data)
	if err != nil || newer.Status == r.ev.Status {
		return false, "", nil
	}
	if r.undo {
		return true, fmt.Sprintf("not undone: the problem came back (event %s)", newer.ID), nil
	}
	return true, fmt.Sprintf("not needed: the problem has cleared since (event %s)", newer.ID), nil
}

// approve asks humans when the decision says so, failing closed without an
// approval channel.
func (e *Engine) approve(ctx context.Context, r *run) (bool, error) {
	need := r.decision.Approval
	if r.undo || r.state != actionNew || need == "" || need == policies.ApprovalNone {
		return false, nil
	}
	if e.Approver == nil {
		return true, e.suppress(ctx, r, outcomeSuppressed, fmt.Sprintf("approval %q required but no approval channel is configured", need))
	}
	n := 1
	if need == policies.ApprovalTwo {
		n = 2
	}
	if r.actionID == "" {
		r.actionID = newActionID()
	}
	req := ApprovalRequest{
		Key: r.idemKey, ActionID: r.actionID, EventID: r.ev.ID, Target: r.ev.Subject, Remediator: r.remName,
		Approvals: n, Reason: r.decision.Reason, Rule: r.decision.Rule, Params: r.params,
		Runbook: runbookOf(r), Requester: requester(r.ev),
	}
	if r.reserved != nil && e.Budget != nil {
		if st, err := e.Budget.StateFor(r.ev.TargetName()); err == nil {
			req.Budget = fmt.Sprintf("%d of %d nodes out of service or in flight (this one included), %d allowed",
				st.OutOfService+st.InFlight, st.TotalNodes, st.Allowed)
		}
	}
	// People take minutes: the wait gives its worker slot to other
	// events, and ends at once when the engine stops (the event is then
	// redelivered and waits on the same request).
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if e.stopping != nil {
		stop := e.stopping
		go func() {
			select {
			case <-stop:
				cancel()
			case <-waitCtx.Done():
			}
		}()
	}
	// The event and its decision are in the trail before anyone is asked.
	if err := e.flush(ctx, r); err != nil {
		return false, err
	}
	r.releaseSlot() // people take minutes; the step takes a slot again
	reacquire := r.yieldSlot()
	ans, err := e.Approver.Approve(waitCtx, req)
	reacquire()
	if err != nil && e.isStopping() {
		return false, fmt.Errorf("%w: approval: %w", errStopping, err)
	}
	if err != nil {
		return false, fmt.Errorf("%w: approval: %w", errTransient, err)
	}
	if err := e.audit(ctx, r, audit.KindApproval, audit.Details("approved", ans.Approved, "reason", ans.Reason, "by", ans.By, "need", n)); err != nil {
		return false, err
	}
	if !ans.Approved {
		return true, e.suppress(ctx, r, outcomeSuppressed, "approval denied or expired: "+ans.Reason)
	}
	r.approvers = ans.By
	return false, nil
}

func runbookOf(r *run) string {
	if r.rem == nil {
		return ""
	}
	return r.rem.Info().Runbook
}

// requester returns the person an event says asked for its action:
// data.requested_by, or an alert's requested_by annotation or label.
func requester(ev *bus.Event) string {
	var d struct {
		RequestedBy string            `json:"requested_by"`
		Annotations map[string]string `json:"annotations"`
		Labels      map[string]string `json:"labels"`
	}
	if len(ev.Data) == 0 || json.Unmarshal(ev.Data, &d) != nil {
		return ""
	}
	for _, v := range []string{d.RequestedBy, d.Annotations["requested_by"], d.Labels["requested_by"]} {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// actStep re-checks, claims the idempotency key, audits the start, and
// runs the current step's remediator (or its undo).
func (e *Engine) actStep(ctx context.Context, r *run) (bool, error) {
	name := r.remName
	step := "act"
	if r.undo {
		step = "undo"
	}
	if r.actionID == "" {
		r.actionID = newActionID()
	}
	// Approval may have taken minutes: is the problem still current? An
	// action already started (resumed after a crash) is finished instead:
	// dropping it half done (an etcd member removed, its replacement a
	// learner) would be worse than completing it; its undo follows the
	// problem's clearing as usual.
	if r.state != actionStarted {
		if cleared, why, err := e.superseded(ctx, r); err != nil {
			return false, err
		} else if cleared {
			return true, e.settleWithoutActing(ctx, r, step, why)
		}
	}
	// One action at a time per target, across replicas: the re-check and
	// the act happen under the target's lease.
	if err := e.holdTarget(ctx, r); err != nil {
		return false, err
	}
	req := r.request()
	if !r.undo {
		// Re-check on a fresh read just before acting.
		checkCtx, cancel := context.WithTimeout(ctx, e.cfg.VerifyTimeout)
		err := r.rem.Check(checkCtx, req)
		cancel()
		if err != nil {
			switch {
			case errors.Is(err, action.ErrNotNeeded):
				return true, e.settleWithoutActing(ctx, r, step, "not needed: "+err.Error())
			case errors.Is(err, action.ErrUnsafe), errors.Is(err, action.ErrInvalidParams):
				r.outcome = outcomeSuppressed
				return true, e.settleWithoutActing(ctx, r, step, "unsafe, not acting: "+err.Error())
			default:
				return false, fmt.Errorf("%w: re-check before %s: %w", errTransient, name, err)
			}
		}
	}
	// The records so far, and the event's state, before the claim.
	if err := e.flush(ctx, r); err != nil {
		return false, err
	}
	if r.state == actionNew && !r.undo {
		// Across replicas: no second action while one is open for the
		// problem.
		if other, err := e.claimProblem(ctx, r); err != nil {
			return false, err
		} else if other != "" {
			return true, e.settleWithoutActing(ctx, r, step, other)
		}
	}
	if r.state == actionNew {
		st := actionState{ActionID: r.actionID, State: actionClaimed, Step: step, Time: e.now(), Holder: e.instance, Renewed: e.now()}
		rev, err := e.Streams.Actions.Create(ctx, r.idemKey, stateJSON(st))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("%w: action for event %s claimed concurrently", errTransient, r.ev.ID)
		}
		if err != nil {
			return false, fmt.Errorf("%w: claim action %s: %w", errTransient, r.actionID, err)
		}
		if err := r.advance(actionClaimed); err != nil {
			return false, err
		}
		e.keepLease(ctx, r, &lease{key: r.idemKey, st: st, rev: rev})
	}
	if r.state == actionClaimed {
		if err := e.audit(ctx, r, audit.KindActionStarted, audit.Details("step", step, "params", r.params, "attempt", r.attempt, "ladder_step", r.stepIndex)); err != nil {
			return false, err
		}
		if err := e.setState(ctx, r, actionStarted, step); err != nil {
			return false, err
		}
	}

	// The last word before acting: is the lease still this engine's?
	if err := e.confirmTarget(ctx, r); err != nil {
		return false, err
	}
	actCtx, cancel := context.WithTimeoutCause(ctx, e.cfg.ActionTimeout, fmt.Errorf("%s on %s: timed out after %s", name, r.ev.Subject, e.cfg.ActionTimeout))
	defer cancel()
	actCtx, unfence := r.fenced(actCtx)
	defer unfence()
	progress := func(ctx context.Context, what string, details map[string]any) {
		details["step"] = what
		// Straight to the trail, not through the run's pending records: a
		// remediator may report from several goroutines, and nothing is
		// pending once the action has started.
		if _, err := e.Trail.Append(ctx, e.record(ctx, r, audit.KindActionProgress, audit.DetailsOf(details))); err != nil {
			e.Log.WarnContext(ctx, "audit progress", "action_id", r.actionID, "err", err)
		}
	}
	actCtx, span := e.Tracer.Start(actCtx, "remediate "+name, trace.WithAttributes(
		attribute.String("healer.action_id", r.actionID), attribute.String("healer.step", step), attribute.String("healer.target", r.ev.Subject)))
	defer span.End()
	var res action.Result
	notNeeded := false
	err := e.Breakers.Run(name, func() error {
		var err error
		if r.undo {
			res, err = r.rem.(action.Undoer).Undo(actCtx, req)
		} else {
			res, err = r.rem.Act(actCtx, req, progress)
		}
		if errors.Is(err, action.ErrNotNeeded) {
			res, err, notNeeded = action.Result{Message: err.Error()}, nil, true
		}
		return err
	})
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	switch {
	case errors.Is(err, guard.ErrBreakerOpen):
		// It opened between the guard and here, so nothing ran this time;
		// but the action is started (audited, perhaps resumed half done):
		// it is retried, not dropped, like the guard's check above.
		return false, fmt.Errorf("%w: circuit breaker open for %s; action %s resumes when it lets a probe through", errTransient, name, r.actionID)
	case err != nil && r.target != nil && r.target.lostBecause() != nil:
		// Fenced: the lease passed on while acting. The action stays
		// open; its redelivery resumes it once the lease is free again.
		e.Metrics.Action(ctx, name, step, "fenced")
		return false, fmt.Errorf("%w: %s %s stopped: %w", errTransient, name, step, r.target.lostBecause())
	case err != nil:
		e.Metrics.Action(ctx, name, step, "error")
		retryable := !errors.Is(err, action.ErrUnsafe) && !errors.Is(err, action.ErrInvalidParams) && !errors.Is(err, action.ErrBlocked)
		if retryable && r.attempt < uint64(e.cfg.MaxAttempts) { //nolint:gosec // MaxAttempts is validated positive
			return false, fmt.Errorf("%w: %s %s: %w", errTransient, name, step, err)
		}
		return true, e.fail(ctx, r, step, err)
	}
	if err := e.audit(ctx, r, audit.KindActionFinished, audit.Details("step", step, "changed", res.Changed, "message", res.Message, "result", res.Details)); err != nil {
		return false, err
	}
	if err := e.setState(ctx, r, actionFinished, step); err != nil {
		return false, err
	}
	e.Metrics.Action(ctx, name, step, "finished")
	if !r.undo && !notNeeded {
		r.acted = true
	}
	e.remember(r.ev.Subject, policies.RecentAction{Remediator: name, Target: r.ev.Subject, Result: step + " finished", Time: e.now()})
	if r.undo || notNeeded {
		return true, nil // nothing was changed that needs verifying
	}
	r.tookOut = r.rem.Info().Disruptive
	return false, nil
}

// settleWithoutActing records why the action will not run. When an earlier
// attempt already audited action.started, the action is closed with
// action.finished (nothing changed) so it does not stay open forever.
func (e *Engine) settleWithoutActing(ctx context.Context, r *run, step, why string) error {
	outcome := r.outcome
	if r.state == actionStarted {
		if err := e.audit(ctx, r, audit.KindActionFinished, audit.Details("step", step, "changed", false, "message", why)); err != nil {
			return err
		}
		r.outcome = outcome
		return e.setState(ctx, r, actionFinished, step)
	}
	if r.state == actionClaimed {
		if err := e.Streams.Actions.Delete(ctx, r.idemKey); err != nil {
			return fmt.Errorf("%w: release claim %s: %w", errTransient, r.actionID, err)
		}
		r.lease.Store(nil)
		if err := r.advance(actionNew); err != nil {
			return err
		}
	}
	return e.suppress(ctx, r, outcome, why)
}

// setState records the action's state; while it is open this instance
// holds its lease.
func (e *Engine) setState(ctx context.Context, r *run, state actionPhase, step string) error {
	if !r.state.next(state) {
		return fmt.Errorf("action %s: no transition from %q to %q", r.actionID, r.state, state)
	}
	st := actionState{ActionID: r.actionID, State: state, Step: step, Time: e.now()}
	open := state.open()
	if open {
		st.Holder, st.Renewed = e.instance, e.now()
	}
	rev, err := putJSONRev(ctx, e.Streams.Actions, r.idemKey, st)
	if err != nil {
		return err
	}
	r.state = state
	if open {
		e.keepLease(ctx, r, &lease{key: r.idemKey, st: st, rev: rev})
	} else {
		r.lease.Store(nil)
	}
	return nil
}

// keepLease makes l the lease of the run's open action, and starts renewing
// it the first time: most events never open an action, and need no
// renewing goroutine.
func (e *Engine) keepLease(ctx context.Context, r *run, l *lease) {
	r.lease.Store(l)
	if r.stopRenew == nil {
		r.stopRenew = e.renewLease(ctx, r)
	}
}

// renewLease keeps the lease of the run's open action alive while it runs.
// A renewal only succeeds on the revision it last saw, so it can never
// overwrite a state the pipeline wrote meanwhile.
func (e *Engine) renewLease(ctx context.Context, r *run) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(e.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			l := r.lease.Load()
			if l == nil {
				continue
			}
			next := l.st
			next.Renewed = e.now()
			rev, err := e.Streams.Actions.Update(ctx, l.key, stateJSON(next), l.rev)
			if err != nil {
				continue // the pipeline moved on, or the bucket is away: the next tick tries again
			}
			r.lease.CompareAndSwap(l, &lease{key: l.key, st: next, rev: rev})
		}
	}()
	return func() { close(done) }
}

// verifyStep waits for the current step's effect, up to VerifyTimeout.
func (e *Engine) verifyStep(ctx context.Context, r *run) (bool, error) {
	req := r.request()
	start := e.now()
	deadline := start.Add(e.cfg.VerifyTimeout)
	var err error
	for {
		vctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Second))
		err = r.rem.Verify(vctx, req)
		cancel()
		if err == nil || e.now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		e.Breakers.Fail(r.remName, err)
		e.Metrics.Action(ctx, r.remName, "verify", "failed")
		r.stepFailed = true
		return true, e.audit(ctx, r, audit.KindActionFailed, audit.Details("step", "verify", "error", err.Error()))
	}
	e.Metrics.Action(ctx, r.remName, "verify", "verified")
	return true, e.audit(ctx, r, audit.KindVerified, audit.Details("ok", true, "took", e.now().Sub(start).String()))
}

// suppress audits why nothing (more) is done and settles the outcome. The
// record goes to the trail with the others pending when the event
// settles, before its outcome is recorded and it is acked; the error is
// always nil, for the callers' return statements.
func (e *Engine) suppress(ctx context.Context, r *run, outcome, reason string, kv ...any) error {
	r.outcome = outcome
	e.Metrics.Suppressed(ctx, r.remName)
	e.auditLater(ctx, r, audit.KindSuppressed, audit.Details(append([]any{"reason", reason}, kv...)...))
	return nil
}

// holdBack suppresses the run for something that clears by itself (h):
// its problem waits on it, and is re-driven when it clears.
func (e *Engine) holdBack(ctx context.Context, r *run, h Hold, kv ...any) error {
	h.At = e.now()
	r.hold = &h
	kv = append(kv, "held_by", h.Kind)
	if !h.Until.IsZero() {
		kv = append(kv, "held_until", h.Until.UTC())
	}
	return e.suppress(ctx, r, outcomeSuppressed, h.Reason, kv...)
}

// limiterRetry is how long a problem waits for the rate limiter to be
// reachable again before it is re-driven.
const limiterRetry = 30 * time.Second

// budgetHoldReason says why the budget holds a problem back, in numbers.
func budgetHoldReason(err error, st guard.BudgetState) string {
	switch {
	case !errors.Is(err, guard.ErrBudgetExhausted):
		return fmt.Sprintf("held back: %v (fail closed); re-driven when the budget is known", err)
	case st.Zone != "" && st.OutOfService < st.Allowed:
		return fmt.Sprintf("held back: budget of zone %s %d/%d in use; re-driven when a slot frees", st.Zone, st.ZoneOutOfService, st.ZoneAllowed)
	default:
		return fmt.Sprintf("held back: budget %d/%d in use; re-driven when a slot frees", st.OutOfService, st.Allowed)
	}
}

// fail audits a failed action and records it so it is not retried.
func (e *Engine) fail(ctx context.Context, r *run, step string, cause error) error {
	if err := e.audit(ctx, r, audit.KindActionFailed, audit.Details("step", step, "error", cause.Error(), "attempts", r.attempt)); err != nil {
		return err
	}
	if r.idemKey != "" && r.state != actionNew {
		if err := e.setState(ctx, r, actionFailed, step); err != nil {
			return err
		}
	}
	e.Metrics.Action(ctx, r.remName, step, "failed")
	r.stepFailed = true
	return nil
}

// retry hands the event back for redelivery with a growing delay, or, after
// MaxAttempts, audits giving up and terminates it.
func (e *Engine) retry(ctx context.Context, r *run, stage string, err error, log *slog.Logger) {
	if ctx.Err() == nil && len(r.pending) > 0 {
		// What this attempt audited (the event and its decision) goes to
		// the trail now, as it would have had the event gone on, and is
		// not audited again by the redelivery.
		if ferr := e.flush(ctx, r); ferr != nil {
			log.WarnContext(ctx, "audit before retrying", "stage", stage, "err", ferr)
		}
	}
	if errors.Is(err, errStopping) {
		// Waiting for people or a slot ended with the engine: not a
		// failure, so no attempt is used; another engine or this one's
		// next start takes the event at once.
		_ = r.msg.Nak()
		return
	}
	if errors.Is(err, errTargetBusy) && ctx.Err() == nil {
		// Waiting for another action on the target is not a failure: the
		// holder finishes or its lease runs out, so it uses no attempts.
		delay := min(e.cfg.RetryDelay*time.Duration(min(r.attempt, 1000)), 5*time.Second) //nolint:gosec // bounded above
		log.InfoContext(ctx, "target busy; event waits", "stage", stage, "retry_in", delay, "why", err)
		_ = r.msg.NakWithDelay(delay)
		return
	}
	if errors.Is(err, errTransient) && r.attempt < uint64(e.cfg.MaxAttempts) && ctx.Err() == nil { //nolint:gosec // MaxAttempts is validated positive
		delay := min(e.cfg.RetryDelay*time.Duration(min(r.attempt, 1000)), 30*time.Second) //nolint:gosec // bounded above
		log.WarnContext(ctx, "event will be retried", "stage", stage, "retry_in", delay, "err", err)
		_ = r.msg.NakWithDelay(delay)
		return
	}
	if ctx.Err() != nil {
		_ = r.msg.Nak()
		return
	}
	var aerr error
	if r.state == actionStarted {
		aerr = e.fail(ctx, r, stage, err)
	} else {
		aerr = e.suppress(ctx, r, outcomeSuppressed, fmt.Sprintf("gave up in stage %s after %d attempts: %v", stage, r.attempt, err))
	}
	if aerr == nil {
		aerr = e.appendPending(ctx, r)
	}
	if aerr != nil {
		log.WarnContext(ctx, "cannot audit giving up; event will be retried", "stage", stage, "err", aerr)
		_ = r.msg.NakWithDelay(30 * time.Second)
		return
	}
	if err := e.settleProblem(ctx, r); err != nil {
		log.WarnContext(ctx, "record the open problem after giving up", "err", err)
	}
	_ = putJSON(ctx, e.Streams.Actions, eventKey(r.ev.ID), eventState{State: r.outcome, Time: e.now()})
	_ = r.msg.Term()
}

// badEvent audits a message that is not a valid event and terminates it.
func (e *Engine) badEvent(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error) {
	_, err := e.Trail.Append(ctx, audit.Record{
		Kind:    audit.KindEvent,
		Actor:   Actor,
		Details: audit.Details("error", cause.Error(), "subject", m.Subject(), "stream_seq", meta.Sequence.Stream),
	})
	if err != nil {
		e.Log.WarnContext(ctx, "cannot audit bad event; will retry", "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(e.cfg.RetryDelay)
		return
	}
	_ = m.Term()
}

func (e *Engine) budgetInput(ev *bus.Event) policies.Budget {
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

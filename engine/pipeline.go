package engine

import (
	"context"
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

// The pipeline, top to bottom. Each stage is a type of its own, in its own
// file (stage_*.go), and owns a part of the run: it reads what the stages
// before it wrote and writes only its own part. What several stages use
// (the ladder step's action state, the action slots, the re-check that the
// event is still current, the audit of a settled event) lives below them,
// in step.go and engine.go, and no stage calls another's methods. A stage
// returns stop=true when the event's outcome is settled (and audited), or
// an error to have the event redelivered later.
func (e *Engine) pipeline() []stage {
	return []stage{
		dedupeStage{e},  // seen this event (or its problem's state) before? audit it the first time
		decideStage{e},  // ask the policy; audit the decision; select the ladder's first step
		guardStage{e},   // pause, dry-run, still current, breaker, budget, target, rate limits
		approveStage{e}, // humans, when the policy asks for it
		actStage{e},     // each step: re-check, claim, act (or undo), verify, wait for the problem to clear
	}
}

// stage is one step of the pipeline.
type stage interface {
	name() string
	run(ctx context.Context, r *run) (stop bool, err error)
}

// The stages. Each embeds the engine for what lies below the stages (its
// configuration, buckets, the audit of the run, the shared steps).
type (
	dedupeStage  struct{ *Engine }
	decideStage  struct{ *Engine }
	guardStage   struct{ *Engine }
	approveStage struct{ *Engine }
	actStage     struct{ *Engine }
)

func (dedupeStage) name() string  { return "dedupe" }
func (decideStage) name() string  { return "decide" }
func (guardStage) name() string   { return "guard" }
func (approveStage) name() string { return "approve" }
func (actStage) name() string     { return "act" }

// Outcomes of an event, kept in the key-value bucket.
const (
	outcomeDone       = "done"       // handled; a duplicate is ignored
	outcomeSuppressed = "suppressed" // nothing done for a reason that may pass; a later copy is looked at again
)

// run is one event going through the pipeline, in the parts its stages
// own.
type run struct {
	delivery   // the event as delivered and its records (the pipeline's)
	problemRun // its open problem (dedupe's; the outcome, every stage's)
	plan       // the policy's decision (decide's)
	clearance  // what the guard took for the action (guard's)
	stepRun    // the ladder step being run and its action (selectStep's and act's)
	// approvers are the humans who approved this action, if any (approve's).
	approvers []string
}

// delivery is the event as JetStream delivered it, and the records of its
// handling.
type delivery struct {
	msg     jetstream.Msg
	worker  workerSlot // given to other events while a stage waits
	seq     uint64     // stream sequence of msg
	attempt uint64
	ev      *bus.Event
	outcome string
	decided string // digest of the decision already audited for this event
	// pending are audit records not yet appended (see auditLater);
	// stateDue says the event's or decision's record is among them, so
	// the event's state is to be written once they are in.
	pending  []audit.Record
	stateDue bool
	// fresh says the event had no state in the bucket: no attempt got as
	// far as claiming an action for it (flush writes the state first).
	fresh bool
}

// problemRun is the event's open problem: its key, its record as the
// event found it (nil when it was not open) and what the run did to it,
// written when the event settles (see settleProblem).
type problemRun struct {
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

// plan is what the policy decided for the event.
type plan struct {
	policy   *policies.Policy
	decision policies.Decision
	undo     bool // the problem cleared: the decision's remediator is undone
}

// clearance is what the guard took for the action: the budget's
// reservation and one of the engine's action slots.
type clearance struct {
	reserved *guard.Reservation
	slot     func() // gives back the action slot held (see actionSlot); nil when none
}

// stepRun is the ladder step being run: its index, remediator and params,
// and its action.
type stepRun struct {
	stepIndex  int
	remName    string
	rem        action.Remediator
	params     map[string]any
	stepFailed bool
	idemKey    string
	actionID   string
	state      actionPhase           // the step's action, as found in the bucket and moved on
	tookOut    bool                  // the step took the target out of service
	lease      atomic.Pointer[lease] // the action this run holds, renewed while it runs
	stopRenew  func()                // stops the renewals, once started (keepLease)
	target     *targetLease          // the target's lease, held while the current step acts and verifies
	stepDoneAt time.Time             // when an earlier attempt finished the current step
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
	r := &run{delivery: delivery{msg: m, seq: meta.Sequence.Stream, attempt: meta.NumDelivered, ev: ev, outcome: outcomeDone, worker: worker}}
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
		sctx, sspan := e.Tracer.Start(ctx, "engine."+st.name())
		stop, err := e.runStage(sctx, st, r, log)
		if err != nil {
			sspan.RecordError(err)
			sspan.SetStatus(codes.Error, err.Error())
		}
		sspan.End()
		if err != nil {
			e.retry(ctx, r, st.name(), err, log)
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
		p := &stagePanic{stage: st.name(), value: panicValue(v)}
		e.Metrics.StagePanic(ctx, st.name())
		log.ErrorContext(ctx, "stage panicked; the event is handed back", "stage", st.name(), "panic", p.value, "stack", string(debug.Stack()))
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

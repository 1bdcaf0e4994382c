package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/policies"
)

// act runs the ladder: for each step, act (or undo) and verify, then wait
// up to the step's Wait for the problem to clear; escalate to the next
// step when it has not, or when the step failed.
func (e actStage) run(ctx context.Context, r *run) (bool, error) {
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
func (e actStage) runStep(ctx context.Context, r *run) (stop bool, err error) {
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

// waitCleared waits until the problem has cleared (a newer resolved event
// is in the stream) or until deadline. The wait (a rung's, often minutes)
// gives the event's worker to other events, and ends when the engine
// stops: the redelivery waits only what is left of it.
func (e actStage) waitCleared(ctx context.Context, r *run, deadline time.Time) (bool, error) {
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

// actStep re-checks, claims the idempotency key, audits the start, and
// runs the current step's remediator (or its undo).
func (e actStage) actStep(ctx context.Context, r *run) (bool, error) {
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
func (e actStage) settleWithoutActing(ctx context.Context, r *run, step, why string) error {
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

// verifyStep waits for the current step's effect, up to VerifyTimeout.
func (e actStage) verifyStep(ctx context.Context, r *run) (bool, error) {
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

package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
)

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

// setState records the action's state; while it is open this instance
// holds its lease.
func (e *Engine) setState(ctx context.Context, r *run, state actionPhase, step string) error {
	if err := r.mayAdvance(state); err != nil {
		return err
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

func runbookOf(r *run) string {
	if r.rem == nil {
		return ""
	}
	return r.rem.Info().Runbook
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

package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A target lease makes sure at most one action acts on a target at a time,
// across every engine replica: two alerts about one node, taken by two
// replicas, never cordon and drain it at once.
//
// The lease is a key of the actions bucket, created (or taken over) with a
// compare-and-set and renewed with one. The bucket revision the holder last
// wrote is its fencing token: an engine that stalled past the lease's term
// cannot renew (its revision is stale), and the moment it notices, the
// context its remediator acts under is cancelled. An engine also cancels
// its own action when it has not been able to renew for most of the term
// (the bucket away), since another replica may take the lease once the
// term runs out. Just before acting, the holder renews once more, so an
// action never starts on a lease that may already have passed on.
//
// What the lease cannot fence is a write already sent when the holder
// stalls (a process frozen mid-request). Remediators keep their own
// idempotency for that: node.drain's marks carry the action id, and
// etcd.replace-member holds its cluster's journal lock.

// TargetHold is the value of a target's lease: which action of which
// engine may act on the target now.
type TargetHold struct {
	ActionID string `json:"action_id"`
	// Key is the action's idempotency key, so another engine can see
	// whether the holder's action is still open.
	Key        string    `json:"key"`
	Remediator string    `json:"remediator"`
	Holder     string    `json:"holder"`
	Renewed    time.Time `json:"renewed"`
}

// targetLease is a target lease this engine holds.
type targetLease struct {
	key    string
	target string
	hold   TargetHold // as taken; renewals change only Renewed, kept below

	mu      sync.Mutex
	renewed time.Time
	rev     uint64 // fencing token: the bucket revision this engine last wrote

	// lost is cancelled, with the reason, when the lease is lost or given
	// up; the action's context follows it and the renewals stop.
	lost   context.Context
	cancel context.CancelCauseFunc
}

// errTargetBusy means another action holds the target; the event waits for
// redelivery. It is not a failure and does not use up attempts.
var errTargetBusy = errors.New("target busy")

func targetKey(target string) string { return hashKey("tgt.", target) }

// TargetLease returns the lease of target in the actions bucket, or nil
// when no action holds it (a lease past its term is still returned: see
// Renewed).
func TargetLease(ctx context.Context, actions jetstream.KeyValue, target string) (*TargetHold, error) {
	h, _, err := getJSON[TargetHold](ctx, actions, targetKey(target))
	return h, err
}

// holdTarget takes the lease of the run's target for its current action,
// or returns an error wrapping errTargetBusy while another action holds it.
// A lease left by this same action (an earlier attempt, on any engine) is
// taken back at once.
func (e *Engine) holdTarget(ctx context.Context, r *run) error {
	if tl := r.target; tl != nil && tl.hold.ActionID == r.actionID {
		return nil
	}
	e.releaseTarget(ctx, r)
	key := targetKey(r.ev.Subject)
	now := e.now()
	hold := TargetHold{ActionID: r.actionID, Key: r.idemKey, Remediator: r.remName, Holder: e.instance, Renewed: now}
	b, err := json.Marshal(hold)
	if err != nil {
		return err
	}
	rev, err := e.Streams.Actions.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = e.takeTarget(ctx, r, key, b, now)
	}
	if err != nil {
		if errors.Is(err, errTargetBusy) {
			return fmt.Errorf("%w: %w", errTransient, err)
		}
		return fmt.Errorf("%w: lease %s: %w", errTransient, r.ev.Subject, err)
	}
	lost, cancel := context.WithCancelCause(context.Background())
	tl := &targetLease{key: key, target: r.ev.Subject, hold: hold, renewed: now, rev: rev, lost: lost, cancel: cancel}
	r.target = tl
	go e.keepTarget(tl) //nolint:gosec,contextcheck // G118: the keeper lives as long as the lease, which outlives this call; it stops on release
	return nil
}

// takeTarget takes over a target lease that exists: when it is this
// action's own, or its holder let its term run out and the holder's action
// is no longer open (or has been silent far longer than an action may
// take).
func (e *Engine) takeTarget(ctx context.Context, r *run, key string, b []byte, now time.Time) (uint64, error) {
	entry, err := e.Streams.Actions.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%w: lease of %s changed hands just now", errTargetBusy, r.ev.Subject)
	}
	if err != nil {
		return 0, err
	}
	var cur TargetHold
	if err := json.Unmarshal(entry.Value(), &cur); err != nil {
		return 0, fmt.Errorf("decode lease of %s: %w", r.ev.Subject, err)
	}
	if cur.ActionID != r.actionID {
		if err := e.heldByOther(&cur, r, now); err != nil {
			return 0, err
		}
		silent := now.Sub(cur.Renewed)
		// The holder stopped renewing. If its action is still open it
		// will be resumed by its event's redelivery: wait for that, but
		// not longer than an action may take.
		if cur.Key != "" && silent < e.cfg.ActionTimeout+e.cfg.VerifyTimeout+e.cfg.AckWait {
			st, _, err := getJSON[actionState](ctx, e.Streams.Actions, cur.Key)
			if err != nil {
				return 0, err
			}
			if st != nil && st.ActionID == cur.ActionID && st.State.open() {
				return 0, fmt.Errorf("%w: %s waits for action %s (%s, %s) to be resumed", errTargetBusy, r.ev.Subject, cur.ActionID, cur.Remediator, st.State)
			}
		}
		e.Log.InfoContext(ctx, "taking over an expired target lease", "target", r.ev.Subject,
			"from_action", cur.ActionID, "from_engine", cur.Holder, "silent", silent.Round(time.Second))
	}
	rev, err := e.Streams.Actions.Update(ctx, key, b, entry.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w: lease of %s taken concurrently", errTargetBusy, r.ev.Subject)
	}
	return rev, err
}

// confirmTarget renews the run's target lease on the revision last
// written, just before acting: it fails when the lease has passed on.
func (e *Engine) confirmTarget(ctx context.Context, r *run) error {
	tl := r.target
	if tl == nil {
		return fmt.Errorf("%w: acting on %s without its lease", errTransient, r.ev.Subject)
	}
	if err := e.renewTarget(ctx, tl); err != nil {
		return fmt.Errorf("%w: lease of %s before acting: %w", errTransient, r.ev.Subject, err)
	}
	if err := tl.lostBecause(); err != nil {
		return fmt.Errorf("%w: %w", errTransient, err)
	}
	return nil
}

// lostBecause says why the lease was lost, or nil while it is held.
func (tl *targetLease) lostBecause() error {
	return context.Cause(tl.lost) //nolint:contextcheck // the lease's own state, not a request's context
}

// renewTarget writes the lease again on the revision last written. A
// revision mismatch means someone else wrote it: the lease is lost.
func (e *Engine) renewTarget(ctx context.Context, tl *targetLease) error {
	tl.mu.Lock()
	rev := tl.rev
	tl.mu.Unlock()
	next := tl.hold
	next.Renewed = e.now()
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	newRev, err := e.Streams.Actions.Update(ctx, tl.key, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		err = fmt.Errorf("lease of %s lost: another engine wrote it after revision %d", tl.target, rev)
		tl.cancel(err)
		return err
	}
	if err != nil {
		return err
	}
	tl.mu.Lock()
	tl.renewed, tl.rev = next.Renewed, newRev
	tl.mu.Unlock()
	return nil
}

// keepTarget renews a held lease every third of its term until released,
// and gives it up (cancelling the action) when renewals have failed for
// two thirds of the term.
func (e *Engine) keepTarget(tl *targetLease) {
	every := e.cfg.AckWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-tl.lost.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := e.renewTarget(ctx, tl)
		cancel()
		if err == nil || tl.lost.Err() != nil {
			continue
		}
		tl.mu.Lock()
		last := tl.renewed
		tl.mu.Unlock()
		if since := e.now().Sub(last); since >= e.cfg.AckWait-every {
			tl.cancel(fmt.Errorf("lease of %s not renewed for %s, another engine may take it: %w", tl.target, since.Round(time.Second), err))
			e.Log.Warn("target lease given up", "target", tl.target, "action_id", tl.hold.ActionID, "err", err)
		}
	}
}

// fenced returns ctx cancelled, with the reason, when the run's target
// lease is lost.
func (r *run) fenced(ctx context.Context) (context.Context, func()) {
	tl := r.target
	if tl == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(tl.lost, func() { cancel(context.Cause(tl.lost)) })
	return ctx, func() { stop(); cancel(nil) }
}

// releaseTarget gives the run's target lease back, if it still holds it.
// The delete is conditional on the revision last written, so a lease that
// passed on is never removed from its new holder.
func (e *Engine) releaseTarget(ctx context.Context, r *run) {
	tl := r.target
	if tl == nil {
		return
	}
	r.target = nil
	tl.cancel(errors.New("released"))
	tl.mu.Lock()
	rev := tl.rev
	tl.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.Streams.Actions.Delete(ctx, tl.key, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Left behind, it runs out after one term.
		e.Log.WarnContext(ctx, "release target lease", "target", tl.target, "err", err)
	}
}

// leaveTarget stops renewing the run's lease without giving it back: the
// action is open and its event will be redelivered, and until then no
// other action may start on the target.
func (r *run) leaveTarget() {
	tl := r.target
	if tl == nil {
		return
	}
	r.target = nil
	tl.cancel(errors.New("left for the redelivery"))
}

// targetFree is a cheap look at the target's lease before rate limits are
// used up: it reports errTargetBusy while another action's lease is live.
// holdTarget decides for real.
func (e *Engine) targetFree(ctx context.Context, r *run) error {
	if r.state != actionNew {
		return nil // a resumed action: its limits are behind it
	}
	entry, err := e.Streams.Actions.Get(ctx, targetKey(r.ev.Subject))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: lease of %s: %w", errTransient, r.ev.Subject, err)
	}
	var cur TargetHold
	if json.Unmarshal(entry.Value(), &cur) != nil || cur.ActionID == r.actionID {
		return nil // holdTarget decides
	}
	if err := e.heldByOther(&cur, r, e.now()); err != nil {
		return fmt.Errorf("%w: %w", errTransient, err)
	}
	return nil
}

// heldByOther returns an error wrapping errTargetBusy while cur, another
// action's lease, is within its term.
func (e *Engine) heldByOther(cur *TargetHold, r *run, now time.Time) error {
	if now.Sub(cur.Renewed) < e.cfg.AckWait {
		return fmt.Errorf("%w: %s is held by action %s (%s) on engine %s", errTargetBusy, r.ev.Subject, cur.ActionID, cur.Remediator, cur.Holder)
	}
	return nil
}

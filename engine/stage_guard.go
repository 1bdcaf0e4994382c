package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/healer/engine/guard"
)

// guard checks everything that must hold before acting. Undo steps give
// capacity back and are not limited.
func (e guardStage) run(ctx context.Context, r *run) (bool, error) {
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

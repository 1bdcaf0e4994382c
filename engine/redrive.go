package engine

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// The redriver publishes a held-back problem's latest event again once
// what held it has cleared: a budget slot freed, a rate window passed, a
// pause cleared or ended, a breaker half-opened. Every replica runs one over
// the same open problems; they pick the same problems in the same order and
// name each re-drive after the problem's record revision, so JetStream
// stores each re-drive once, and whichever replica is free handles it.
//
// Problems are looked at oldest first (by when they opened), one per target
// per round, so a storm drains in arrival order and one busy target does
// not keep the others waiting. A problem whose steps take nodes out of
// service is re-driven only while the budget has a slot for it, counting
// the re-drives already on their way.

// redriveGrace is how long a re-drive counts as on its way (holding its
// budget slot, not to be re-driven again) before its problem's record
// shows that it was handled.
const redriveGrace = 10 * time.Second

// redriver is the state of one replica's re-driving.
type redriver struct {
	e *Engine
	// sent maps the problems re-driven to the revision re-driven and when.
	sent map[string]sentRedrive
}

type sentRedrive struct {
	rev uint64
	at  time.Time
}

// runRedriver re-drives held-back problems every RedriveInterval until ctx
// ends.
func (e *Engine) runRedriver(ctx context.Context) {
	rd := &redriver{e: e, sent: map[string]sentRedrive{}}
	t := time.NewTicker(e.cfg.RedriveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rd.round(ctx)
	}
}

// round re-drives every held problem whose hold has cleared, within the
// budget's free slots.
func (rd *redriver) round(ctx context.Context) {
	e := rd.e
	held, ok := e.problems.held()
	if !ok || len(held) == 0 {
		clear(rd.sent)
		return
	}
	now := e.now()
	slices.SortFunc(held, func(a, b heldProblem) int {
		if c := a.p.Opened.Compare(b.p.Opened); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	// Forget re-drives that were handled (the record moved on) or that
	// got lost; count the others against the budget.
	byKey := make(map[string]*heldProblem, len(held))
	for i := range held {
		byKey[held[i].key] = &held[i]
	}
	onTheirWay := map[string]int{} // zone ("" for all) -> budget slots taken by re-drives on their way
	for key, s := range rd.sent {
		h, stillHeld := byKey[key]
		if !stillHeld || h.rev != s.rev || now.Sub(s.at) > redriveGrace {
			delete(rd.sent, key)
			continue
		}
		if h.p.Disruptive && h.p.Status == bus.StatusFiring {
			onTheirWay[""]++
			onTheirWay[rd.zoneOf(h.p.Target)]++
		}
	}
	targets := map[string]bool{}
	budgetFull := false
	for _, h := range held {
		if _, on := rd.sent[h.key]; on || targets[h.p.Target] {
			continue
		}
		if now.Before(h.p.Hold.At.Add(rd.backoff(h.p.Redrives))) || !e.holdCleared(&h.p, now) {
			continue
		}
		if h.p.Disruptive && h.p.Status == bus.StatusFiring {
			if budgetFull || !rd.budgetSlot(h.p.Target, onTheirWay) {
				budgetFull = budgetFull || rd.clusterFull(onTheirWay)
				continue
			}
		}
		if err := rd.publish(ctx, h); err != nil {
			if ctx.Err() == nil {
				e.Log.WarnContext(ctx, "re-drive failed; the next round tries again", "target", h.p.Target, "err", err)
			}
			return
		}
		targets[h.p.Target] = true
		rd.sent[h.key] = sentRedrive{rev: h.rev, at: now}
		if h.p.Disruptive && h.p.Status == bus.StatusFiring {
			onTheirWay[""]++
			onTheirWay[rd.zoneOf(h.p.Target)]++
		}
		e.Metrics.Redriven(ctx, string(h.p.Hold.Kind))
	}
}

// backoff is how long a problem re-driven n times and held back again
// waits before its next re-drive: nothing at first, then doubling up to
// 30s, so a problem whose hold a replica misjudges (a node the budget does
// not know) is not re-driven on every round.
func (rd *redriver) backoff(n int) time.Duration {
	if n == 0 {
		return 0
	}
	return min(rd.e.cfg.RedriveInterval<<min(n, 20), 30*time.Second)
}

// budgetSlot reports whether the budget has room for one more node out of
// service on target, beyond the re-drives on their way.
func (rd *redriver) budgetSlot(target string, onTheirWay map[string]int) bool {
	b := rd.e.Budget
	if b == nil {
		return false
	}
	node, ok := nodeOf(target)
	if !ok {
		return false
	}
	st, err := b.StateFor(node)
	if err != nil {
		return false
	}
	if st.OutOfService+onTheirWay[""]+1 > st.Allowed {
		return false
	}
	return st.Zone == "" || st.ZoneOutOfService+onTheirWay[st.Zone]+1 <= st.ZoneAllowed
}

// clusterFull reports whether the whole cluster's budget is taken, so no
// later problem need be looked at this round.
func (rd *redriver) clusterFull(onTheirWay map[string]int) bool {
	if rd.e.Budget == nil {
		return true
	}
	st, err := rd.e.Budget.State()
	return err != nil || st.OutOfService+onTheirWay[""] >= st.Allowed
}

// zoneOf returns the failure domain of target's node, "" when unknown.
func (rd *redriver) zoneOf(target string) string {
	node, ok := nodeOf(target)
	if !ok || rd.e.Budget == nil {
		return ""
	}
	st, err := rd.e.Budget.StateFor(node)
	if err != nil {
		return ""
	}
	return st.Zone
}

// nodeOf returns the node a target names (node/<name>).
func nodeOf(target string) (string, bool) {
	node, ok := strings.CutPrefix(target, "node/")
	return node, ok && node != ""
}

// publish publishes the problem's latest event again, named after its
// record's revision so every replica's re-drive of it is stored once.
func (rd *redriver) publish(ctx context.Context, h heldProblem) error {
	ev, err := h.p.event()
	if err != nil {
		return err
	}
	again := ev.Repeat(bus.TriggerRedrive, RedriveID(ev.OriginID(), h.rev))
	msg, err := bus.Message(again)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = rd.e.JS.PublishMsg(pctx, msg, jetstream.WithMsgID(again.ID))
	return err
}

// RedriveID is the id of the re-drive of the event origin for the held
// problem's record revision rev: the same on every replica.
func RedriveID(origin string, rev uint64) string {
	return origin + "~rd" + strconv.FormatUint(rev, 10)
}

// holdCleared reports whether what held p back has cleared, apart from the
// budget (the redriver counts its slots): no pause covers it, its rate
// window has passed, its breaker is not open.
func (e *Engine) holdCleared(p *Problem, now time.Time) bool {
	if e.Pauses != nil {
		bp, err := e.Pauses.Blocking(p.Remediator, p.Target)
		if err != nil || bp != nil {
			return false
		}
	}
	h := p.Hold
	if h == nil {
		return false
	}
	switch h.Kind {
	case HoldRate:
		return !now.Before(h.Until)
	case HoldBreaker:
		return !now.Before(h.Until) && e.Breakers.State(p.Remediator).String() != "open"
	case HoldBudget:
		if p.Status != bus.StatusFiring {
			return true
		}
		if e.Budget == nil {
			return false
		}
		node, ok := nodeOf(p.Target)
		if !ok {
			return false
		}
		st, err := e.Budget.StateFor(node)
		return err == nil && st.Available > 0
	}
	return true
}

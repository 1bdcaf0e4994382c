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
	// slot says it takes a place in the budget, in zone.
	slot bool
	zone string
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
	revs := make(map[string]uint64, len(held))
	for _, h := range held {
		revs[h.key] = h.rev
	}
	var taken slotsTaken
	for key, s := range rd.sent {
		if rev, stillHeld := revs[key]; !stillHeld || rev != s.rev || now.Sub(s.at) > redriveGrace {
			delete(rd.sent, key)
			continue
		}
		if s.slot {
			taken.add(s.zone)
		}
	}
	targets := map[string]bool{}
	budgetFull := false
	for _, h := range held {
		if _, on := rd.sent[h.key]; on || targets[h.p.Target] {
			continue
		}
		if now.Before(h.p.Hold.At.Add(rd.backoff(h.p.Redrives))) || !e.unblocked(&h.p, now) {
			continue
		}
		sent := sentRedrive{rev: h.rev, at: now, slot: needsSlot(&h.p)}
		if sent.slot {
			if budgetFull {
				continue
			}
			room, full, zone := e.budgetRoom(h.p.Target, &taken)
			if !room {
				budgetFull = full
				continue
			}
			sent.zone = zone
		}
		if err := rd.publish(ctx, h); err != nil {
			if ctx.Err() == nil {
				e.Log.WarnContext(ctx, "re-drive failed; the next round tries again", "target", h.p.Target, "err", err)
			}
			return
		}
		targets[h.p.Target] = true
		rd.sent[h.key] = sent
		if sent.slot {
			taken.add(sent.zone)
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

// needsSlot reports whether re-driving p takes a node out of service.
func needsSlot(p *Problem) bool { return p.Disruptive && p.Status == bus.StatusFiring }

// slotsTaken counts the budget's places that re-drives on their way will
// take, in all and by failure domain.
type slotsTaken struct {
	all    int
	byZone map[string]int
}

func (t *slotsTaken) add(zone string) {
	t.all++
	if zone != "" {
		if t.byZone == nil {
			t.byZone = map[string]int{}
		}
		t.byZone[zone]++
	}
}

// budgetRoom reports whether the budget has room for one more node out of
// service on target beyond taken (nil: none), whether the whole cluster's
// budget is full (so no later problem need be looked at), and the node's
// failure domain. An unknown budget has no room.
func (e *Engine) budgetRoom(target string, taken *slotsTaken) (room, clusterFull bool, zone string) {
	if taken == nil {
		taken = &slotsTaken{}
	}
	node, ok := nodeOf(target)
	if e.Budget == nil || !ok {
		return false, e.Budget == nil, ""
	}
	st, err := e.Budget.StateFor(node)
	if err != nil {
		return false, true, ""
	}
	if st.OutOfService+taken.all+1 > st.Allowed {
		return false, true, st.Zone
	}
	return st.Zone == "" || st.ZoneOutOfService+taken.byZone[st.Zone]+1 <= st.ZoneAllowed, false, st.Zone
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

// holdCleared reports whether what held p back has cleared: nothing
// blocks it (see unblocked) and, when the budget held it and it takes a
// node out of service, the budget has a slot for it.
func (e *Engine) holdCleared(p *Problem, now time.Time) bool {
	if !e.unblocked(p, now) {
		return false
	}
	if p.Hold.Kind == HoldBudget && needsSlot(p) {
		room, _, _ := e.budgetRoom(p.Target, nil)
		return room
	}
	return true
}

// unblocked reports whether p's hold has cleared, apart from the budget's
// slots: no pause covers it, its rate window has passed, its breaker is
// not open.
func (e *Engine) unblocked(p *Problem, now time.Time) bool {
	if e.Pauses != nil {
		bp, err := e.Pauses.Blocking(p.Remediator, p.Target)
		if err != nil || bp != nil {
			return false
		}
	}
	h := p.Hold
	switch {
	case h == nil:
		return false
	case h.Kind == HoldRate:
		return !now.Before(h.Until)
	case h.Kind == HoldBreaker:
		return !now.Before(h.Until) && e.Breakers.State(p.Remediator).String() != "open"
	}
	return true
}

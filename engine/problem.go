package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// An open problem is durable state, not just an event: one record per
// target and problem id in the problems bucket, shared by every replica.
// It says whether the problem is firing or resolved, where its handling
// stands (Phase) and, while something holds it back, what and until when
// (Hold). The redriver publishes a held problem's latest event again once
// its hold clears, and a detector's resync re-asserts what it still sees,
// so a held-back problem is healed late, never forgotten.

// Phase is where the handling of an open problem stands.
type Phase string

// Phases of an open problem. See (Phase).next for the transitions.
const (
	// PhaseHeld: something (Hold) keeps its next step back; the redriver
	// looks at it again when that clears.
	PhaseHeld Phase = "held"
	// PhaseActing: an action for it is claimed or under way.
	PhaseActing Phase = "acting"
	// PhaseActed: an action changed the target; for a firing problem the
	// engine waits for it to clear, and its undo is owed once it has.
	PhaseActed Phase = "acted"
	// PhaseSettled: nothing more is to be done unless news comes (no rule,
	// a dry run, a denial, not needed or not safe).
	PhaseSettled Phase = "settled"
	// PhaseFailed: its action or its whole ladder failed; a human is
	// needed, or news from the detector.
	PhaseFailed Phase = "failed"
)

// next reports whether a problem may go from phase p to q. Closing a
// problem (deleting its record) is allowed from every phase.
func (p Phase) next(q Phase) bool {
	if q == "" {
		return false
	}
	switch p {
	case "": // a problem seen for the first time
		return true
	case PhaseHeld:
		return true // re-held, acting, or settled without acting
	case PhaseActing:
		return q == PhaseActing || q == PhaseActed || q == PhaseFailed || q == PhaseSettled || q == PhaseHeld
	case PhaseActed:
		// An undo held back, a later rung acting, or the undo settling.
		return q == PhaseActed || q == PhaseHeld || q == PhaseActing || q == PhaseFailed || q == PhaseSettled
	case PhaseSettled, PhaseFailed:
		return true // news handled again
	}
	return false
}

// HoldKind names what holds a problem back.
type HoldKind string

// Kinds of holds that clear by themselves and re-drive the problem.
const (
	HoldBudget  HoldKind = "budget"     // the blast-radius budget has no slot (or is unknown)
	HoldRate    HoldKind = "rate_limit" // a rate limit's window has not passed (or Redis is away)
	HoldPause   HoldKind = "pause"      // a pause, the kill switch or a maintenance window
	HoldBreaker HoldKind = "breaker"    // the remediator's circuit breaker is open
)

// holdRefUnknown marks a budget hold of a budget that could not be
// computed (the node watch not synced, a node it does not know).
const holdRefUnknown = "unknown"

// Hold is what keeps an open problem's next step back.
type Hold struct {
	Kind HoldKind `json:"kind"`
	// Reason is the suppressed record's reason.
	Reason string `json:"reason"`
	// Since is when the problem was first held back; At when this hold
	// was recorded.
	Since time.Time `json:"since"`
	At    time.Time `json:"at"`
	// Until is when the hold ends by itself, where that is known (a rate
	// window, a breaker's half-open time, a pause's end).
	Until time.Time `json:"until,omitzero"`
	// Ref names the hold: the pause's id, the rate limit's key, the
	// breaker's remediator.
	Ref string `json:"ref,omitempty"`
}

// Problem is the record of one open problem.
type Problem struct {
	Target    string `json:"target"`
	ProblemID string `json:"problem"`
	// Status is the status of the latest news: firing or resolved.
	Status string `json:"status"`
	Phase  Phase  `json:"phase"`
	// Remediator is the remediator the latest decision named; Disruptive
	// says its ladder takes the target out of service, so a re-drive
	// waits for a budget slot whatever it was held for.
	Remediator string `json:"remediator,omitempty"`
	Disruptive bool   `json:"disruptive,omitempty"`
	// ActionID is the latest action taken for it; Acted says one changed
	// the target, so an undo is owed once the problem clears.
	ActionID string `json:"action_id,omitempty"`
	Acted    bool   `json:"acted,omitempty"`
	// ActingEvent is the event whose handling holds the open action
	// (PhaseActing): its later rungs and its redeliveries may act.
	ActingEvent string `json:"acting_event,omitempty"`
	Hold        *Hold  `json:"hold,omitempty"`
	// Event is the latest event handled for it, as published: what a
	// re-drive publishes again.
	Event json.RawMessage `json:"event"`
	// EventID is the id of that event; Redrives counts its re-drives.
	EventID  string    `json:"event_id"`
	Redrives int       `json:"redrives,omitempty"`
	Opened   time.Time `json:"opened"`
	Updated  time.Time `json:"updated"`
}

// problemKey is the key of a problem's record.
func problemKey(target, problemID string) string { return hashKey("prob.", target, problemID) }

// problems is the problems bucket with a cache of it, kept current by a
// watch: the engine reads a problem for every event without a round trip,
// and writes go to the bucket and the cache.
type problems struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu     sync.Mutex
	cache  map[string]cachedProblem
	synced bool
}

type cachedProblem struct {
	p   Problem
	rev uint64
	// gone marks a record this engine deleted, until the watch shows
	// the deletion: rev is the last revision it had.
	gone bool
}

func newProblems(kv jetstream.KeyValue, log *slog.Logger) *problems {
	return &problems{kv: kv, log: log, cache: map[string]cachedProblem{}}
}

// watch keeps the cache current until ctx ends, watching again after a
// failure. ready is closed once the bucket's current content is in.
func (ps *problems) watch(ctx context.Context, ready chan<- struct{}) {
	once := sync.OnceFunc(func() { close(ready) })
	defer once()
	for ctx.Err() == nil {
		err := ps.watchOnce(ctx, once)
		if ctx.Err() != nil {
			return
		}
		ps.log.WarnContext(ctx, "watch of open problems failed; reading the bucket instead, and watching again", "err", err)
		ps.mu.Lock()
		ps.synced = false
		ps.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (ps *problems) watchOnce(ctx context.Context, ready func()) error {
	w, err := ps.kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	// The bucket's current content replaces the cache in one go, so
	// that a record deleted while no watch ran does not linger.
	fresh := map[string]cachedProblem{}
	for {
		var entry jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch ended")
			}
			entry = e
		}
		switch {
		case entry == nil: // the bucket's current content is all in
			ps.mu.Lock()
			if fresh != nil {
				ps.cache, fresh = fresh, nil
			}
			ps.synced = true
			ps.mu.Unlock()
			ready()
		case fresh != nil:
			if c, ok := decodeEntry(ctx, ps.log, entry); ok && !c.gone {
				fresh[entry.Key()] = c
			}
		default:
			ps.apply(ctx, entry)
		}
	}
}

// apply brings the cache up to a watched entry. The watch delivers a key's
// changes in order, but this engine's own writes are in the cache before
// the watch shows them: an entry older than the cached one is stale.
func (ps *problems) apply(ctx context.Context, entry jetstream.KeyValueEntry) {
	c, ok := decodeEntry(ctx, ps.log, entry)
	if !ok {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	cur, ok := ps.cache[entry.Key()]
	switch {
	case ok && cur.rev >= c.rev:
		// Stale: this engine wrote a newer one (or deleted this one).
	case c.gone:
		delete(ps.cache, entry.Key()) // nothing older comes after a delete
	default:
		ps.cache[entry.Key()] = c
	}
}

// decodeEntry reads a watched entry; a deletion comes back gone.
func decodeEntry(ctx context.Context, log *slog.Logger, entry jetstream.KeyValueEntry) (cachedProblem, bool) {
	c := cachedProblem{rev: entry.Revision(), gone: entry.Operation() != jetstream.KeyValuePut}
	if !c.gone {
		if err := json.Unmarshal(entry.Value(), &c.p); err != nil {
			log.WarnContext(ctx, "unreadable open-problem record ignored", "key", entry.Key(), "err", err)
			return c, false
		}
	}
	return c, true
}

// get returns the problem's record (nil when it is not open) and its
// revision: from the cache while the watch is current, else from the
// bucket.
func (ps *problems) get(ctx context.Context, key string) (*Problem, uint64, error) {
	ps.mu.Lock()
	if ps.synced {
		c, ok := ps.cache[key]
		ps.mu.Unlock()
		if !ok || c.gone {
			return nil, 0, nil
		}
		p := c.p
		return &p, c.rev, nil
	}
	ps.mu.Unlock()
	return ps.read(ctx, key)
}

// read returns the problem's record from the bucket itself.
func (ps *problems) read(ctx context.Context, key string) (*Problem, uint64, error) {
	p, rev, err := getJSON[Problem](ctx, ps.kv, key)
	if err != nil {
		return nil, 0, err
	}
	return p, rev, nil
}

// put writes the problem's record.
func (ps *problems) put(ctx context.Context, key string, p *Problem) error {
	rev, err := putJSONRev(ctx, ps.kv, key, p)
	if err != nil {
		return err
	}
	ps.remember(key, p, rev)
	return nil
}

// claim writes the problem's record only if it is still at revision rev
// (0: only if there is none).
func (ps *problems) claim(ctx context.Context, key string, p *Problem, rev uint64) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if rev == 0 {
		rev, err = ps.kv.Create(ctx, key, b)
	} else {
		rev, err = ps.kv.Update(ctx, key, b, rev)
	}
	if err != nil {
		return err
	}
	ps.remember(key, p, rev)
	return nil
}

// remember puts what this engine wrote in the cache, unless the watch
// already brought something newer.
func (ps *problems) remember(key string, p *Problem, rev uint64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if cur, ok := ps.cache[key]; !ok || cur.rev < rev {
		ps.cache[key] = cachedProblem{p: *p, rev: rev}
	}
}

// close deletes the problem's record: it is no longer open.
func (ps *problems) close(ctx context.Context, key string) error {
	if err := ps.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: close problem %s: %w", errTransient, key, err)
	}
	ps.mu.Lock()
	if c, ok := ps.cache[key]; ok {
		ps.cache[key] = cachedProblem{rev: c.rev, gone: true}
	}
	ps.mu.Unlock()
	return nil
}

// held returns the held problems, with their keys and revisions, from the
// cache; ok is false while the cache is not current.
func (ps *problems) held() (out []heldProblem, ok bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.synced {
		return nil, false
	}
	for k, c := range ps.cache {
		if !c.gone && c.p.Phase == PhaseHeld && c.p.Hold != nil {
			out = append(out, heldProblem{key: k, rev: c.rev, p: c.p})
		}
	}
	return out, true
}

// waitingAhead counts the problems held back for the budget that opened
// before the one with key (mine, nil when it is not open yet, opening at
// now), and so go first when a slot frees.
func (ps *problems) waitingAhead(key string, mine *Problem, now time.Time) int {
	opened := now
	if mine != nil {
		opened = mine.Opened
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := 0
	for k, c := range ps.cache {
		p := &c.p
		if c.gone || k == key || p.Phase != PhaseHeld || p.Hold == nil || p.Hold.Kind != HoldBudget || p.Hold.Ref == holdRefUnknown ||
			!p.Disruptive || p.Status != bus.StatusFiring {
			continue
		}
		if p.Opened.Before(opened) || p.Opened.Equal(opened) && k < key {
			n++
		}
	}
	return n
}

type heldProblem struct {
	key string
	rev uint64
	p   Problem
}

// event decodes the problem's latest event.
func (p *Problem) event() (*bus.Event, error) { return bus.DecodeEvent(p.Event) }

// settleProblem writes what the run did to its problem, before the event
// is acked: held back (and by what), acting, acted, failed or settled, or
// closed once it has cleared and nothing is owed.
func (e *Engine) settleProblem(ctx context.Context, r *run) error {
	if r.quiet || r.unchanged || r.problemKey == "" {
		return nil
	}
	old := r.problem
	closed := r.closing || (r.ev.Resolved() && r.hold == nil && !r.reopened)
	if closed {
		if old == nil {
			return nil
		}
		return e.problems.close(ctx, r.problemKey)
	}
	next := e.nextProblem(r, old)
	if r.acted {
		next.ActionID, next.Acted = r.actionID, true
	}
	var phase Phase
	switch {
	case r.hold != nil:
		h := *r.hold
		h.Since = h.At
		if old != nil && old.Phase == PhaseHeld && old.Hold != nil {
			h.Since = old.Hold.Since
		}
		next.Hold, phase = &h, PhaseHeld
		if r.ev.Trigger == bus.TriggerRedrive {
			next.Redrives++
		}
	case r.reopened:
		next.Status, phase = bus.StatusFiring, PhaseActed
	case r.failed || r.stepFailed:
		phase = PhaseFailed
	case r.acted:
		phase = PhaseActed
	default:
		phase = PhaseSettled
		if old != nil && old.Acted && old.Phase == PhaseActed {
			phase = PhaseActed // nothing more done; what was done stands
		}
	}
	if phase != PhaseHeld {
		next.Hold = nil
	}
	if old != nil && !old.Phase.next(phase) {
		e.Log.WarnContext(ctx, "open problem changes phase unexpectedly", "target", next.Target, "from", old.Phase, "to", phase)
	}
	if old == nil && phase == PhaseSettled {
		// Nothing held, nothing done, nothing owed: no record. The event's
		// outcome, written next, settles its re-assertions.
		return nil
	}
	next.Phase = phase
	next.ActingEvent = ""
	return e.problems.put(ctx, r.problemKey, &next)
}

// claimProblem marks the run's problem acting, just before its action is
// claimed, with a compare-and-set on its record: of two replicas acting on
// the problem's news at once, one does. It returns why not to act when
// another action is open for the problem.
func (e *Engine) claimProblem(ctx context.Context, r *run) (string, error) {
	p, rev, err := e.problems.read(ctx, r.problemKey)
	if err != nil {
		return "", err
	}
	if p != nil && p.Status == bus.StatusFiring && p.Phase == PhaseActing && p.ActingEvent != r.ev.ID {
		return fmt.Sprintf("problem already handled: %s action %s is %s", p.Remediator, p.ActionID, p.Phase), nil
	}
	next := e.nextProblem(r, p)
	next.Phase, next.Hold, next.ActionID, next.ActingEvent = PhaseActing, nil, r.actionID, r.ev.ID
	if err := e.problems.claim(ctx, r.problemKey, &next, rev); err != nil {
		return "", fmt.Errorf("%w: mark problem of %s acting: %w", errTransient, r.ev.Subject, err)
	}
	r.problem = &next
	return "", nil
}

// nextProblem is the problem's record (old, or a new one) with the run's
// event and decision in it.
func (e *Engine) nextProblem(r *run, old *Problem) Problem {
	now := e.now()
	next := Problem{Target: r.ev.Subject, ProblemID: r.ev.ProblemID(), Opened: now}
	if old != nil {
		next = *old
	}
	next.Status, next.Event, next.EventID, next.Updated = r.ev.Status, r.msg.Data(), r.ev.ID, now
	if r.decision.Remediator != "" {
		next.Remediator, next.Disruptive = r.decision.Remediator, e.disruptive(r.decision)
	}
	return next
}

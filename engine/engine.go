package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/policies"
	"github.com/selfheal/healer/remediators"
)

// Actor is how the engine signs its audit records.
const Actor = "healer/engine"

// Approver asks humans to approve an action. The engine fails closed when
// a decision needs approval and no approver is configured.
type Approver interface {
	// Approve blocks until the action is approved, denied or the request
	// expires.
	Approve(ctx context.Context, req ApprovalRequest) (Approval, error)
}

// Approval is the humans' answer.
type Approval struct {
	// Approved is false when denied or expired; Reason says which.
	Approved bool
	Reason   string
	// By names the humans who approved; remediators that need a human's
	// consent for a step (a forced drain) see them.
	By []string
}

// ApprovalRequest is what an approver is asked.
type ApprovalRequest struct {
	// Key is the action's idempotency key: the same for every delivery
	// of the event, so an approver can find a request it already stored.
	Key        string
	ActionID   string
	EventID    string
	Target     string
	Remediator string
	// Approvals is how many different people must approve (1 or 2).
	Approvals int
	// Reason and Rule are the policy's; Params are the remediator's.
	Reason string
	Rule   string
	Params map[string]any
	// Runbook is the remediator's runbook path; Budget the blast-radius
	// state when asked (empty when the action is not disruptive).
	Runbook string
	Budget  string
	// Requester is the person who asked for the action, when the event
	// names one (data.requested_by, or an alert's requested_by
	// annotation or label); that person may not approve it.
	Requester string
}

// Notice is something people should hear about although no action failed:
// a circuit breaker opened, the blast-radius budget ran out.
type Notice struct {
	// Kind is NoticeBreakerOpen or NoticeBudgetExhausted.
	Kind       string
	Remediator string
	Target     string
	Text       string
	// Runbook is the path of the runbook that says what to do.
	Runbook string
}

// Kinds of notices.
const (
	NoticeBreakerOpen     = "breaker.open"
	NoticeBudgetExhausted = "budget.exhausted"
)

// Notifier tells people (a chat channel) about notices. Notify must not
// block for long; it may drop repeats.
type Notifier interface {
	Notify(ctx context.Context, n Notice)
}

// Deps are the parts the engine works with.
type Deps struct {
	JS       jetstream.JetStream
	Streams  *bus.Streams
	Trail    *audit.Trail
	Policies *policies.Holder
	// Shadow, when set, holds candidate policies decided beside the live
	// ones; differences are audited, never acted on.
	Shadow      *policies.Holder
	Remediators remediators.Set
	Limiter     guard.Limiter
	// Budget is nil when Kubernetes is not configured; disruptive actions
	// are then refused.
	Budget   *guard.Budget
	Breakers *guard.Breakers
	// Pauses, when set, hold remediations back by scope and time (pauses,
	// the kill switch, maintenance windows).
	Pauses *guard.Pauses
	// Approver is nil when no approval channel is configured.
	Approver Approver
	// Notifier, when set, hears about an exhausted budget.
	Notifier Notifier
	Metrics  *Metrics
	// Tracer, when set, traces each event (continuing the trace its
	// message carries), each stage and each remediator step.
	Tracer trace.Tracer
	Log    *slog.Logger
}

// Engine consumes events and runs the pipeline for each.
type Engine struct {
	cfg Config
	Deps
	now func() time.Time

	// instance names this engine in action leases.
	instance string
	// stopping is closed when Run's context ends: a wait for people
	// (approval) then ends at once, while actions get ShutdownGrace.
	stopping <-chan struct{}

	// late is the cause of a decision cut off by DecisionTimeout.
	late error

	// actions holds a token per remediator step running (MaxActions).
	actions chan struct{}

	recentMu sync.Mutex
	recent   map[string][]policies.RecentAction

	// problems are the open problems, shared by every replica.
	problems *problems
}

// New returns an engine; cfg gets its defaults applied and is validated.
func New(cfg Config, deps Deps) (*Engine, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var missing []string
	for name, ok := range map[string]bool{
		"JS": deps.JS != nil, "Streams": deps.Streams != nil, "Trail": deps.Trail != nil,
		"Policies": deps.Policies != nil, "Limiter": deps.Limiter != nil, "Breakers": deps.Breakers != nil,
		"Log": deps.Log != nil,
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("engine: missing dependencies %v", missing)
	}
	if deps.Streams.Problems == nil {
		return nil, errors.New("engine: missing the open problems bucket (Streams.Problems)")
	}
	if deps.Metrics == nil {
		deps.Metrics = NopMetrics()
	}
	if deps.Tracer == nil {
		deps.Tracer = noop.NewTracerProvider().Tracer("")
	}
	return &Engine{
		cfg: cfg, Deps: deps, now: time.Now, instance: newActionID()[4:], late: lateDecision{limit: cfg.DecisionTimeout},
		actions: make(chan struct{}, cfg.MaxActions), recent: map[string][]policies.RecentAction{},
		problems: newProblems(deps.Streams.Problems, deps.Log),
	}, nil
}

// Instance names this engine among the replicas sharing the work: it is
// the holder written into action and target leases.
func (e *Engine) Instance() string { return e.instance }

// Run consumes events until ctx ends. It then stops taking new events,
// gives the ones in hand up to ShutdownGrace to finish, and hands the rest
// back to JetStream for redelivery, so no event is lost.
func (e *Engine) Run(ctx context.Context) error {
	cons, err := e.Streams.Events.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       bus.ConsumerEngine,
		Description:   "healer engine: events to decisions and actions",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       e.cfg.AckWait,
		MaxDeliver:    -1, // the engine counts attempts itself and audits giving up
		MaxAckPending: e.cfg.Workers * 64,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: bus.SubjectEvents + ".>",
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("engine: create consumer %s: %w", bus.ConsumerEngine, err)
	}
	// Two events buffered per worker keep every worker fed (eight gave
	// no more throughput) and bound what a crashed replica leaves to be
	// redelivered only after AckWait.
	it, err := cons.Messages(jetstream.PullMaxMessages(e.cfg.Workers * 2))
	if err != nil {
		return fmt.Errorf("engine: consume %s: %w", bus.ConsumerEngine, err)
	}

	// Work done for an event may outlive ctx by ShutdownGrace, so that an
	// action in progress is finished and audited rather than cut off.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	e.stopping = ctx.Done()

	var wg sync.WaitGroup
	// The open problems: a watch keeps this replica's view of them
	// current (until then, each is read from the bucket), and the
	// redriver publishes again those whose hold has cleared.
	problemsReady := make(chan struct{})
	go e.problems.watch(workCtx, problemsReady) // ends with the work, after the last event
	select {
	case <-problemsReady:
	case <-time.After(10 * time.Second):
		e.Log.WarnContext(ctx, "engine: open problems not loaded within 10s; reading each from the bucket meanwhile")
	case <-ctx.Done():
	}
	wg.Go(func() { e.runRedriver(ctx) })
	d := newDispatcher(e.cfg.Workers)
	handle := func(m jetstream.Msg) {
		if ctx.Err() != nil {
			_ = m.Nak() // shutting down: hand it back for redelivery
			return
		}
		e.handle(workCtx, m, d)
	}
	d.start = func(subject string) { wg.Go(func() { d.work(subject, handle) }) }
	wg.Go(func() { d.keepAlive(ctx, e.cfg.AckWait/3) })
	go func() {
		<-ctx.Done()
		// Drain, not Stop: messages already pulled into the client's
		// buffer still come out of Next, and are handed back (Nak) for
		// redelivery at once instead of after AckWait.
		it.Drain()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				break
			}
			e.Log.WarnContext(ctx, "engine: next event", "err", err)
			continue
		}
		d.enqueue(m)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.cfg.ShutdownGrace):
		e.Log.Warn("engine: shutdown grace over; unfinished events will be redelivered", "grace", e.cfg.ShutdownGrace)
		cancelWork()
		<-done
	}
	return nil
}

// dispatcher runs events concurrently across problems and in order within
// one problem (one subject), at most workers at a time. Every message it
// holds, waiting or running, is kept alive with in-progress acks, so a slow
// action never makes JetStream redeliver the events queued behind it.
//
// A goroutine runs only while it holds one of the workers' slots. A
// subject that finds every slot taken waits in line, and the goroutine
// that finishes a subject goes on with the next one in line instead of
// ending: under load a few long-lived goroutines do the work, where one
// new goroutine per event would grow a fresh stack for each (a tenth of
// the CPU of a dry run went to copying stacks).
type dispatcher struct {
	workers int
	// start runs work(subject, …) on a new goroutine, which holds a slot.
	start func(subject string)

	mu sync.Mutex
	// busy counts the slots taken; reacquiring the handlers back from
	// waiting for people (see yield) that wait for a slot, signalled on
	// free. They go before the subjects in line.
	busy        int
	reacquiring int
	free        *sync.Cond
	line        []string                   // subjects with messages and no goroutine, oldest first
	queues      map[string][]jetstream.Msg // subject -> messages, head is next or running
	inHand      map[jetstream.Msg]struct{}
}

func newDispatcher(workers int) *dispatcher {
	d := &dispatcher{workers: workers, queues: map[string][]jetstream.Msg{}, inHand: map[jetstream.Msg]struct{}{}}
	d.free = sync.NewCond(&d.mu)
	return d
}

// enqueue queues m behind the other messages of its subject; a subject
// that had none gets in line for a slot.
func (d *dispatcher) enqueue(m jetstream.Msg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inHand[m] = struct{}{}
	// A re-drive or re-assertion goes in line with its problem's news.
	subject := bus.ProblemSubject(m.Subject())
	q := d.queues[subject]
	d.queues[subject] = append(q, m)
	if len(q) == 0 {
		d.line = append(d.line, subject)
		d.fill()
	}
}

// fill starts goroutines for the subjects in line while slots are free and
// no handler waits to take one back. d.mu is held.
func (d *dispatcher) fill() {
	for d.busy < d.workers && d.reacquiring == 0 && len(d.line) > 0 {
		d.busy++
		d.start(d.next())
	}
}

// next takes the first subject in line. d.mu is held.
func (d *dispatcher) next() string {
	s := d.line[0]
	d.line[0] = ""
	d.line = d.line[1:]
	return s
}

// work drains subject and then, keeping its slot, the subjects in line,
// until there are none or a handler waits to take a slot back.
func (d *dispatcher) work(subject string, handle func(jetstream.Msg)) {
	for {
		d.drain(subject, handle)
		d.mu.Lock()
		if d.reacquiring > 0 || len(d.line) == 0 {
			d.busy--
			d.free.Signal()
			d.mu.Unlock()
			return
		}
		subject = d.next()
		d.mu.Unlock()
	}
}

// drain handles the subject's messages in order until its queue is empty.
func (d *dispatcher) drain(subject string, handle func(jetstream.Msg)) {
	for {
		d.mu.Lock()
		m := d.queues[subject][0]
		d.mu.Unlock()
		handle(m)
		d.mu.Lock()
		delete(d.inHand, m)
		q := d.queues[subject][1:]
		if len(q) == 0 {
			delete(d.queues, subject)
			d.mu.Unlock()
			return
		}
		d.queues[subject] = q
		d.mu.Unlock()
	}
}

// yield gives the calling handler's slot to other events.
func (d *dispatcher) yield() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.busy--
	if d.reacquiring > 0 {
		d.free.Signal()
	}
	d.fill()
}

// reacquire takes a slot again after yield, blocking until one is free.
func (d *dispatcher) reacquire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reacquiring++
	for d.busy >= d.workers {
		d.free.Wait()
	}
	d.reacquiring--
	d.busy++
	// Slots given back while several handlers waited may outnumber them.
	d.fill()
}

// workerSlot is the slot of the dispatcher's workers an event is handled
// in: a stage waiting for people or for an action slot gives it to other
// events meanwhile (yield), and takes one again before going on
// (reacquire, blocking until one is free).
type workerSlot interface {
	yield()
	reacquire()
}

// yieldSlot gives the run's worker slot to other events, and returns the
// function that takes a slot again.
func (r *run) yieldSlot() (reacquire func()) {
	r.worker.yield()
	return r.worker.reacquire
}

// keepAlive sends in-progress acks for every message in hand until ctx ends.
func (d *dispatcher) keepAlive(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		held := make([]jetstream.Msg, 0, len(d.inHand))
		for m := range d.inHand {
			held = append(held, m)
		}
		d.mu.Unlock()
		for _, m := range held {
			_ = m.InProgress()
		}
	}
}

// audit appends a record with the engine's common fields filled in, after
// the run's pending records and in the same group commit, and records in
// the event's state what those were (see flush).
func (e *Engine) audit(ctx context.Context, r *run, kind audit.Kind, details json.RawMessage) error {
	e.auditLater(ctx, r, kind, details)
	return e.flush(ctx, r)
}

// auditLater queues a record, with the engine's common fields and the time
// of the step, to be appended with the run's next one or when the event
// settles. An event that settles without acting (a duplicate, a dry run,
// a guard saying no) thus costs one group commit for its event, decision
// and suppressed records instead of one round trip each.
func (e *Engine) auditLater(ctx context.Context, r *run, kind audit.Kind, details json.RawMessage) {
	r.pending = append(r.pending, e.record(ctx, r, kind, details))
}

// record returns a record of the run with the engine's common fields and
// the time of the step.
func (e *Engine) record(ctx context.Context, r *run, kind audit.Kind, details json.RawMessage) audit.Record {
	rec := audit.Record{
		Time:       time.Now(),
		Kind:       kind,
		EventID:    r.ev.ID,
		Target:     r.ev.Subject,
		Remediator: r.remName,
		Actor:      Actor,
		ActionID:   r.actionID,
		Details:    details,
	}
	if r.policy != nil {
		rec.PolicyRevision = r.policy.Revision
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		rec.TraceID = sc.TraceID().String()
	}
	return rec
}

// flush appends the run's pending records and then, when the event's or
// its decision's record was among them, writes the event's state
// (received, with the decision's digest), so that a later attempt does not
// audit them again. It runs before the engine does anything a crash must
// not leave unaudited or repeat: asking people, claiming an action.
func (e *Engine) flush(ctx context.Context, r *run) error {
	if err := e.appendPending(ctx, r); err != nil {
		return err
	}
	if !r.stateDue {
		return nil
	}
	if err := putJSON(ctx, e.Streams.Actions, eventKey(r.ev.ID), eventState{State: "received", Time: e.now(), Decision: r.decided}); err != nil {
		return err
	}
	r.stateDue = false
	return nil
}

// appendPending appends the run's pending records in one group commit.
// When that fails they are dropped and the event's state is left as it
// was: the redelivery makes them again (some may have been stored; the
// trail then shows them twice, never not at all).
func (e *Engine) appendPending(ctx context.Context, r *run) error {
	if len(r.pending) == 0 {
		return nil
	}
	recs := r.pending
	r.pending = nil
	if _, err := e.Trail.AppendAll(ctx, recs...); err != nil {
		r.stateDue = false
		return fmt.Errorf("%w: %w", errTransient, err)
	}
	return nil
}

// errTransient marks failures worth retrying by redelivery (audit stream,
// API server or key-value store unreachable).
var errTransient = errors.New("transient")

// errStopping ends a wait (for people, for an action slot) when the engine
// stops; the event is handed back without using an attempt.
var errStopping = errors.New("engine stopping")

// Key-value state. Keys are hashed so any event id or target is a valid key.

type eventState struct {
	State string    `json:"state"` // received, done, suppressed
	Time  time.Time `json:"time"`
	// Decision is a digest of the last decision audited for the event, so
	// a retry that decides the same does not audit it again.
	Decision string `json:"decision,omitempty"`
}

type actionState struct {
	ActionID string      `json:"action_id"`
	State    actionPhase `json:"state"`
	Step     string      `json:"step"` // act, undo
	Time     time.Time   `json:"time"`
	// Holder is the engine instance working on a claimed or started
	// action; Renewed is when it last said so. Another instance takes the
	// action over only once the lease has run out (AckWait).
	Holder  string    `json:"holder,omitempty"`
	Renewed time.Time `json:"renewed,omitzero"`
}

// lease is a claimed or started action this instance holds, with the
// bucket revision last written, so a renewal never overwrites a newer state.
type lease struct {
	key string
	st  actionState
	rev uint64
}

func hashKey(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return prefix + hex.EncodeToString(h.Sum(nil)[:20])
}

func eventKey(eventID string) string { return hashKey("ev.", eventID) }

// idempotencyKey names one action: this event, this remediator, this target.
func idempotencyKey(eventID, remediator, target string) string {
	return hashKey("act.", eventID, remediator, target)
}

func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (*T, uint64, error) {
	entry, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read state %s: %w", errTransient, key, err)
	}
	var v T
	if err := json.Unmarshal(entry.Value(), &v); err != nil {
		return nil, entry.Revision(), fmt.Errorf("decode state %s: %w", key, err)
	}
	return &v, entry.Revision(), nil
}

func putJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) error {
	_, err := putJSONRev(ctx, kv, key, v)
	return err
}

func putJSONRev(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Put(ctx, key, b)
	if err != nil {
		return 0, fmt.Errorf("%w: write state %s: %w", errTransient, key, err)
	}
	return rev, nil
}

func newActionID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "act-" + hex.EncodeToString(b)
}

// remember records an action for the policy input of later events.
func (e *Engine) remember(target string, a policies.RecentAction) {
	e.recentMu.Lock()
	defer e.recentMu.Unlock()
	list := append([]policies.RecentAction{a}, e.recent[target]...)
	if len(list) > 10 {
		list = list[:10]
	}
	e.recent[target] = list
}

func (e *Engine) recentFor(target string, now time.Time) []policies.RecentAction {
	e.recentMu.Lock()
	defer e.recentMu.Unlock()
	var out []policies.RecentAction
	for _, a := range e.recent[target] {
		if now.Sub(a.Time) <= 24*time.Hour {
			out = append(out, a)
		}
	}
	return out
}

// stateJSON encodes an action state. The type holds only strings and
// times, which always encode.
func stateJSON(st actionState) []byte {
	b, _ := json.Marshal(st)
	return b
}

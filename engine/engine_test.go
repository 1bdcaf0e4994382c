package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/bus/bustest"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/policies"
	"github.com/selfheal/healer/remediators"
)

// testPolicy maps event types to the test remediators.
const testPolicy = `package healer

import rego.v1

decision := {"remediator": "test.count", "approval": "none", "reason": "count it"} if {
	input.event.type == "Count"
}

decision := {"remediator": "test.count", "approval": "one", "reason": "needs a human"} if {
	input.event.type == "NeedsApproval"
}

decision := {"approval": "none", "reason": "escalate until it clears", "steps": [
	{"remediator": "test.count", "wait": "1s"},
	{"remediator": "test.second", "wait": "1s"},
]} if {
	input.event.type == "Ladder"
	input.event.status == "firing"
}

decision := {"approval": "none", "reason": "long first rung", "steps": [
	{"remediator": "test.count", "wait": "30s"},
	{"remediator": "test.second", "wait": "1s"},
]} if {
	input.event.type == "SlowLadder"
	input.event.status == "firing"
}

decision := {"remediator": "test.count", "approval": "none", "reason": "limited",
	"rate_limit": {"key": "count", "max": 1, "per": "1h"}} if {
	input.event.type == "Limited"
}

decision := {"remediator": "test.count", "approval": "none", "reason": "limited briefly",
	"rate_limit": {"key": "brief", "max": 1, "per": "2s"}} if {
	input.event.type == "Brief"
}

# Tens of seconds of evaluation, in little memory: far past any deadline.
decision := {"remediator": "test.count", "approval": "none", "reason": "slow"} if {
	input.event.type == "Slow"
	count([1 | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000); i * j < 0]) == 0
}
`

// counter is a test remediator that records every call, so tests can
// prove how often the engine acted. It is not disruptive, so the budget
// does not apply.
type counter struct {
	mu    sync.Mutex
	acts  []string // action ids
	undos []string
	// approvers seen by the last act
	approvers []string
	failAct   error
	slow      time.Duration
	// panicAct and panicValidate, when set, are panicked with by Act
	// and Validate.
	panicAct      any
	panicValidate any
	// gate, when set, holds the acts on gateTarget until it is closed;
	// running and maxRunning count the acts in progress.
	gate       chan struct{}
	gateTarget string
	running    int
	maxRunning int
}

func (c *counter) Info() action.Info {
	return action.Info{Name: "test.count", Summary: "counts", TargetKind: "node"}
}
func (c *counter) Validate(map[string]any) error {
	c.mu.Lock()
	v := c.panicValidate
	c.mu.Unlock()
	if v != nil {
		panic(v)
	}
	return nil
}
func (c *counter) Check(context.Context, action.Request) error  { return nil }
func (c *counter) Verify(context.Context, action.Request) error { return nil }
func (c *counter) Act(ctx context.Context, req action.Request, _ action.Progress) (action.Result, error) {
	c.mu.Lock()
	if v := c.panicAct; v != nil {
		c.mu.Unlock()
		panic(v)
	}
	c.running++
	c.maxRunning = max(c.maxRunning, c.running)
	gate := c.gate
	if req.Target != c.gateTarget {
		gate = nil
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
	}()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return action.Result{}, ctx.Err()
		}
	}
	if c.slow > 0 {
		select {
		case <-time.After(c.slow):
		case <-ctx.Done():
			return action.Result{}, ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAct != nil {
		return action.Result{}, c.failAct
	}
	c.acts = append(c.acts, req.ID)
	c.approvers = req.Approvers
	return action.Result{Changed: true, Message: "counted"}, nil
}
func (c *counter) Undo(_ context.Context, req action.Request) (action.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.undos = append(c.undos, req.ID)
	return action.Result{Changed: true, Message: "uncounted"}, nil
}
func (c *counter) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acts), len(c.undos)
}

// second is another test remediator, for the second rung of a ladder.
type second struct{ *counter }

func (s *second) Info() action.Info {
	return action.Info{Name: "test.second", Summary: "counts too", TargetKind: "node"}
}

type harness struct {
	t       testing.TB
	srv     *bustest.Server
	js      jetstream.JetStream
	streams *bus.Streams
	trail   *audit.Trail
	rem     *counter
	eng     *Engine
	cancel  context.CancelFunc
	done    chan error
}

func newHarness(t testing.TB, cfg Config, approver Approver) *harness {
	t.Helper()
	srv := bustest.Start(t)
	js, streams := srv.JS, srv.Streams(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.rego"), []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := policies.Load(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rem := &counter{}
	cfg.RetryDelay = 50 * time.Millisecond
	eng, err := New(cfg, Deps{
		JS: js, Streams: streams, Trail: audit.NewTrail(js, log), Policies: policies.NewHolder(pol),
		Remediators: remediators.Set{"test.count": rem, "test.second": &second{counter: &counter{}}}, Limiter: guard.NewLocal(),
		Breakers: guard.NewBreakers(cfg.Breaker, log, nil), Approver: approver, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, js: js, streams: streams, trail: eng.Trail, rem: rem, eng: eng}
	h.start()
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(h.t.Context())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.eng.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("engine.Run: %v", err)
	}
	h.cancel = nil
}

var seq atomic.Int64

func event(typ, target, status string) *bus.Event {
	n := seq.Add(1)
	return &bus.Event{
		SpecVersion: bus.SpecVersion, ID: fmt.Sprintf("ev-%d", n), Source: "test", Type: typ,
		Subject: target, Time: time.Now().UTC(), Status: status, Key: "k-" + target,
	}
}

// publish stores e with an explicit message id, so tests can get past
// JetStream's own duplicate window the way a late resend would.
func (h *harness) publish(e *bus.Event, msgID string) {
	h.t.Helper()
	msg, err := bus.Message(e)
	if err != nil {
		h.t.Fatal(err)
	}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := h.js.PublishMsg(h.t.Context(), msg); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) recordsFor(eventID string) []audit.Record {
	h.t.Helper()
	recs, err := h.trail.Query(h.t.Context(), audit.Filter{EventID: eventID, Limit: 1000})
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}

func (h *harness) waitKinds(eventID string, want ...string) []audit.Record {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := h.recordsFor(eventID)
		got := kinds(recs)
		if slices.Equal(got, want) {
			return recs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("event %s: audit kinds %v, want %v", eventID, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaveStarted leaves e's test.count action started, as a replica that
// died mid-action would.
func (h *harness) leaveStarted(e *bus.Event, actionID string) {
	h.t.Helper()
	if err := putJSON(h.t.Context(), h.streams.Actions, idempotencyKey(e.ID, "test.count", e.Subject),
		actionState{ActionID: actionID, State: "started", Step: "act", Time: time.Now()}); err != nil {
		h.t.Fatal(err)
	}
}

func detail(r audit.Record, key string) string {
	var m map[string]any
	_ = json.Unmarshal(r.Details, &m)
	return fmt.Sprint(m[key])
}

func TestRedeliveredEventNeverActsTwice(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	e := event("Count", "node/a", bus.StatusFiring)
	h.publish(e, "first")
	h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished", "verified")
	// The same event again, past JetStream's duplicate window.
	h.publish(e, "second")
	recs := h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished", "verified", "suppressed")
	if r := detail(recs[5], "reason"); !strings.Contains(r, "duplicate") {
		t.Errorf("second copy suppressed for %q, want duplicate", r)
	}
	if acts, _ := h.rem.counts(); acts != 1 {
		t.Fatalf("acted %d times, want 1", acts)
	}
}

func TestResumesClaimedActionWithSameID(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	h.stop()
	e := event("Count", "node/b", bus.StatusFiring)
	// A previous replica claimed and started the action, then died.
	h.leaveStarted(e, "act-crashed")
	h.start()
	h.publish(e, "m1")
	recs := h.waitKinds(e.ID, "event", "decision", "action.finished", "verified")
	if recs[2].ActionID != "act-crashed" {
		t.Errorf("resumed under action id %q, want act-crashed", recs[2].ActionID)
	}
	h.rem.mu.Lock()
	defer h.rem.mu.Unlock()
	if !slices.Equal(h.rem.acts, []string{"act-crashed"}) {
		t.Fatalf("acts = %v, want the crashed action resumed once", h.rem.acts)
	}
}

func TestLiveLeaseOfAnotherEngineIsRespected(t *testing.T) {
	h := newHarness(t, Config{AckWait: 5 * time.Second}, nil)
	h.stop()
	e := event("Count", "node/l", bus.StatusFiring)
	// Another engine instance is acting on this very event right now.
	if err := putJSON(t.Context(), h.streams.Actions, idempotencyKey(e.ID, "test.count", e.Subject),
		actionState{ActionID: "act-other", State: "started", Step: "act", Time: time.Now(), Holder: "other-engine", Renewed: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.publish(e, e.ID)
	time.Sleep(time.Second)
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Fatal("acted while another engine held the action's lease")
	}
	// The other engine never renews (it died): after the lease runs out
	// this engine takes the action over, under the same id.
	h.waitKinds(e.ID, "event", "decision", "action.finished", "verified")
	h.rem.mu.Lock()
	defer h.rem.mu.Unlock()
	if !slices.Equal(h.rem.acts, []string{"act-other"}) {
		t.Fatalf("acts = %v", h.rem.acts)
	}
}

func TestLadderEscalatesUntilTheProblemClears(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	sec := h.eng.Remediators["test.second"].(*second)

	// The problem never clears: both rungs run, then the ladder gives up.
	e := event("Ladder", "node/x1", bus.StatusFiring)
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision",
		"action.started", "action.finished", "verified", "action.progress",
		"action.started", "action.finished", "verified", "action.failed")
	if recs[2].Remediator != "test.count" || recs[6].Remediator != "test.second" {
		t.Errorf("rungs ran as %s then %s", recs[2].Remediator, recs[6].Remediator)
	}
	if detail(recs[5], "to") != "test.second" || !strings.Contains(detail(recs[9], "error"), "persists after all 2 steps") {
		t.Errorf("escalation %s, end %s", recs[5].Details, recs[9].Details)
	}

	// The problem clears during the first rung's wait: no escalation.
	e2 := event("Ladder", "node/x2", bus.StatusFiring)
	h.publish(e2, e2.ID)
	h.waitKinds(e2.ID, "event", "decision", "action.started", "action.finished", "verified")
	resolved := *e2
	resolved.ID, resolved.Status = e2.ID+"-resolved", bus.StatusResolved
	h.publish(&resolved, resolved.ID)
	recs = h.waitKinds(e2.ID, "event", "decision", "action.started", "action.finished", "verified", "verified")
	if detail(recs[5], "problem") != "cleared" {
		t.Errorf("last record %s, want the problem cleared", recs[5].Details)
	}
	time.Sleep(1500 * time.Millisecond) // past the first rung's wait
	if acts, _ := sec.counts(); acts != 1 {
		t.Fatalf("second rung ran %d times, want once (for x1 only)", acts)
	}
}

func TestLadderResumesAtTheUnfinishedStep(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	h.stop()
	sec := h.eng.Remediators["test.second"].(*second)
	e := event("SlowLadder", "node/x3", bus.StatusFiring)
	// A crashed engine had finished the first rung 31 seconds ago (its
	// wait of 30s is over) and not started the second. Waiting the first
	// rung's 30s again would miss waitKinds' 10s deadline.
	if err := putJSON(t.Context(), h.streams.Actions, idempotencyKey(e.ID, "test.count", e.Subject),
		actionState{ActionID: "act-rung0", State: "finished", Step: "act", Time: time.Now().Add(-31 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "action.progress", "action.started", "action.finished", "verified", "action.failed")
	if recs[3].Remediator != "test.second" {
		t.Errorf("resumed with %s, want the second rung", recs[3].Remediator)
	}
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Errorf("the finished first rung ran again (%d times)", acts)
	}
	if acts, _ := sec.counts(); acts != 1 {
		t.Errorf("second rung ran %d times", acts)
	}
}

// handledWhileWaiting proves a worker is free: an event on target is
// handled to the end.
func (h *harness) handledWhileWaiting(target string) {
	h.t.Helper()
	other := event("Count", target, bus.StatusFiring)
	h.publish(other, other.ID)
	h.waitKinds(other.ID, "event", "decision", "action.started", "action.finished", "verified")
}

// stopsAtOnce stops the engine and fails if that waited for the shutdown
// grace because of what (the harness's tests set a grace of a minute).
func (h *harness) stopsAtOnce(what string) {
	h.t.Helper()
	start := time.Now()
	h.stop()
	if took := time.Since(start); took > 10*time.Second {
		h.t.Fatalf("shutdown took %s with %s: the wait held it for the grace", took, what)
	}
}

// A ladder waiting for the problem to clear after a rung gives its worker
// to other events, and a stop ends the wait at once instead of after the
// shutdown grace; the redelivery picks the ladder up again.
func TestLadderWaitYieldsItsWorkerAndEndsAtStop(t *testing.T) {
	h := newHarness(t, Config{Workers: 1, ShutdownGrace: time.Minute}, nil)
	ladder := event("SlowLadder", "node/wait-1", bus.StatusFiring)
	h.publish(ladder, ladder.ID)
	h.waitKinds(ladder.ID, "event", "decision", "action.started", "action.finished", "verified") // the first rung; 30s wait
	h.handledWhileWaiting("node/wait-2")
	h.stopsAtOnce("a ladder waiting")
	if recs := h.recordsFor(ladder.ID); len(recs) != 5 {
		t.Fatalf("ladder after the stop: %d records, want the first rung's five", len(recs))
	}
	// Resolved meanwhile: the redelivered ladder sees it and settles,
	// without the second rung.
	h.publish(event("SlowLadder", "node/wait-1", bus.StatusResolved), "resolved-wait-1")
	h.start()
	recs := h.waitKinds(ladder.ID, "event", "decision", "action.started", "action.finished", "verified", "suppressed")
	if why := detail(recs[5], "reason"); !strings.Contains(why, "cleared") {
		t.Errorf("settled with %q, want the problem cleared", why)
	}
	if acts, _ := h.eng.Remediators["test.second"].(*second).counts(); acts != 0 {
		t.Errorf("second rung ran %d times", acts)
	}
}

func TestResolvedEventOnlyUndoes(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	e := event("Count", "node/c", bus.StatusResolved)
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished")
	if r := recs[2]; r.ActionID == "" {
		t.Error("undo without an action id")
	}
	if detail(recs[3], "step") != "undo" {
		t.Errorf("finished step = %s, want undo", detail(recs[3], "step"))
	}
	if acts, undos := h.rem.counts(); acts != 0 || undos != 1 {
		t.Fatalf("acts=%d undos=%d, want 0 and 1: a resolved alert must never remediate", acts, undos)
	}
}

func TestApprovalWithoutChannelFailsClosed(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	e := event("NeedsApproval", "node/d", bus.StatusFiring)
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "suppressed")
	if r := detail(recs[2], "reason"); !strings.Contains(r, "approval") {
		t.Errorf("reason %q", r)
	}
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Fatal("acted without approval")
	}
}

type denyAll struct{}

func (denyAll) Approve(context.Context, ApprovalRequest) (Approval, error) {
	return Approval{Approved: false, Reason: "denied by alice"}, nil
}

func TestApprovalDenied(t *testing.T) {
	h := newHarness(t, Config{}, denyAll{})
	e := event("NeedsApproval", "node/d", bus.StatusFiring)
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "approval", "suppressed")
	if detail(recs[2], "approved") != "false" || !strings.Contains(detail(recs[3], "reason"), "alice") {
		t.Errorf("records: %s / %s", recs[2].Details, recs[3].Details)
	}
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Fatal("acted although denied")
	}
}

type approveAlice struct{}

func (approveAlice) Approve(context.Context, ApprovalRequest) (Approval, error) {
	return Approval{Approved: true, Reason: "looks right", By: []string{"alice"}}, nil
}

func TestApprovalApprovedReachesTheRemediator(t *testing.T) {
	h := newHarness(t, Config{}, approveAlice{})
	e := event("NeedsApproval", "node/d2", bus.StatusFiring)
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "approval", "action.started", "action.finished", "verified")
	if !strings.Contains(string(recs[2].Details), "alice") {
		t.Errorf("approval record %s does not name the approver", recs[2].Details)
	}
	h.rem.mu.Lock()
	defer h.rem.mu.Unlock()
	if !slices.Equal(h.rem.approvers, []string{"alice"}) {
		t.Fatalf("remediator saw approvers %v", h.rem.approvers)
	}
}

func TestRateLimitSuppresses(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	first, second := event("Limited", "node/e", bus.StatusFiring), event("Limited", "node/f", bus.StatusFiring)
	h.publish(first, first.ID)
	h.waitKinds(first.ID, "event", "decision", "action.started", "action.finished", "verified")
	h.publish(second, second.ID)
	recs := h.waitKinds(second.ID, "event", "decision", "suppressed")
	if r := detail(recs[2], "reason"); !strings.Contains(r, "rate limit count") {
		t.Errorf("reason %q", r)
	}
}

func TestBreakerOpensAfterFailures(t *testing.T) {
	h := newHarness(t, Config{MaxAttempts: 1, Breaker: guard.BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour}}, nil)
	h.rem.mu.Lock()
	h.rem.failAct = errors.New("kubelet did not come back")
	h.rem.mu.Unlock()
	for i := range 2 {
		e := event("Count", fmt.Sprintf("node/g%d", i), bus.StatusFiring)
		h.publish(e, e.ID)
		h.waitKinds(e.ID, "event", "decision", "action.started", "action.failed")
	}
	e := event("Count", "node/g9", bus.StatusFiring)
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "suppressed")
	if r := detail(recs[2], "reason"); !strings.Contains(r, "circuit breaker open") {
		t.Errorf("reason %q", r)
	}
}

func TestBlockedActionFailsWithoutRetryOrBreaker(t *testing.T) {
	h := newHarness(t, Config{Breaker: guard.BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour}}, nil)
	h.rem.mu.Lock()
	h.rem.failAct = fmt.Errorf("%w: 2 pod(s) still on the node: shop/web-1 (PDB shop/web)", action.ErrBlocked)
	h.rem.mu.Unlock()
	for i := range 3 {
		e := event("Count", fmt.Sprintf("node/b%d", i), bus.StatusFiring)
		h.publish(e, e.ID)
		recs := h.waitKinds(e.ID, "event", "decision", "action.started", "action.failed")
		if a := detail(recs[3], "attempts"); a != "1" {
			t.Errorf("event %d: failed after %s attempts, want 1: a blocked action is final", i, a)
		}
		if !strings.Contains(detail(recs[3], "error"), "shop/web-1") {
			t.Errorf("failure does not name the blocking pod: %s", recs[3].Details)
		}
	}
	if s := h.eng.Breakers.State("test.count").String(); s != "closed" {
		t.Fatalf("breaker %s after blocked actions, want closed", s)
	}
}

func TestNoActionWithoutAudit(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	h.stop()
	// The audit stream goes away: the engine must not act.
	if err := h.js.DeleteStream(t.Context(), bus.StreamAudit); err != nil {
		t.Fatal(err)
	}
	h.eng.Trail = audit.NewTrail(h.js, h.eng.Log)
	h.start()
	e := event("Count", "node/h", bus.StatusFiring)
	h.publish(e, e.ID)
	// Wait until the engine has tried the event several times. The
	// restarted engine creates its consumer as it starts: wait for that too.
	deadline := time.Now().Add(10 * time.Second)
	cons, err := h.streams.Events.Consumer(t.Context(), bus.ConsumerEngine)
	for errors.Is(err, jetstream.ErrConsumerNotFound) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		cons, err = h.streams.Events.Consumer(t.Context(), bus.ConsumerEngine)
	}
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.Delivered.Consumer >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event delivered %d times in 10s", info.Delivered.Consumer)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Fatalf("acted %d times with no audit trail", acts)
	}
	// The trail comes back: the event is handled, once, and audited.
	sc := bus.StreamsConfig{}
	sc.ApplyDefaults()
	if _, err := bus.EnsureStreams(t.Context(), h.js, sc); err != nil {
		t.Fatal(err)
	}
	h.waitKinds(e.ID, "event", "decision", "action.started", "action.finished", "verified")
	if acts, _ := h.rem.counts(); acts != 1 {
		t.Fatalf("acted %d times, want 1", acts)
	}
}

func TestShutdownLosesNoEvents(t *testing.T) {
	h := newHarness(t, Config{Workers: 4}, nil)
	h.rem.slow = 20 * time.Millisecond
	const n = 60
	ids := make([]string, n)
	for i := range n {
		e := event("Count", fmt.Sprintf("node/s%d", i), bus.StatusFiring)
		ids[i] = e.ID
		h.publish(e, e.ID)
	}
	time.Sleep(100 * time.Millisecond)
	h.stop() // mid-stream, like SIGTERM
	acted, _ := h.rem.counts()
	if acted == n {
		t.Fatal("all events were handled before the stop; the test proves nothing")
	}
	h.start()
	for _, id := range ids {
		h.waitKinds(id, "event", "decision", "action.started", "action.finished", "verified")
	}
	if acts, _ := h.rem.counts(); acts != n {
		t.Fatalf("acted %d times for %d events", acts, n)
	}
}

// waitForever is an approver nobody answers, until ctx ends.
type waitForever struct{ asked chan string }

func (w waitForever) Approve(ctx context.Context, req ApprovalRequest) (Approval, error) {
	w.asked <- req.Key
	<-ctx.Done()
	return Approval{}, ctx.Err()
}

// With one worker, an event waiting for people does not hold the others
// up; and when the engine stops, the wait ends at once (the event is
// redelivered later) instead of after the shutdown grace.
func TestApprovalWaitYieldsItsWorker(t *testing.T) {
	w := waitForever{asked: make(chan string, 4)}
	h := newHarness(t, Config{Workers: 1, ShutdownGrace: time.Minute}, w)
	waiting := event("NeedsApproval", "node/w1", bus.StatusFiring)
	h.publish(waiting, waiting.ID)
	select {
	case <-w.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("approval never asked")
	}
	h.handledWhileWaiting("node/w2")
	h.stopsAtOnce("an approval pending")
	if acts, _ := h.rem.counts(); acts != 1 {
		t.Fatalf("%d actions, want the one that needed no approval", acts)
	}
}

// queueBehind starts an action on busy that holds the engine's only
// action slot until gate is closed, then an event of typ on target that
// decides and queues for the slot (its records are flushed as it starts
// waiting, so seeing them means it waits).
func (h *harness) queueBehind(busy, typ, target string) (gate chan struct{}, first, queued *bus.Event) {
	h.t.Helper()
	gate = h.holdActs(busy)
	first, queued = event("Count", busy, bus.StatusFiring), event(typ, target, bus.StatusFiring)
	h.publish(first, first.ID)
	h.waitKinds(first.ID, "event", "decision", "action.started")
	h.publish(queued, queued.ID)
	h.waitKinds(queued.ID, "event", "decision")
	return gate, first, queued
}

// stopReleasing stops the engine and, only once it is stopping, closes
// gate, so that the action it holds finishes and frees its slot within the
// shutdown grace.
func (h *harness) stopReleasing(gate chan struct{}) {
	h.t.Helper()
	h.cancel()
	close(gate)
	if err := <-h.done; err != nil {
		h.t.Fatal(err)
	}
	h.cancel = nil
}

// holdActs makes the test remediator's acts on target wait until the
// returned channel is closed.
func (h *harness) holdActs(target string) chan struct{} {
	gate := make(chan struct{})
	h.rem.mu.Lock()
	defer h.rem.mu.Unlock()
	h.rem.gate, h.rem.gateTarget = gate, target
	return gate
}

// MaxActions bounds the remediator steps running at once, and an event
// waiting for a step's slot gives its worker to the events that only
// decide: with two workers and one action slot, an action in progress and
// one waiting behind it leave a worker for the rest.
func TestMaxActionsBoundsActionsNotEvents(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, MaxActions: 1}, nil)
	gate, first, second := h.queueBehind("node/slot-1", "Count", "node/slot-2")
	others := make([]*bus.Event, 5)
	for i := range others {
		others[i] = event("NothingToDo", fmt.Sprintf("node/slot-other-%d", i), bus.StatusFiring)
		h.publish(others[i], others[i].ID)
	}
	for _, e := range others {
		h.waitKinds(e.ID, "event", "decision")
	}
	if recs, err := h.trail.Query(t.Context(), audit.Filter{EventID: second.ID}); err != nil || len(recs) != 2 {
		t.Fatalf("second event's records while the first acts: %d, %v; want event and decision only", len(recs), err)
	}
	close(gate)
	h.waitKinds(first.ID, "event", "decision", "action.started", "action.finished", "verified")
	h.waitKinds(second.ID, "event", "decision", "action.started", "action.finished", "verified")
	h.rem.mu.Lock()
	defer h.rem.mu.Unlock()
	if h.rem.maxRunning != 1 || len(h.rem.acts) != 2 {
		t.Fatalf("%d acts, at most %d at once; want 2, one at a time", len(h.rem.acts), h.rem.maxRunning)
	}
}

// An engine stopping while an event waits for an action slot hands the
// event back without using an attempt (with maxAttempts 1, a failed
// attempt would be the last), and starts no new step; the next start acts.
func TestStopWhileWaitingForASlotUsesNoAttempt(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, MaxActions: 1, MaxAttempts: 1}, nil)
	gate, first, second := h.queueBehind("node/stop-1", "Count", "node/stop-2")
	h.stopReleasing(gate)
	h.waitKinds(first.ID, "event", "decision", "action.started", "action.finished", "verified")
	if recs := h.recordsFor(second.ID); len(recs) != 2 {
		t.Fatalf("second event after the stop: %d records (the last %s: %s), want its event and decision only", len(recs), recs[len(recs)-1].Kind, recs[len(recs)-1].Details)
	}
	h.start()
	h.waitKinds(second.ID, "event", "decision", "action.started", "action.finished", "verified")
}

// The rate limits are spent by an event holding an action slot, not by one
// queued for a slot: stopped while it waits, its redelivery is not refused
// by a limit of one that it never acted under.
func TestQueuedEventSpendsNoRateLimit(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, MaxActions: 1}, nil)
	gate, _, limited := h.queueBehind("node/q-busy", "Limited", "node/q-limited")
	h.stopReleasing(gate)
	h.start()
	h.waitKinds(limited.ID, "event", "decision", "action.started", "action.finished", "verified")
}

// An action resumed after a crash is under way in the world already: it
// does not queue behind new actions for a slot, during which its target
// lease would go unrenewed.
func TestResumedActionDoesNotWaitForASlot(t *testing.T) {
	h := newHarness(t, Config{Workers: 4, MaxActions: 1}, nil)
	defer close(h.holdActs("node/busy"))
	busy := event("Count", "node/busy", bus.StatusFiring)
	h.publish(busy, busy.ID)
	h.waitKinds(busy.ID, "event", "decision", "action.started") // holds the only slot
	// A previous replica audited the event, claimed and started the
	// action, then died.
	e := event("Count", "node/resumed", bus.StatusFiring)
	if err := putJSON(t.Context(), h.streams.Actions, eventKey(e.ID), eventState{State: "received", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := putJSON(t.Context(), h.streams.Actions, idempotencyKey(e.ID, "test.count", e.Subject),
		actionState{ActionID: "act-crashed", State: "started", Step: "act", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.publish(e, e.ID)
	h.waitKinds(e.ID, "decision", "action.finished", "verified")
	h.rem.mu.Lock()
	defer h.rem.mu.Unlock()
	if !slices.Equal(h.rem.acts, []string{"act-crashed"}) {
		t.Fatalf("acts = %v, want the resumed action alone (the busy one still holds its slot)", h.rem.acts)
	}
}

func TestSettledEventCostsOneStateWriteAndOneCommit(t *testing.T) {
	h := newHarness(t, Config{DryRun: true}, nil)
	var events []*bus.Event
	for i := range 5 {
		e := event("Count", fmt.Sprintf("node/settle-%d", i), bus.StatusFiring)
		h.publish(e, e.ID)
		events = append(events, e)
	}
	for _, e := range events {
		recs := h.waitKinds(e.ID, "event", "decision", "suppressed")
		// Appended together, so nothing of another event between them.
		if recs[1].Seq != recs[0].Seq+1 || recs[2].Seq != recs[1].Seq+1 {
			t.Errorf("records of %s at %v, want consecutive", e.ID, []uint64{recs[0].Seq, recs[1].Seq, recs[2].Seq})
		}
	}
	h.stop() // every outcome is written before its event is acked
	// The actions bucket got one write per event (its outcome): no
	// "received" states on the way, no action state.
	kv, err := h.js.Stream(t.Context(), "KV_"+bus.BucketActions)
	if err != nil {
		t.Fatal(err)
	}
	if got := kv.CachedInfo().State.LastSeq; got != uint64(len(events)) {
		t.Errorf("actions bucket written %d times for %d settled events, want once each", got, len(events))
	}
	for _, e := range events {
		st, _, err := getJSON[eventState](t.Context(), h.streams.Actions, eventKey(e.ID))
		if err != nil || st == nil || st.State != outcomeDone {
			t.Errorf("state of %s = %+v, %v; want done", e.ID, st, err)
		}
	}
}

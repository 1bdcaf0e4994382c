package engine

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
	"github.com/selfheal/healer/test/testenv"
)

func TestSlowDecisionIsCutOffAndSuppressed(t *testing.T) {
	h := newHarness(t, Config{}, nil) // the default deadline, 100ms
	e := event("Slow", "node/slow", bus.StatusFiring)
	start := time.Now()
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "suppressed")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the event took %s to settle: the decision was not cut off at its deadline", took)
	}
	if r := detail(recs[1], "reason"); r != "policy decision exceeded its 100ms deadline" {
		t.Errorf("suppressed for %q", r)
	}
	if d := detail(recs[1], "decision_timeout"); d != "100ms" {
		t.Errorf("decision_timeout %q, want 100ms", d)
	}
	if acts, _ := h.rem.counts(); acts != 0 {
		t.Errorf("acted %d times on a decision that was cut off", acts)
	}
	// The workers are free: the next event is decided and acted on.
	next := event("Count", "node/after-slow", bus.StatusFiring)
	h.publish(next, next.ID)
	h.waitKinds(next.ID, "event", "decision", "action.started", "action.finished", "verified")
}

func TestSlowShadowDecisionIsCutOff(t *testing.T) {
	h := newHarness(t, Config{DecisionTimeout: 50 * time.Millisecond}, nil)
	h.stop()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "slow.rego"), []byte(strings.ReplaceAll(testPolicy, `input.event.type == "Slow"`, `input.event.type == "Count"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	cand, err := policies.Load(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	h.eng.Shadow = policies.NewHolder(cand)
	h.start()

	e := event("Count", "node/shadowed", bus.StatusFiring)
	start := time.Now()
	h.publish(e, e.ID)
	recs := h.waitKinds(e.ID, "event", "decision", "policy.shadow", "action.started", "action.finished", "verified")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the event took %s: the shadow decision was not cut off at its deadline", took)
	}
	if got := detail(recs[2], "error"); got != "policy decision exceeded its 50ms deadline" {
		t.Errorf("shadow record error %q", got)
	}
}

func TestStagePanicIsRecoveredRetriedAndAudited(t *testing.T) {
	tests := []struct {
		name  string
		set   func(c *counter)
		kinds []string // of the event's records once it is given up
		// key and want: the last record's detail that says what happened.
		key, want string
	}{
		{
			name:  "in act, with the action under way",
			set:   func(c *counter) { c.panicAct = "boom in act" },
			kinds: []string{"event", "decision", "action.started", "action.failed"},
			key:   "error", want: "stage act panicked: boom in act",
		},
		{
			name:  "in decide, before any action",
			set:   func(c *counter) { c.panicValidate = "boom in validate" },
			kinds: []string{"event", "decision", "suppressed"},
			key:   "reason", want: "gave up in stage decide after 2 attempts: stage decide panicked: boom in validate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxAttempts: 2}, nil)
			h.stop()
			var logs testenv.LogBuffer
			h.eng.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			h.rem.mu.Lock()
			tt.set(h.rem)
			h.rem.mu.Unlock()
			h.start()

			e := event("Count", "node/panics", bus.StatusFiring)
			h.publish(e, e.ID)
			recs := h.waitKinds(e.ID, tt.kinds...)
			last := recs[len(recs)-1]
			if got := detail(last, tt.key); !strings.Contains(got, tt.want) {
				t.Errorf("%s %s: %q, want it to contain %q", last.Kind, tt.key, got, tt.want)
			}
			if last.Kind == audit.KindActionFailed && detail(last, "attempts") != "2" {
				t.Errorf("failed after %s attempts, want 2 (maxAttempts)", detail(last, "attempts"))
			}
			if d := string(last.Details); strings.Contains(d, "goroutine ") || strings.Contains(d, ".go:") {
				t.Errorf("the audit record holds the stack: %s", d)
			}
			if l := logs.String(); strings.Count(l, "stage panicked") != 2 || !strings.Contains(l, "engine_test.go") {
				t.Errorf("want two panics logged with their stack, got:\n%s", l)
			}

			// The engine survived: with the panic gone, events are handled.
			h.rem.mu.Lock()
			h.rem.panicAct, h.rem.panicValidate = nil, nil
			h.rem.mu.Unlock()
			next := event("Count", "node/after-panic", bus.StatusFiring)
			h.publish(next, next.ID)
			h.waitKinds(next.ID, "event", "decision", "action.started", "action.finished", "verified")
		})
	}
}

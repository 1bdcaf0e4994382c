package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/healer/engine/guard"
)

// Config tunes the engine.
type Config struct {
	// Workers is how many events are handled at once; events waiting for
	// people or for an action slot give theirs up meanwhile. Events of one
	// problem (one subject) are handled one at a time, in order. Most
	// events settle without acting (duplicates, dry runs, guards saying
	// no) and spend their time waiting on JetStream, so this is well
	// above MaxActions.
	Workers int `json:"workers"`
	// MaxActions is how many remediator steps run at once: from the
	// blast-radius budget and the rate limits (a first step) or the last
	// look at whether the problem is still current (later steps), through
	// the target's lease, the re-check, the claim and the act, to the
	// verification. It is not held while people are asked or a ladder
	// waits for the problem to clear. An action resumed after a crash
	// does not wait for a slot.
	MaxActions int `json:"maxActions"`
	// AckWait is how long JetStream waits for an ack before redelivering;
	// long actions keep extending it while they run.
	AckWait time.Duration `json:"ackWait"`
	// MaxAttempts bounds retries of an event that keeps failing for a
	// transient reason (API server down); the last attempt is audited.
	MaxAttempts int `json:"maxAttempts"`
	// RetryDelay is the first redelivery delay; it grows with each attempt.
	RetryDelay time.Duration `json:"retryDelay"`
	// DecisionTimeout bounds one policy decision (and, apart, the shadow
	// policies' decision). A decision that takes longer is cut off and the
	// event suppressed and audited as such: a policy that loops or chews
	// through a huge input never holds up the pipeline.
	DecisionTimeout time.Duration `json:"decisionTimeout"`
	// ActionTimeout bounds one remediator action.
	ActionTimeout time.Duration `json:"actionTimeout"`
	// VerifyTimeout bounds the wait for an action's effect to show.
	VerifyTimeout time.Duration `json:"verifyTimeout"`
	// ShutdownGrace is how long in-flight events may take to finish after
	// a shutdown signal; unfinished ones are left for redelivery.
	ShutdownGrace time.Duration `json:"shutdownGrace"`
	// RedriveInterval is how often the open problems held back are looked
	// at, to re-drive those whose hold has cleared. Default 250ms.
	RedriveInterval time.Duration `json:"redriveInterval"`
	// DryRun audits what would be done without doing it.
	DryRun bool `json:"dryRun"`
	// Budget is the blast-radius budget.
	Budget guard.BudgetConfig `json:"budget"`
	// Breaker opens a remediator's circuit after consecutive failures.
	Breaker guard.BreakerConfig `json:"breaker"`
}

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.Workers == 0 {
		c.Workers = 256
	}
	if c.MaxActions == 0 {
		c.MaxActions = 32
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.DecisionTimeout == 0 {
		c.DecisionTimeout = 100 * time.Millisecond
	}
	if c.ActionTimeout == 0 {
		c.ActionTimeout = 5 * time.Minute
	}
	if c.VerifyTimeout == 0 {
		c.VerifyTimeout = 30 * time.Second
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 20 * time.Second
	}
	if c.RedriveInterval == 0 {
		c.RedriveInterval = 250 * time.Millisecond
	}
	c.Budget.ApplyDefaults()
	c.Breaker.ApplyDefaults()
}

// Validate reports an unusable configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Workers < 1 || c.Workers > 4096 {
		errs = append(errs, fmt.Errorf("engine: workers %d: must be 1 to 4096", c.Workers))
	}
	if c.MaxActions < 1 || c.MaxActions > 4096 {
		errs = append(errs, fmt.Errorf("engine: maxActions %d: must be 1 to 4096", c.MaxActions))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("engine: ackWait %s: must be at least 1s", c.AckWait))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("engine: maxAttempts %d: must be at least 1", c.MaxAttempts))
	}
	if c.ActionTimeout <= 0 || c.VerifyTimeout <= 0 || c.ShutdownGrace <= 0 || c.RetryDelay <= 0 {
		errs = append(errs, errors.New("engine: actionTimeout, verifyTimeout, shutdownGrace and retryDelay must be positive"))
	}
	if c.DecisionTimeout < time.Millisecond || c.DecisionTimeout >= c.AckWait {
		errs = append(errs, fmt.Errorf("engine: decisionTimeout %s: must be at least 1ms and less than ackWait (%s)", c.DecisionTimeout, c.AckWait))
	}
	if c.RedriveInterval < 10*time.Millisecond || c.RedriveInterval > time.Minute {
		errs = append(errs, fmt.Errorf("engine: redriveInterval %s: must be 10ms to 1m", c.RedriveInterval))
	}
	if c.Budget.HoldTTL < c.AckWait {
		// A silent replica's actions are fenced off after ackWait; its
		// holds on the budget must last at least as long.
		errs = append(errs, fmt.Errorf("engine: budget.holdTTL %s: must be at least ackWait (%s)", c.Budget.HoldTTL, c.AckWait))
	}
	errs = append(errs, c.Budget.Validate(), c.Breaker.Validate())
	return errors.Join(errs...)
}

package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/selfheal/healer/action"
)

// BreakerConfig sets when a remediator's circuit breaker opens.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker.
	ConsecutiveFailures uint32 `json:"consecutiveFailures"`
	// OpenFor is how long it stays open before one probe is let through.
	OpenFor time.Duration `json:"openFor"`
}

// ApplyDefaults fills zero fields: 3 failures, 5 minutes.
func (c *BreakerConfig) ApplyDefaults() {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 3
	}
	if c.OpenFor == 0 {
		c.OpenFor = 5 * time.Minute
	}
}

// Validate reports an unusable configuration.
func (c *BreakerConfig) Validate() error {
	if c.OpenFor < time.Second {
		return fmt.Errorf("breaker: openFor %s: must be at least 1s", c.OpenFor)
	}
	return nil
}

// Breakers holds one circuit breaker per remediator.
type Breakers struct {
	cfg      BreakerConfig
	log      *slog.Logger
	onChange func(remediator string, from, to gobreaker.State)
	mu       sync.Mutex
	m        map[string]*gobreaker.CircuitBreaker[struct{}]
	opened   map[string]time.Time // remediator -> when its breaker last opened
}

// NewBreakers returns breakers built on demand with cfg. onChange, if not
// nil, is told of every state change (for notifications and metrics).
func NewBreakers(cfg BreakerConfig, log *slog.Logger, onChange func(remediator string, from, to gobreaker.State)) *Breakers {
	cfg.ApplyDefaults()
	return &Breakers{cfg: cfg, log: log, onChange: onChange, m: map[string]*gobreaker.CircuitBreaker[struct{}]{}, opened: map[string]time.Time{}}
}

func (b *Breakers) get(name string) *gobreaker.CircuitBreaker[struct{}] {
	b.mu.Lock()
	defer b.mu.Unlock()
	cb, ok := b.m[name]
	if !ok {
		cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        name,
			MaxRequests: 1,
			Timeout:     b.cfg.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= b.cfg.ConsecutiveFailures },
			// Not the remediator's failures: shutdown, a target that
			// changed under it (retried), a refusal to act unsafely, an
			// action something outside healer blocked (a PDB).
			IsExcluded: func(err error) bool {
				return errors.Is(err, context.Canceled) || errors.Is(err, action.ErrConflict) ||
					errors.Is(err, action.ErrUnsafe) || errors.Is(err, action.ErrBlocked)
			},
			OnStateChange: func(name string, from, to gobreaker.State) {
				if to == gobreaker.StateOpen {
					b.mu.Lock()
					b.opened[name] = time.Now()
					b.mu.Unlock()
				}
				b.log.Warn("circuit breaker changed state", "remediator", name, "from", from.String(), "to", to.String())
				if b.onChange != nil {
					b.onChange(name, from, to)
				}
			},
		})
		b.m[name] = cb
	}
	return cb
}

// State returns the state of the remediator's breaker.
func (b *Breakers) State(name string) gobreaker.State { return b.get(name).State() }

// HalfOpensAt returns when the remediator's breaker, open now, lets a probe
// through; the zero time when it is not open.
func (b *Breakers) HalfOpensAt(name string) time.Time {
	if b.State(name) != gobreaker.StateOpen {
		return time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opened[name].Add(b.cfg.OpenFor)
}

// ErrBreakerOpen is returned by Run when the breaker does not let the
// action through (open, or half-open with its one probe under way).
var ErrBreakerOpen = errors.New("circuit breaker open")

// Run runs fn through the remediator's breaker. A failure of fn counts
// towards opening it.
func (b *Breakers) Run(name string, fn func() error) error {
	_, err := b.get(name).Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w for %s: %w", ErrBreakerOpen, name, err)
	}
	return err
}

// Fail counts a failure found after the action itself (a failed
// verification) against the remediator's breaker.
func (b *Breakers) Fail(name string, cause error) {
	_, _ = b.get(name).Execute(func() (struct{}, error) { return struct{}{}, cause })
}

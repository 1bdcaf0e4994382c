package restart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
)

// Verb names on the wire.
const (
	// VerbRestart restarts a component and waits for its health.
	VerbRestart = "restart"
	// VerbCheck reports a component's health and recent restarts.
	VerbCheck = "restart.check"
)

// restarter is what differs between kinds of component.
type restarter interface {
	restart(ctx context.Context, progress action.Progress) error
}

type component struct {
	Component
	r  restarter
	mu sync.Mutex // one restart of a component at a time
}

// Verbs is the node half: the restart verbs of one node's agent.
type Verbs struct {
	cfg   Config
	comps map[string]*component
	procs []*process
	hist  *history
	hc    *http.Client
	log   *slog.Logger
	now   func() time.Time
	// life is the agent's lifetime; supervised processes run until it ends.
	life context.Context
}

// Option changes how Verbs are built.
type Option func(*Verbs)

// WithSystemd replaces the D-Bus connection to systemd, for tests.
func WithSystemd(dial func(context.Context) (UnitManager, error)) Option {
	return func(v *Verbs) {
		for _, c := range v.comps {
			if s, ok := c.r.(*systemdUnit); ok {
				s.dial = func(ctx context.Context) (unitManager, error) { return dial(ctx) }
			}
		}
	}
}

// WithClock replaces time.Now, for tests of flap protection.
func WithClock(now func() time.Time) Option { return func(v *Verbs) { v.now = now } }

// UnitManager is the part of systemd's D-Bus API a restart uses; the
// go-systemd dbus.Conn implements it.
type UnitManager = unitManager

// NewVerbs builds the node half; cfg gets its defaults and is validated.
// Start must be called before the verbs are used.
func NewVerbs(cfg Config, log *slog.Logger, opts ...Option) (*Verbs, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hist, err := loadHistory(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	v := &Verbs{
		cfg: cfg, comps: map[string]*component{}, hist: hist, log: log.With("remediator", Name),
		hc: &http.Client{Timeout: 2 * time.Second}, now: time.Now,
	}
	for _, c := range cfg.Components {
		comp := &component{Component: c}
		switch c.Kind {
		case KindSystemd:
			comp.r = &systemdUnit{unit: c.Unit, dial: dialSystemd}
		case KindStaticPod:
			comp.r = &staticPod{c: c, hc: v.hc}
		case KindProcess:
			p := &process{c: c, log: v.log}
			v.procs = append(v.procs, p)
			comp.r = processRestarter{p: p, v: v}
		}
		v.comps[c.Name] = comp
	}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

type processRestarter struct {
	p *process
	v *Verbs
}

func (r processRestarter) restart(ctx context.Context, progress action.Progress) error {
	if r.v.life == nil {
		return fmt.Errorf("%w: process %s: the verbs were not started", action.ErrUnsafe, r.p.c.Name)
	}
	return r.p.restartWith(ctx, r.v.life, progress)
}

// Start puts back static pod manifests an earlier agent left held, and
// starts the supervised processes, which run until ctx ends.
func (v *Verbs) Start(ctx context.Context) error {
	v.life = ctx
	var errs []error
	for _, c := range v.comps {
		if sp, ok := c.r.(*staticPod); ok {
			restored, err := sp.recover()
			if err != nil {
				errs = append(errs, err)
			} else if restored {
				v.log.WarnContext(ctx, "put back a static pod manifest left held by an earlier agent", "component", c.Name, "manifest", c.Manifest)
			}
		}
	}
	for _, p := range v.procs {
		if err := p.start(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Components names the components this node can restart.
func (v *Verbs) Components() []string {
	out := make([]string, 0, len(v.cfg.Components))
	for _, c := range v.cfg.Components {
		out = append(out, c.Name)
	}
	return out
}

// Verbs returns the node verbs to register with the agent.
func (v *Verbs) Verbs() []action.NodeVerb {
	return []action.NodeVerb{verb{VerbRestart, v.restart}, verb{VerbCheck, v.check}}
}

type verb struct {
	name string
	run  func(context.Context, action.NodeRequest, action.Progress) (action.Result, error)
}

func (v verb) Name() string { return v.name }
func (v verb) Run(ctx context.Context, req action.NodeRequest, p action.Progress) (action.Result, error) {
	return v.run(ctx, req, p)
}

// component finds the configured component that params name. The name
// is checked by agentparam before it is looked up; any other parameter
// than the verbs' own is refused.
func (v *Verbs) component(params map[string]any) (*component, error) {
	for k := range params {
		if k != "component" && k != "only_if_unhealthy" {
			return nil, fmt.Errorf("%w: unknown param %s", action.ErrInvalidParams, agentparam.Quote(k))
		}
	}
	name, err := agentparam.StringParam(params, "component", agentparam.Name)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%w: component is required", action.ErrInvalidParams)
	}
	c, ok := v.comps[name]
	if !ok {
		return nil, fmt.Errorf("%w: component %q is not configured on this node (have %v)", action.ErrInvalidParams, name, v.Components())
	}
	return c, nil
}

func (v *Verbs) restart(ctx context.Context, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	c, err := v.component(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	onlyIfUnhealthy, err := action.BoolParam(req.Params, "only_if_unhealthy")
	if err != nil {
		return action.Result{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	log := v.log.With("component", c.Name, "action_id", req.ID, "event_id", req.EventID)
	n, done := v.hist.recent(c.Name, req.ID, v.cfg.Flap.Window, v.now())
	details := map[string]any{"component": c.Name, "kind": c.Kind, "restarts_in_window": n, "window": v.cfg.Flap.Window.String()}
	if done {
		// A retry of a restart that already ran: report health, do not restart twice.
		if err := c.Health.probe(ctx, v.hc); err != nil {
			return action.Result{Details: details}, fmt.Errorf("%s was restarted by this action but is not healthy: %w", c.Name, err)
		}
		return action.Result{Message: c.Name + " already restarted by this action; healthy", Details: details}, nil
	}
	if n >= v.cfg.Flap.MaxRestarts {
		return action.Result{Details: details}, fmt.Errorf("%s restarted %d times in the last %s (at most %d): %w",
			c.Name, n, v.cfg.Flap.Window, v.cfg.Flap.MaxRestarts, action.ErrFlapping)
	}
	if onlyIfUnhealthy {
		if err := c.Health.probe(ctx, v.hc); err == nil {
			return action.Result{Details: details}, fmt.Errorf("%s is healthy: %w", c.Name, action.ErrNotNeeded)
		}
	}
	start := v.now()
	progress(ctx, "restarting", details)
	log.WarnContext(ctx, "restarting component", "kind", c.Kind, "restarts_in_window", n)
	rerr := c.r.restart(ctx, progress)
	// Every attempt counts towards flapping, also one that failed halfway.
	if err := v.hist.add(c.Name, req.ID, v.cfg.Flap.Window, v.now()); err != nil {
		log.ErrorContext(ctx, "restart history not saved", "err", err)
	}
	details["restarts_in_window"] = n + 1
	if rerr != nil {
		return action.Result{Details: details}, fmt.Errorf("restart %s: %w", c.Name, rerr)
	}
	progress(ctx, "waiting for health", map[string]any{"component": c.Name, "timeout": c.Health.Timeout.String()})
	took, err := c.Health.waitHealthy(ctx, v.hc, start)
	details["took"] = took.String()
	if err != nil {
		return action.Result{Changed: true, Details: details}, fmt.Errorf("%s: %w", c.Name, err)
	}
	log.InfoContext(ctx, "component restarted and healthy", "took", took)
	return action.Result{Changed: true, Message: fmt.Sprintf("%s restarted; healthy after %s", c.Name, took.Round(time.Millisecond)), Details: details}, nil
}

func (v *Verbs) check(ctx context.Context, req action.NodeRequest, _ action.Progress) (action.Result, error) {
	c, err := v.component(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	n, _ := v.hist.recent(c.Name, req.ID, v.cfg.Flap.Window, v.now())
	details := map[string]any{
		"component": c.Name, "kind": c.Kind, "healthy": true,
		"restarts_in_window": n, "max_restarts": v.cfg.Flap.MaxRestarts, "window": v.cfg.Flap.Window.String(),
	}
	msg := c.Name + " is healthy"
	if err := c.Health.probe(ctx, v.hc); err != nil {
		details["healthy"] = false
		details["health_error"] = err.Error()
		msg = c.Name + " is not healthy"
	}
	return action.Result{Message: msg, Details: details}, nil
}

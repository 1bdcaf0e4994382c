package restart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
)

// Name is the remediator's policy name.
const Name = "component.restart"

// Caller reaches node agents; bus.AgentClient is the real one.
type Caller = action.ProgressCaller

// Remediator is the engine half: it asks the agent on the event's node to
// restart one of its components.
type Remediator struct {
	agents Caller
	log    *slog.Logger
}

var (
	_ action.Remediator = (*Remediator)(nil)
	_ action.NodeVerb   = verb{}
)

// New returns the remediator. A nil agents means no agent transport: every
// re-check then fails closed.
func New(agents Caller, log *slog.Logger) *Remediator {
	return &Remediator{agents: agents, log: log.With("remediator", Name)}
}

// Info describes the remediator.
func (r *Remediator) Info() action.Info {
	return action.Info{
		Name:       Name,
		Summary:    "Restart a node component (systemd unit, static pod or supervised process) through the node's agent and wait until it is healthy; refuses past 3 restarts an hour so a ladder escalates.",
		TargetKind: "node",
		Disruptive: false,
		Runbook:    "runbooks/component.restart.md",
		Example:    `{"remediator": "component.restart", "params": {"component": "kubelet", "only_if_unhealthy": true}, "approval": "none"}`,
	}
}

// Validate checks the params: component (required), only_if_unhealthy
// (bool), timeout (how long the agent may take, 1s to 30m).
func (r *Remediator) Validate(params map[string]any) error {
	var errs []error
	name, err := agentparam.StringParam(params, "component", agentparam.Name)
	switch {
	case err != nil:
		errs = append(errs, err)
	case name == "":
		errs = append(errs, fmt.Errorf("%w: component is required (a component name such as kubelet)", action.ErrInvalidParams))
	}
	if _, err := action.BoolParam(params, "only_if_unhealthy"); err != nil {
		errs = append(errs, err)
	}
	if d, err := action.DurationParam(params, "timeout", 0); err != nil {
		errs = append(errs, err)
	} else if d != 0 && (d < time.Second || d > 30*time.Minute) {
		errs = append(errs, fmt.Errorf("%w: timeout %s: must be 1s to 30m", action.ErrInvalidParams, d))
	}
	for k := range params {
		switch k {
		case "component", "only_if_unhealthy", "timeout":
		default:
			errs = append(errs, fmt.Errorf("%w: unknown param %s", action.ErrInvalidParams, agentparam.Quote(k)))
		}
	}
	return errors.Join(errs...)
}

func (r *Remediator) nodeRequest(ctx context.Context, req action.Request, verb string, params map[string]any) action.NodeRequest {
	nr := action.NodeRequest{ID: req.ID, Verb: verb, Node: req.TargetName(), EventID: req.EventID, Params: params}
	if dl, ok := ctx.Deadline(); ok {
		nr.Deadline = dl
	}
	if d, _ := action.DurationParam(req.Params, "timeout", 0); d > 0 {
		nr.Deadline = time.Now().Add(d)
	}
	return nr
}

// check asks the agent for the component's health. Read-only requests get
// an id of their own, so the agent does not answer them from the action's
// cached reply.
func (r *Remediator) check(ctx context.Context, req action.Request) (action.Result, error) {
	if r.agents == nil {
		return action.Result{}, fmt.Errorf("%w: no agent transport configured", action.ErrUnsafe)
	}
	component, _ := action.StringParam(req.Params, "component", "")
	nr := r.nodeRequest(ctx, req, VerbCheck, map[string]any{"component": component})
	nr.ID = fmt.Sprintf("%s/check/%d", req.ID, time.Now().UnixNano())
	return r.agents.CallProgress(ctx, nr, nil)
}

// Check asks the node's agent whether it knows the component and can be
// reached. An agent that does not answer, or that does not know the
// component, makes the action unsafe: healer cannot tell what it would do.
func (r *Remediator) Check(ctx context.Context, req action.Request) error {
	if req.TargetName() == "" || req.Target != "node/"+req.TargetName() {
		return fmt.Errorf("%w: target %q is not a node", action.ErrUnsafe, req.Target)
	}
	if _, err := r.check(ctx, req); err != nil {
		return fmt.Errorf("%w: re-check on node %s: %w", action.ErrUnsafe, req.TargetName(), err)
	}
	return nil
}

// Act asks the agent to restart the component and wait for its health.
// Flapping comes back as action.ErrFlapping (final; a ladder escalates).
func (r *Remediator) Act(ctx context.Context, req action.Request, progress action.Progress) (action.Result, error) {
	if r.agents == nil {
		return action.Result{}, fmt.Errorf("%w: no agent transport configured", action.ErrUnsafe)
	}
	params := map[string]any{}
	for _, k := range []string{"component", "only_if_unhealthy"} {
		if v, ok := req.Params[k]; ok {
			params[k] = v
		}
	}
	res, err := r.agents.CallProgress(ctx, r.nodeRequest(ctx, req, VerbRestart, params), progress)
	if err != nil {
		return res, fmt.Errorf("restart %v on node %s: %w", params["component"], req.TargetName(), err)
	}
	return res, nil
}

// Verify asks the agent whether the component is healthy now.
func (r *Remediator) Verify(ctx context.Context, req action.Request) error {
	res, err := r.check(ctx, req)
	if err != nil {
		return fmt.Errorf("verify on node %s: %w", req.TargetName(), err)
	}
	if healthy, _ := res.Details["healthy"].(bool); !healthy {
		return fmt.Errorf("node %s: %s (%v)", req.TargetName(), res.Message, res.Details["health_error"])
	}
	return nil
}

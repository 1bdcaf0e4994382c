package certrenew

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
	"github.com/selfheal/healer/remediators/restart"
)

// Name is the remediator's policy name.
const Name = "cert.renew"

// Remediator is the engine half: it asks the agent on the master holding
// the certificate to renew it, restarts the component serving it and
// checks the endpoint presents the new certificate.
type Remediator struct {
	agents restart.Caller
	log    *slog.Logger
}

var _ action.Remediator = (*Remediator)(nil)

// New returns the remediator. A nil agents means no agent transport: every
// re-check then fails closed.
func New(agents restart.Caller, log *slog.Logger) *Remediator {
	return &Remediator{agents: agents, log: log.With("remediator", Name)}
}

// Info describes the remediator.
func (r *Remediator) Info() action.Info {
	return action.Info{
		Name:       Name,
		Summary:    "Re-issue a control-plane certificate with its existing CA (same subject, SANs, key usages and key), restart the component that serves it and check the endpoint presents it; refuses when the CA itself is near expiry.",
		TargetKind: "node",
		Disruptive: false,
		Runbook:    "runbooks/cert.renew.md",
		Example:    `{"remediator": "cert.renew", "params": {"cert": "apiserver"}, "approval": "one"}`,
	}
}

// Validate checks the params: cert (a certificate name the agent knows)
// or file (the absolute path of a certificate the agent may renew).
func (r *Remediator) Validate(params map[string]any) error {
	_, _, err := targetParams(params)
	return err
}

// targetParams reads the params naming a certificate, on either side: only
// cert or file, exactly one of them, cert a name and file an absolute,
// clean path (agentparam).
func targetParams(params map[string]any) (name, file string, err error) {
	var errs []error
	for k := range params {
		if k != "cert" && k != "file" {
			errs = append(errs, fmt.Errorf("%w: unknown param %s", action.ErrInvalidParams, agentparam.Quote(k)))
		}
	}
	name, err = agentparam.StringParam(params, "cert", agentparam.Name)
	errs = append(errs, err)
	file, err = agentparam.StringParam(params, "file", agentparam.Path)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return "", "", err
	}
	if (name == "") == (file == "") {
		return "", "", fmt.Errorf("%w: exactly one of cert and file is required", action.ErrInvalidParams)
	}
	return name, file, nil
}

// target is the params naming the certificate, as the agent takes them.
func target(params map[string]any) map[string]any {
	out := map[string]any{}
	for _, k := range []string{"cert", "file"} {
		if v, ok := params[k]; ok {
			out[k] = v
		}
	}
	return out
}

func (r *Remediator) call(ctx context.Context, req action.Request, verb, id string, params map[string]any, progress action.Progress) (action.Result, error) {
	if r.agents == nil {
		return action.Result{}, fmt.Errorf("%w: no agent transport configured", action.ErrUnsafe)
	}
	nr := action.NodeRequest{ID: id, Verb: verb, Node: req.TargetName(), EventID: req.EventID, Params: params}
	if dl, ok := ctx.Deadline(); ok {
		nr.Deadline = dl
	}
	return r.agents.CallProgress(ctx, nr, progress)
}

func (r *Remediator) check(ctx context.Context, req action.Request) (action.Result, error) {
	return r.call(ctx, req, VerbCheck, fmt.Sprintf("%s/check/%d", req.ID, time.Now().UnixNano()), target(req.Params), nil)
}

// Check asks the agent about the certificate: an agent that does not
// answer, a certificate it does not know, or a CA that expires too soon
// makes the renewal unsafe.
func (r *Remediator) Check(ctx context.Context, req action.Request) error {
	if req.Target != "node/"+req.TargetName() || req.TargetName() == "" {
		return fmt.Errorf("%w: target %q is not a node", action.ErrUnsafe, req.Target)
	}
	res, err := r.check(ctx, req)
	if err != nil {
		return fmt.Errorf("%w: re-check on node %s: %w", action.ErrUnsafe, req.TargetName(), err)
	}
	if ok, _ := res.Details["ca_ok"].(bool); !ok {
		return fmt.Errorf("%w: %s on node %s: the CA expires too soon (ca_not_after %v%s); renew the CA first",
			action.ErrUnsafe, res.Details["cert"], req.TargetName(), res.Details["ca_not_after"], errDetail(res.Details["ca_error"]))
	}
	return nil
}

func errDetail(v any) string {
	if s, ok := v.(string); ok && s != "" {
		return ", " + s
	}
	return ""
}

// Act renews the certificate and restarts the component that serves it.
func (r *Remediator) Act(ctx context.Context, req action.Request, progress action.Progress) (action.Result, error) {
	res, err := r.call(ctx, req, VerbRenew, req.ID, target(req.Params), progress)
	name, _ := res.Details["cert"].(string)
	if err != nil {
		return res, fmt.Errorf("renew %s on node %s: %w", name, req.TargetName(), err)
	}
	component, _ := res.Details["component"].(string)
	if component == "" {
		return res, nil
	}
	progress(ctx, "restarting "+component, map[string]any{"component": component})
	rres, err := r.call(ctx, req, restart.VerbRestart, req.ID+"/restart", map[string]any{"component": component}, progress)
	if err != nil {
		// The new certificate is on disk; the old one is still served
		// until the component restarts. Say so: the retry restarts again.
		return res, fmt.Errorf("%s renewed, but restarting %s on node %s failed: %w", name, component, req.TargetName(), err)
	}
	res.Details["restart"] = rres.Message
	res.Message += "; " + rres.Message
	return res, nil
}

// Verify checks that the live endpoint presents the certificate on disk,
// and that it is no longer close to expiry.
func (r *Remediator) Verify(ctx context.Context, req action.Request) error {
	res, err := r.check(ctx, req)
	if err != nil {
		return fmt.Errorf("verify on node %s: %w", req.TargetName(), err)
	}
	if ep, _ := res.Details["endpoint"].(string); ep != "" {
		if match, _ := res.Details["live_matches_file"].(bool); !match {
			return fmt.Errorf("%s on node %s: %s does not present the renewed certificate (live serial %v, file %v%s)",
				res.Details["cert"], req.TargetName(), ep, res.Details["live_serial"], res.Details["serial"], errDetail(res.Details["live_error"]))
		}
	}
	return nil
}

package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
)

// Name is the name policies use for the VIP float remediator.
const Name = "vip.float"

// Float is the vip.float remediator: it moves a VIP whose holder lost it
// to the first healthy candidate, through the candidates' agents. It never
// takes a VIP over before its lease has expired; the holder fences itself
// before that.
type Float struct {
	kv     jetstream.KeyValue
	caller action.NodeCaller
	log    *slog.Logger
	cfg    FloatConfig
	cands  map[netip.Addr][]string
	now    func() time.Time
	seq    atomic.Uint64 // makes each vip.status request id unique
}

var _ action.Remediator = (*Float)(nil)

// NewFloat returns the vip.float remediator. kv is the lease bucket
// (EnsureBucket), caller reaches the agents on the candidates. cfg gets
// its defaults applied and is validated.
func NewFloat(kv jetstream.KeyValue, caller action.NodeCaller, log *slog.Logger, cfg FloatConfig) (*Float, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	cands, err := cfg.parse()
	if err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	return &Float{kv: kv, caller: caller, log: log.With("remediator", Name), cfg: cfg, cands: cands, now: time.Now}, nil
}

// Info describes vip.float.
func (f *Float) Info() action.Info {
	return action.Info{
		Name:       Name,
		Summary:    "Moves a virtual IP whose holder stopped renewing its lease to the first healthy candidate master, after the lease has expired and the old holder has fenced itself.",
		TargetKind: "vip",
		Disruptive: false,
		Runbook:    "runbooks/vip.float.md",
		Example:    `{"remediator": "vip.float", "params": {}, "approval": "none", "reason": "the VIP holder stopped renewing its lease"}`,
	}
}

// Validate checks vip.float's params: it takes none. The candidates come
// from the configuration, never from an event or a policy.
func (f *Float) Validate(params map[string]any) error {
	for k := range params {
		return fmt.Errorf("%w: %s: unknown parameter %q (it takes none; candidates are configured)", action.ErrInvalidParams, Name, k)
	}
	return nil
}

// target returns the VIP a request is for and its candidates.
func (f *Float) target(req action.Request) (netip.Addr, []string, error) {
	name, ok := strings.CutPrefix(req.Target, "vip/")
	if !ok {
		return netip.Addr{}, nil, fmt.Errorf("%w: %s: target %q is not a vip (want vip/<address>)", action.ErrInvalidParams, Name, req.Target)
	}
	addr, err := netip.ParseAddr(name)
	if err != nil || !addr.Is4() {
		return netip.Addr{}, nil, fmt.Errorf("%w: %s: target %q: want vip/<IPv4 address>", action.ErrInvalidParams, Name, req.Target)
	}
	cands, ok := f.cands[addr]
	if !ok {
		return netip.Addr{}, nil, fmt.Errorf("%w: %s: vip %s has no candidates configured; healer does not know where it may go", action.ErrUnsafe, Name, addr)
	}
	return addr, cands, nil
}

// Check re-reads the lease. A lease that cannot be read is unsafe (fail
// closed). A valid lease whose holder answers vip.status with the address
// on is not in need. A valid lease whose holder does not answer, or does
// not carry the address, is waited out until it expires (the holder fences
// itself before that), at most MaxWait; a lease still valid then is
// unsafe. A released lease was given up on purpose and is not floated.
// An expired lease, or none, needs floating.
func (f *Float) Check(ctx context.Context, req action.Request) error {
	if err := f.Validate(req.Params); err != nil {
		return err
	}
	addr, _, err := f.target(req)
	if err != nil {
		return err
	}
	giveUp := f.now().Add(f.cfg.MaxWait)
	for {
		l, err := readLease(ctx, f.kv, addr)
		if errors.Is(err, errNoLease) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %s: cannot read the lease, so cannot tell who may carry vip %s: %w", action.ErrUnsafe, Name, addr, err)
		}
		if l.Released {
			return fmt.Errorf("%w: vip %s was released on purpose by %s (term %d); healer does not float a VIP someone gave up", action.ErrNotNeeded, addr, l.Holder, l.Term)
		}
		now := f.now()
		if !l.Valid(now) {
			return nil
		}
		held, present, serr := f.status(ctx, req, l.Holder, addr)
		if serr == nil && held && present {
			return fmt.Errorf("%w: vip %s is held by %s (term %d) and its agent reports the address on", action.ErrNotNeeded, addr, l.Holder, l.Term)
		}
		wait := l.Expires.Sub(f.now()) + 10*time.Millisecond
		if f.now().Add(wait).After(giveUp) {
			return fmt.Errorf("%w: lease of vip %s held by %s (term %d) is valid until %s, beyond the %s healer waits; not taking over a valid lease",
				action.ErrUnsafe, addr, l.Holder, l.Term, l.Expires.Format(time.RFC3339Nano), f.cfg.MaxWait)
		}
		f.log.InfoContext(ctx, "vip lease still valid; waiting for it to expire before floating",
			"vip", addr.String(), "holder", l.Holder, "term", l.Term, "wait", wait.Round(time.Millisecond).String(),
			"holder_status_err", errString(serr), "holder_lease_held", held, "holder_address_present", present, "event_id", req.EventID)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: waiting for the lease of vip %s to expire: %w", action.ErrUnsafe, addr, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// Act asks the first healthy candidate other than the failed holder to
// acquire the VIP. A candidate that does not answer vip.status is passed
// over; so is one whose acquire fails for a reason of its own, which is
// safe because only one node can take the lease. A lease that another node
// holds validly by now is a conflict (the engine re-checks).
func (f *Float) Act(ctx context.Context, req action.Request, progress action.Progress) (action.Result, error) {
	if err := f.Validate(req.Params); err != nil {
		return action.Result{}, err
	}
	addr, cands, err := f.target(req)
	if err != nil {
		return action.Result{}, err
	}
	if progress == nil {
		progress = func(context.Context, string, map[string]any) {}
	}
	l, err := readLease(ctx, f.kv, addr)
	if err != nil && !errors.Is(err, errNoLease) {
		return action.Result{}, fmt.Errorf("%w: %s: cannot read the lease of vip %s: %w", action.ErrUnsafe, Name, addr, err)
	}
	failed := ""
	if err == nil {
		failed = l.Holder
		if l.Valid(f.now()) {
			if l.Action == req.ID && req.ID != "" {
				return action.Result{
					Message: fmt.Sprintf("vip %s already floated to %s by this action (term %d)", addr, l.Holder, l.Term),
					Details: map[string]any{"vip": addr.String(), "to": l.Holder, "term": l.Term},
				}, nil
			}
			return action.Result{}, fmt.Errorf("%w: vip %s is now held by %s (term %d) until %s; not taking over a valid lease",
				action.ErrConflict, addr, l.Holder, l.Term, l.Expires.Format(time.RFC3339Nano))
		}
	}
	log := f.log.With("vip", addr.String(), "action_id", req.ID, "event_id", req.EventID, "failed_holder", failed)
	var tried []string
	for _, node := range cands {
		if node == failed {
			continue
		}
		if _, _, err := f.status(ctx, req, node, addr); err != nil {
			log.WarnContext(ctx, "candidate not healthy; passing it over", "node", node, "err", err)
			tried = append(tried, fmt.Sprintf("%s: status: %v", node, err))
			continue
		}
		progress(ctx, "acquire", map[string]any{"vip": addr.String(), "node": node, "failed_holder": failed})
		res, err := f.acquire(ctx, req, node, addr)
		if err == nil {
			log.InfoContext(ctx, "vip floated", "node", node, "changed", res.Changed)
			d := map[string]any{"vip": addr.String(), "from": failed, "to": node}
			for k, v := range res.Details {
				if k == "term" || k == "interface" || k == "expires" {
					d[k] = v
				}
			}
			if len(tried) > 0 {
				d["passed_over"] = tried
			}
			return action.Result{
				Changed: res.Changed,
				Message: fmt.Sprintf("floated vip %s from %s to %s", addr, orNone(failed), node),
				Details: d,
			}, nil
		}
		if errors.Is(err, action.ErrUnsafe) || errors.Is(err, action.ErrConflict) {
			// Someone holds the lease now: stop, the engine re-checks.
			return action.Result{}, fmt.Errorf("%w: float vip %s to %s: %w", action.ErrConflict, addr, node, err)
		}
		log.WarnContext(ctx, "candidate could not acquire the vip; trying the next", "node", node, "err", err)
		tried = append(tried, fmt.Sprintf("%s: acquire: %v", node, err))
	}
	if len(tried) == 0 {
		return action.Result{}, fmt.Errorf("float vip %s: no candidate other than the failed holder %s is configured", addr, orNone(failed))
	}
	return action.Result{}, fmt.Errorf("float vip %s: no healthy candidate took it (%s)", addr, strings.Join(tried, "; "))
}

// Verify confirms that a candidate holds a valid lease taken by this
// action and that its agent reports the address on.
func (f *Float) Verify(ctx context.Context, req action.Request) error {
	addr, cands, err := f.target(req)
	if err != nil {
		return err
	}
	l, err := readLease(ctx, f.kv, addr)
	if err != nil {
		return fmt.Errorf("verify float of vip %s: %w", addr, err)
	}
	if !l.Valid(f.now()) {
		return fmt.Errorf("verify float of vip %s: lease of %s (term %d) is released or expired", addr, l.Holder, l.Term)
	}
	if l.Action != req.ID {
		return fmt.Errorf("verify float of vip %s: lease held by %s (term %d) was taken by action %q, not this one (%s)", addr, l.Holder, l.Term, l.Action, req.ID)
	}
	if !slices.Contains(cands, l.Holder) {
		return fmt.Errorf("verify float of vip %s: holder %s is not a candidate", addr, l.Holder)
	}
	held, present, err := f.status(ctx, req, l.Holder, addr)
	if err != nil {
		return fmt.Errorf("verify float of vip %s to %s: %w", addr, l.Holder, err)
	}
	if !held || !present {
		return fmt.Errorf("verify float of vip %s to %s: agent reports lease held %t, address on %t", addr, l.Holder, held, present)
	}
	return nil
}

// status asks node's agent for vip.status, bounded by StatusTimeout.
func (f *Float) status(ctx context.Context, req action.Request, node string, addr netip.Addr) (held, present bool, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.cfg.StatusTimeout,
		fmt.Errorf("%w: node %s did not answer %s within %s", action.ErrAgentUnreachable, node, VerbStatus, f.cfg.StatusTimeout))
	defer cancel()
	// A fresh id per call: agents answer a repeated id with the first
	// reply, and a status must be read anew each time.
	res, err := f.caller.Call(ctx, action.NodeRequest{
		ID:       fmt.Sprintf("%s/status/%s/%d", req.ID, node, f.seq.Add(1)),
		Verb:     VerbStatus,
		Node:     node,
		EventID:  req.EventID,
		Params:   map[string]any{"vip": addr.String()},
		Deadline: f.now().Add(f.cfg.StatusTimeout),
	})
	if err != nil {
		return false, false, fmt.Errorf("%s of vip %s on node %s: %w", VerbStatus, addr, node, err)
	}
	held, _ = res.Details[detailLeaseHeld].(bool)
	present, _ = res.Details[detailAddressPresent].(bool)
	return held, present, nil
}

// acquire asks node's agent for vip.acquire under the action's id, so a
// retry of the action is a retry of the same request.
func (f *Float) acquire(ctx context.Context, req action.Request, node string, addr netip.Addr) (action.Result, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.cfg.AcquireTimeout,
		fmt.Errorf("%w: node %s did not answer %s within %s", action.ErrAgentUnreachable, node, VerbAcquire, f.cfg.AcquireTimeout))
	defer cancel()
	res, err := f.caller.Call(ctx, action.NodeRequest{
		ID:       req.ID,
		Verb:     VerbAcquire,
		Node:     node,
		EventID:  req.EventID,
		Params:   map[string]any{"vip": addr.String()},
		Deadline: f.now().Add(f.cfg.AcquireTimeout),
	})
	if err != nil {
		return res, fmt.Errorf("%s of vip %s on node %s: %w", VerbAcquire, addr, node, err)
	}
	return res, nil
}

func orNone(s string) string {
	if s == "" {
		return "(no holder)"
	}
	return s
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

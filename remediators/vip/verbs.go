package vip

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/selfheal/healer/action"
)

// Names of the node verbs the Keeper answers.
const (
	// VerbAcquire takes the VIP's lease, then adds the address and
	// announces it. Params: {"vip": "10.10.0.100"}; the request needs an
	// id, which the lease records.
	VerbAcquire = "vip.acquire"
	// VerbRelease removes the address, then releases the lease. Params:
	// {"vip": "10.10.0.100"}; the request needs an id.
	VerbRelease = "vip.release"
	// VerbStatus reports whether the node holds the lease and carries the
	// address (Details "lease_held" and "address_present", both booleans).
	// Params: {"vip": "10.10.0.100"}.
	VerbStatus = "vip.status"
)

// Verbs returns the node verbs of the Keeper, for the agent to register:
// vip.acquire, vip.release and vip.status. They act only while Run runs
// (vip.acquire refuses otherwise: a lease nobody renews must not be taken).
func (k *Keeper) Verbs() []action.NodeVerb {
	return []action.NodeVerb{
		&verb{k: k, name: VerbAcquire},
		&verb{k: k, name: VerbRelease},
		&verb{k: k, name: VerbStatus},
	}
}

// verb is one of the Keeper's node verbs.
type verb struct {
	k    *Keeper
	name string
}

var _ action.NodeVerb = (*verb)(nil)

// Name returns the verb's wire name.
func (v *verb) Name() string { return v.name }

// Run validates the request and runs the verb.
func (v *verb) Run(ctx context.Context, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	st, err := v.k.parseRequest(v.name, req)
	if err != nil {
		return action.Result{}, err
	}
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, req.Deadline,
			fmt.Errorf("%s request %s: deadline %s passed", v.name, req.ID, req.Deadline.Format("15:04:05.000")))
		defer cancel()
	}
	switch v.name {
	case VerbAcquire:
		return v.k.acquireVIP(ctx, st, req, progress)
	case VerbRelease:
		return v.k.releaseVIP(ctx, st, req)
	default:
		return v.k.statusVIP(ctx, st)
	}
}

// parseRequest checks a request strictly: addressed to this node, only the
// "vip" parameter, naming a VIP configured on this node.
func (k *Keeper) parseRequest(verbName string, req action.NodeRequest) (*vipState, error) {
	if req.Verb != "" && req.Verb != verbName {
		return nil, fmt.Errorf("%w: %s: request %s names verb %q", action.ErrInvalidParams, verbName, req.ID, req.Verb)
	}
	if req.Node != "" && req.Node != k.cfg.Node {
		return nil, fmt.Errorf("%w: %s: request %s is for node %q, this is node %q", action.ErrInvalidParams, verbName, req.ID, req.Node, k.cfg.Node)
	}
	if verbName != VerbStatus && req.ID == "" {
		return nil, fmt.Errorf("%w: %s: request without an id", action.ErrInvalidParams, verbName)
	}
	addr, bits, err := parseVIPParam(verbName, req.Params)
	if err != nil {
		return nil, err
	}
	st, ok := k.states[addr]
	if !ok {
		return nil, fmt.Errorf("%w: %s: vip %s is not configured on node %s (configured: %s)", action.ErrInvalidParams, verbName, addr, k.cfg.Node, k.configured())
	}
	if bits >= 0 && bits != st.vip.Prefix.Bits() {
		return nil, fmt.Errorf("%w: %s: vip %s/%d is configured on node %s as %s", action.ErrInvalidParams, verbName, addr, bits, k.cfg.Node, st.vip.Prefix)
	}
	return st, nil
}

// parseVIPParam reads the one parameter of the verbs, "vip": an IPv4
// address ("10.10.0.100") or an address with its prefix length
// ("10.10.0.100/24"). bits is -1 when no prefix length was given.
func parseVIPParam(verbName string, params map[string]any) (addr netip.Addr, bits int, err error) {
	for key := range params {
		if key != "vip" {
			return netip.Addr{}, 0, fmt.Errorf("%w: %s: unknown parameter %q (known: vip)", action.ErrInvalidParams, verbName, key)
		}
	}
	raw, ok := params["vip"]
	if !ok || raw == nil {
		return netip.Addr{}, 0, fmt.Errorf("%w: %s: parameter vip is required", action.ErrInvalidParams, verbName)
	}
	s, ok := raw.(string)
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("%w: %s: vip must be a string, got %T", action.ErrInvalidParams, verbName, raw)
	}
	if strings.Contains(s, "/") {
		p, err := parseVIPAddress(s)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("%w: %s: vip: %w", action.ErrInvalidParams, verbName, err)
		}
		return p.Addr(), p.Bits(), nil
	}
	a, err := parseFloatAddress(s)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("%w: %s: vip: %w", action.ErrInvalidParams, verbName, err)
	}
	return a, -1, nil
}

func (k *Keeper) configured() string {
	out := make([]string, 0, len(k.order))
	for _, st := range k.order {
		out = append(out, st.vip.Prefix.String())
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

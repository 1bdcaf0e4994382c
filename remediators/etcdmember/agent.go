package etcdmember

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/healer/action"
)

// VerbStart is the node verb that starts a replacement member on a master:
// it rewrites etcd's static-pod manifest for a fresh data directory and
// the existing cluster.
const VerbStart = "etcd.member.start"

// AgentProvisioner starts replacements through the agent of the master
// that hosts the member.
type AgentProvisioner struct {
	caller action.ProgressCaller
	nodes  map[string]string
}

var _ Provisioner = (*AgentProvisioner)(nil)

// NewAgentProvisioner returns the provisioner; nodes maps member names to
// node names (a member not listed runs on the node of its name).
func NewAgentProvisioner(caller action.ProgressCaller, nodes map[string]string) (*AgentProvisioner, error) {
	if caller == nil {
		return nil, errors.New("etcd.replace-member: the agent provisioner needs a transport to the node agents")
	}
	return &AgentProvisioner{caller: caller, nodes: nodes}, nil
}

// Node returns the node that hosts the member.
func (a *AgentProvisioner) Node(member string) string {
	if n, ok := a.nodes[member]; ok {
		return n
	}
	return member
}

// Start asks the node's agent to run VerbStart, which is idempotent for
// the action id.
func (a *AgentProvisioner) Start(ctx context.Context, spec MemberSpec, progress action.Progress) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	params, err := specParams(&spec)
	if err != nil {
		return err
	}
	node := a.Node(spec.Name)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Minute)
	}
	res, err := a.caller.CallProgress(ctx, action.NodeRequest{
		ID: spec.ActionID + ".provision", Verb: VerbStart, Node: node, Params: params, Deadline: deadline,
	}, progress)
	if err != nil {
		return fmt.Errorf("agent on %s: %w", node, err)
	}
	progress(ctx, "provision", map[string]any{"member": spec.Name, "node": node, "changed": res.Changed, "message": res.Message})
	return nil
}

// specParams is the spec as verb params.
func specParams(s *MemberSpec) (map[string]any, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// specFromParams decodes verb params into a spec, refusing params it does
// not know, and validates it.
func specFromParams(params map[string]any) (MemberSpec, error) {
	b, err := json.Marshal(params)
	if err != nil {
		return MemberSpec{}, fmt.Errorf("%w: %w", action.ErrInvalidParams, err)
	}
	var s MemberSpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return MemberSpec{}, fmt.Errorf("%w: %s: %w", action.ErrInvalidParams, VerbStart, err)
	}
	return s, s.Validate()
}

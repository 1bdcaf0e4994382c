package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/action"
)

// AgentClient sends action requests to node agents over NATS request/reply.
// It implements action.NodeCaller.
type AgentClient struct {
	nc *nats.Conn
	// AcceptTimeout is how long the agent has to acknowledge a request
	// before it counts as unreachable. A long action is fine once accepted.
	acceptTimeout time.Duration
}

var _ action.NodeCaller = (*AgentClient)(nil)

// NewAgentClient returns a client on nc. acceptTimeout <= 0 means 5s.
func NewAgentClient(nc *nats.Conn, acceptTimeout time.Duration) *AgentClient {
	if acceptTimeout <= 0 {
		acceptTimeout = 5 * time.Second
	}
	return &AgentClient{nc: nc, acceptTimeout: acceptTimeout}
}

// Call sends req to the agent on req.Node and waits for its reply.
func (c *AgentClient) Call(ctx context.Context, req action.NodeRequest) (action.Result, error) {
	return c.CallProgress(ctx, req, nil)
}

// CallProgress is Call, passing the agent's progress messages to progress
// as they arrive. The call ends at req.Deadline (or ctx's, if earlier); an
// agent that has not accepted the request within the accept timeout, or
// that has not answered by then, is reported as ErrAgentUnreachable: what
// it did is unknown, and a retry with the same req.ID is safe.
func (c *AgentClient) CallProgress(ctx context.Context, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	subj, err := AgentSubject(req.Node, AgentActSuffix)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: %w", action.ErrInvalidParams, err)
	}
	if req.ID == "" || req.Verb == "" {
		return action.Result{}, fmt.Errorf("%w: request to node %s needs an id and a verb", action.ErrInvalidParams, req.Node)
	}
	if req.Deadline.IsZero() {
		if dl, ok := ctx.Deadline(); ok {
			req.Deadline = dl
		} else {
			req.Deadline = time.Now().Add(time.Minute)
		}
	}
	ctx, cancel := context.WithDeadlineCause(ctx, req.Deadline,
		fmt.Errorf("%w: no reply from node %s to %s %s by its deadline", action.ErrAgentUnreachable, req.Node, req.Verb, req.ID))
	defer cancel()
	data, err := EncodeNodeRequest(req)
	if err != nil {
		return action.Result{}, err
	}
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: subscribe for the reply of node %s: %w", action.ErrAgentUnreachable, req.Node, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	msg := nats.NewMsg(subj)
	msg.Reply = inbox
	msg.Data = data
	InjectTrace(ctx, msg.Header)
	if err := c.nc.PublishMsg(msg); err != nil {
		return action.Result{}, fmt.Errorf("%w: send %s to node %s: %w", action.ErrAgentUnreachable, req.Verb, req.Node, err)
	}
	accepted := false
	for {
		wait := ctx
		var stop context.CancelFunc = func() {}
		if !accepted {
			wait, stop = context.WithTimeoutCause(ctx, c.acceptTimeout,
				fmt.Errorf("%w: node %s did not accept %s %s within %s", action.ErrAgentUnreachable, req.Node, req.Verb, req.ID, c.acceptTimeout))
		}
		m, err := sub.NextMsgWithContext(wait)
		cause := context.Cause(wait)
		stop()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return action.Result{}, fmt.Errorf("%w: no agent is listening for node %s", action.ErrAgentUnreachable, req.Node)
		case err != nil && cause != nil:
			return action.Result{}, cause
		case err != nil:
			return action.Result{}, fmt.Errorf("%w: reply from node %s: %w", action.ErrAgentUnreachable, req.Node, err)
		}
		if status := m.Header.Get("Status"); status == "503" {
			return action.Result{}, fmt.Errorf("%w: no agent is listening for node %s", action.ErrAgentUnreachable, req.Node)
		}
		accepted = true
		var rep NodeReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			return action.Result{}, fmt.Errorf("reply from node %s to %s: %w", req.Node, req.Verb, err)
		}
		if rep.ID != req.ID {
			return action.Result{}, fmt.Errorf("reply from node %s names action %q, want %q", req.Node, rep.ID, req.ID)
		}
		if rep.Progress != nil {
			if progress != nil && rep.Progress.Step != "" {
				progress(ctx, rep.Progress.Step, rep.Progress.Details)
			}
			continue
		}
		return rep.Outcome(req.Node)
	}
}

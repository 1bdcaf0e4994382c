package action

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// NodeVerb is one of the fixed actions `healer agent` runs on its own node
// (restart a unit, take a virtual IP). The agent never runs anything else:
// there is no free-form command and no shell string on the wire.
type NodeVerb interface {
	// Name is the verb's name on the wire, for example "restart" or
	// "vip.acquire".
	Name() string
	// Run validates req.Params (an error wrapping ErrInvalidParams when
	// they are wrong), re-checks that the action is still needed and safe
	// (ErrNotNeeded, ErrUnsafe), acts, and verifies. It must be idempotent
	// for the same req.ID.
	Run(ctx context.Context, req NodeRequest, progress Progress) (Result, error)
}

// NodeRequest is one request to a node's agent.
type NodeRequest struct {
	// ID identifies the action; a retried request carries the same ID.
	ID string `json:"id"`
	// Verb names the NodeVerb.
	Verb string `json:"verb"`
	// Node is the node the request is for.
	Node string `json:"node"`
	// EventID is the event the action answers, for the agent's log.
	EventID string `json:"event_id,omitempty"`
	// Params are the verb's parameters, decoded from JSON.
	Params map[string]any `json:"params,omitempty"`
	// Deadline is when the caller stops waiting for the reply.
	Deadline time.Time `json:"deadline"`
}

// NodeCaller sends a request to the agent on a node and waits for its
// reply. The errors the verb returned come back wrapping the same
// sentinels (ErrInvalidParams, ErrNotNeeded, ErrUnsafe, ErrBlocked);
// an agent that does not answer is ErrAgentUnreachable.
type NodeCaller interface {
	Call(ctx context.Context, req NodeRequest) (Result, error)
}

// ProgressCaller is a NodeCaller that also relays the verb's progress
// messages while it waits for the reply; bus.AgentClient is the real one.
type ProgressCaller interface {
	CallProgress(ctx context.Context, req NodeRequest, progress Progress) (Result, error)
}

// ErrAgentUnreachable means the node's agent did not answer in time. What
// it did is unknown, so callers must fail closed.
var ErrAgentUnreachable = errors.New("node agent unreachable")

// ErrFlapping means a target was restarted too often in its window;
// escalate instead of restarting again. It wraps ErrBlocked, so the
// engine treats it as final for the attempt and a ladder moves on.
var ErrFlapping = fmt.Errorf("restarted too often (flapping): %w", ErrBlocked)

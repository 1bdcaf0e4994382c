package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/selfheal/healer/action"
)

// Subjects of the node agents. Everything an agent may touch lives under
// healer.agent.<node-token>, so a per-node NATS user can be confined to its
// own node (see AgentPermissions).
const (
	// SubjectAgentPrefix starts every agent subject.
	SubjectAgentPrefix = "healer.agent"
	// AgentActSuffix is where an agent takes action requests
	// (healer.agent.<node>.act).
	AgentActSuffix = "act"
	// AgentEventsSuffix is where an agent sends its events
	// (healer.agent.<node>.events); serve relays them into HEALER_EVENTS.
	AgentEventsSuffix = "events"
	// QueueAgentRelay is the queue group of the serve replicas relaying
	// agent events, so each event is relayed by one replica.
	QueueAgentRelay = "healer-agent-relay"
	// AgentInboxPrefix starts the reply subjects of an agent's own requests
	// (_INBOX_healer.<node-token>.…), so an agent can subscribe to its
	// replies and no one else's.
	AgentInboxPrefix = "_INBOX_healer"
)

// nodeName is a Kubernetes node name: a DNS-1123 subdomain.
var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// NodeToken turns a node name into one NATS subject token. Node names are
// DNS-1123 subdomains, which never hold '_', so replacing '.' by '_' keeps
// distinct nodes distinct. Anything that is not a valid node name is an
// error: an agent subject must never be built from an unchecked string.
func NodeToken(node string) (string, error) {
	if len(node) == 0 || len(node) > 253 || !nodeName.MatchString(node) {
		return "", fmt.Errorf("node name %q: must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')", node)
	}
	return strings.ReplaceAll(node, ".", "_"), nil
}

// NodeFromToken reverses NodeToken.
func NodeFromToken(tok string) string { return strings.ReplaceAll(tok, "_", ".") }

// AgentSubject is healer.agent.<node-token>.<suffix>.
func AgentSubject(node, suffix string) (string, error) {
	tok, err := NodeToken(node)
	if err != nil {
		return "", err
	}
	return SubjectAgentPrefix + "." + tok + "." + suffix, nil
}

// AgentInbox is the inbox prefix an agent on node uses for its requests.
func AgentInbox(node string) (string, error) {
	tok, err := NodeToken(node)
	if err != nil {
		return "", err
	}
	return AgentInboxPrefix + "." + tok, nil
}

// AgentPermissionsOptions widen an agent's permissions for roles some nodes
// have.
type AgentPermissionsOptions struct {
	// KVBuckets are JetStream key-value buckets the agent may read and
	// write (a master's agent holds VIP leases in one).
	KVBuckets []string
}

// AgentPermissions are the NATS permissions of the agent on node: it may
// subscribe to its own action subject and its own inbox, publish its own
// events, and answer the requests it receives (each reply subject only for
// a bounded number of messages and time). It can neither receive another
// node's actions nor send events as another node.
func AgentPermissions(node string, opts AgentPermissionsOptions) (*server.Permissions, error) {
	tok, err := NodeToken(node)
	if err != nil {
		return nil, err
	}
	base := SubjectAgentPrefix + "." + tok
	inbox := AgentInboxPrefix + "." + tok + ".>"
	pub := []string{base + "." + AgentEventsSuffix}
	sub := []string{base + "." + AgentActSuffix, inbox}
	for _, b := range opts.KVBuckets {
		stream := "KV_" + b
		pub = append(pub,
			"$KV."+b+".>",
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.DIRECT.GET."+stream+".>",
			"$JS.API.STREAM.MSG.GET."+stream,
			"$JS.API.CONSUMER.CREATE."+stream+".>",
			"$JS.API.CONSUMER.DELETE."+stream+".>",
			"$JS.API.CONSUMER.INFO."+stream+".>",
			"$JS.FC."+stream+".>",
			"$JS.ACK."+stream+".>",
		)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
		// Progress messages and the final reply of one action.
		Response: &server.ResponsePermission{MaxMsgs: AgentMaxReplies, Expires: AgentMaxActionTime},
	}, nil
}

// AgentMaxReplies bounds the messages an agent sends for one request:
// progress messages and the final reply.
const AgentMaxReplies = 64

// AgentMaxActionTime bounds how long an agent may answer one request.
const AgentMaxActionTime = 30 * time.Minute

// Reply codes map the errors of a node verb onto the wire and back.
const (
	CodeOK            = ""
	CodeInvalidParams = "invalid_params"
	CodeNotNeeded     = "not_needed"
	CodeUnsafe        = "unsafe"
	CodeConflict      = "conflict"
	CodeBlocked       = "blocked"
	CodeFlapping      = "flapping"
	CodeFailed        = "failed"
)

// NodeReply is an agent's answer to a NodeRequest. Progress messages come
// first with Progress set; the last message is the reply itself.
type NodeReply struct {
	ID string `json:"id"`
	// Progress, when set, makes this a progress message, not the reply.
	Progress *NodeProgress `json:"progress,omitempty"`
	// Changed, Message and Details are the verb's Result.
	Changed bool           `json:"changed,omitempty"`
	Message string         `json:"message,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	// Code classifies a failure (one of the Code constants); Error says
	// what failed. Both are empty on success.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// NodeProgress is one step of a long action.
type NodeProgress struct {
	Step    string         `json:"step"`
	Details map[string]any `json:"details,omitempty"`
}

// ReplyFor encodes the outcome of a verb.
func ReplyFor(id string, res action.Result, err error) NodeReply {
	r := NodeReply{ID: id, Changed: res.Changed, Message: res.Message, Details: res.Details}
	if err == nil {
		return r
	}
	r.Error = err.Error()
	switch {
	case errors.Is(err, action.ErrInvalidParams):
		r.Code = CodeInvalidParams
	case errors.Is(err, action.ErrNotNeeded):
		r.Code = CodeNotNeeded
	case errors.Is(err, action.ErrUnsafe):
		r.Code = CodeUnsafe
	case errors.Is(err, action.ErrConflict):
		r.Code = CodeConflict
	case errors.Is(err, action.ErrFlapping):
		r.Code = CodeFlapping
	case errors.Is(err, action.ErrBlocked):
		r.Code = CodeBlocked
	default:
		r.Code = CodeFailed
	}
	return r
}

// Outcome decodes a reply back into the verb's Result and an error that
// wraps the sentinel its code names.
func (r *NodeReply) Outcome(node string) (action.Result, error) {
	res := action.Result{Changed: r.Changed, Message: r.Message, Details: r.Details}
	if r.Code == CodeOK && r.Error == "" {
		return res, nil
	}
	var sentinel error
	switch r.Code {
	case CodeInvalidParams:
		sentinel = action.ErrInvalidParams
	case CodeNotNeeded:
		sentinel = action.ErrNotNeeded
	case CodeUnsafe:
		sentinel = action.ErrUnsafe
	case CodeConflict:
		sentinel = action.ErrConflict
	case CodeFlapping:
		sentinel = action.ErrFlapping
	case CodeBlocked:
		sentinel = action.ErrBlocked
	}
	if sentinel == nil {
		return res, fmt.Errorf("agent on node %s: %s", node, r.Error)
	}
	return res, fmt.Errorf("agent on node %s: %s: %w", node, r.Error, sentinel)
}

// EncodeNodeRequest is the wire form of a request.
func EncodeNodeRequest(req action.NodeRequest) ([]byte, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request %s for node %s: %w", req.Verb, req.ID, req.Node, err)
	}
	return b, nil
}

// AgentEventAck is the relay's answer to an agent that sent an event.
type AgentEventAck struct {
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     string `json:"error,omitempty"`
}

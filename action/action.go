package action

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Info describes a remediator: what it is called in policies, what it does,
// what it needs from the cluster and where its runbook is.
type Info struct {
	// Name is the name policies use, for example "node.cordon".
	Name string
	// Summary is one sentence on what the remediator does.
	Summary string
	// TargetKind is the subject kind it acts on ("node", "etcd", "vip").
	TargetKind string
	// Disruptive is true when acting takes a target out of service; such
	// actions count against the blast-radius budget.
	Disruptive bool
	// RBAC lists the Kubernetes permissions the remediator needs.
	RBAC []Rule
	// Runbook is the path of the runbook, relative to the repository.
	Runbook string
	// Example is a decision document that selects this remediator.
	Example string
}

// Rule is one Kubernetes RBAC rule a remediator needs.
type Rule struct {
	APIGroups []string
	Resources []string
	Verbs     []string
}

// Request is one action a remediator is asked to take.
type Request struct {
	// ID identifies this action; remediators mark what they change with it.
	ID string
	// EventID is the event the action answers.
	EventID string
	// EventType is the event's type, for example "NodeKernelDeadlock".
	EventType string
	// Target is the event's subject, for example "node/worker-1".
	Target string
	// Problem identifies the problem instance the action answers (the
	// same for its firing and its resolved event), so an undo reverses
	// only what this problem asked for.
	Problem string
	// Params are the decision's params, already validated.
	Params map[string]any
	// Approvers are the humans who approved this action, empty when the
	// decision needed no approval. Remediators may refuse their riskiest
	// params (node.drain's force) without one.
	Approvers []string
}

// TargetName returns the part of Target after "<kind>/".
func (r *Request) TargetName() string {
	for i := 0; i < len(r.Target); i++ {
		if r.Target[i] == '/' {
			return r.Target[i+1:]
		}
	}
	return r.Target
}

// Progress receives a remediator's progress while it acts, so long actions
// show up in the audit trail as they happen. Implementations must be safe
// to call from the remediator's goroutine.
type Progress func(ctx context.Context, step string, details map[string]any)

// Result says what an action or undo did.
type Result struct {
	// Changed is false when there was nothing to do (already done by this
	// action, for example after a redelivery).
	Changed bool
	// Message is a one-line human summary.
	Message string
	// Details go into the audit record.
	Details map[string]any
}

// Remediator is one kind of repair.
type Remediator interface {
	// Info describes the remediator.
	Info() Info
	// Validate checks a decision's params before anything else happens.
	Validate(params map[string]any) error
	// Check re-reads the world just before acting. It returns nil when the
	// action is still needed and safe, an error wrapping ErrNotNeeded when
	// there is nothing to do, and an error wrapping ErrUnsafe when acting
	// would be unsafe or safety cannot be established.
	Check(ctx context.Context, req Request) error
	// Act performs the action. It must be idempotent for the same Request.ID.
	Act(ctx context.Context, req Request, progress Progress) (Result, error)
	// Verify confirms that the action had its effect.
	Verify(ctx context.Context, req Request) error
}

// Undoer is implemented by remediators whose action can be reversed when
// the problem clears (uncordon after cordon).
type Undoer interface {
	// Undo reverses what healer did to the target, and only that: a target
	// a human has since changed is left alone, and Result says so.
	Undo(ctx context.Context, req Request) (Result, error)
}

// ErrNotNeeded means the re-check found nothing to do. It is not a failure
// and does not count against a circuit breaker.
var ErrNotNeeded = errors.New("action not needed")

// ErrUnsafe means acting would be unsafe, or safety could not be
// established. The engine records it and does not act.
var ErrUnsafe = errors.New("action unsafe")

// ErrConflict means the target changed between the re-check and the act
// (an optimistic-concurrency conflict). It is retried and does not count
// against a circuit breaker.
var ErrConflict = errors.New("target changed concurrently")

// ErrBlocked means the action ran its full time but something outside
// healer kept refusing it (a PodDisruptionBudget). It is final for this
// attempt — audited as failed, the ladder escalates — and is not counted
// against the remediator's circuit breaker.
var ErrBlocked = errors.New("action blocked")

// ErrInvalidParams wraps a parameter validation failure.
var ErrInvalidParams = errors.New("invalid params")

// StringParam reads an optional string parameter.
func StringParam(params map[string]any, key, def string) (string, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: %s must be a string, got %T", ErrInvalidParams, key, v)
	}
	return s, nil
}

// BoolParam reads an optional boolean that defaults to false.
func BoolParam(params map[string]any, key string) (bool, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%w: %s must be true or false, got %T", ErrInvalidParams, key, v)
	}
	return b, nil
}

// StringsParam reads an optional list of strings; a single string counts as
// a list of one.
func StringsParam(params map[string]any, key string) ([]string, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return nil, nil
	}
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case []string:
		return x, nil
	case []any:
		out := make([]string, 0, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s[%d] must be a string, got %T", ErrInvalidParams, key, i, e)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: %s must be a list of strings, got %T", ErrInvalidParams, key, v)
	}
}

// DurationParam reads an optional duration given as a Go duration string
// ("30s") or a number of seconds.
func DurationParam(params map[string]any, key string, def time.Duration) (time.Duration, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case string:
		d, err := time.ParseDuration(x)
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %w", ErrInvalidParams, key, err)
		}
		return d, nil
	case float64:
		return time.Duration(x * float64(time.Second)), nil
	case int:
		return time.Duration(x) * time.Second, nil
	default:
		return 0, fmt.Errorf("%w: %s must be a duration, got %T", ErrInvalidParams, key, v)
	}
}

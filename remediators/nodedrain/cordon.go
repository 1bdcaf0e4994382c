package nodedrain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"github.com/selfheal/healer/action"
)

// Annotations healer puts on nodes it cordons.
const (
	// AnnotationOwner holds the id of the healer action that cordoned the node.
	AnnotationOwner = "healer.io/owner"
	// AnnotationCordonedAt holds when healer cordoned the node (RFC 3339).
	AnnotationCordonedAt = "healer.io/cordoned-at"
	// AnnotationReason holds why healer cordoned the node.
	AnnotationReason = "healer.io/reason"
	// AnnotationProblems lists the problems (comma-separated ids) that
	// need the node cordoned. A second problem on a node healer already
	// cordoned joins the list instead of being ignored, and the node is
	// uncordoned only when the last of them clears.
	AnnotationProblems = "healer.io/problems"
)

// CordonName is the name policies use for the cordon remediator.
const CordonName = "node.cordon"

// Cordon marks a node unschedulable; its undo uncordons it.
type Cordon struct {
	client kubernetes.Interface
	log    *slog.Logger
	now    func() time.Time
}

var (
	_ action.Remediator = (*Cordon)(nil)
	_ action.Undoer     = (*Cordon)(nil)
)

// NewCordon returns the node.cordon remediator acting through client.
func NewCordon(client kubernetes.Interface, log *slog.Logger) *Cordon {
	return &Cordon{client: client, log: log.With("remediator", CordonName), now: time.Now}
}

// Info describes node.cordon.
func (c *Cordon) Info() action.Info {
	return action.Info{
		Name:       CordonName,
		Summary:    "Marks a node unschedulable so no new pods land on it; uncordons it when the problem clears, if healer still owns it.",
		TargetKind: "node",
		Disruptive: true,
		RBAC: []action.Rule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		},
		Runbook: "runbooks/node.cordon.md",
		Example: `{"remediator": "node.cordon", "params": {"reason": "NodeKernelDeadlock"}, "approval": "none", "reason": "kernel deadlock"}`,
	}
}

// cordonParams are node.cordon's parameters.
type cordonParams struct {
	// reason is recorded on the node and in its Event.
	reason string
	// condition, when set, must hold on a fresh read of the node with one
	// of statuses, or the cordon is not needed (or unsafe, if the node
	// does not report the condition at all).
	condition string
	statuses  []string
}

func parseCordonParams(params map[string]any) (cordonParams, error) {
	var p cordonParams
	for k := range params {
		switch k {
		case "reason", "condition", "condition_status":
		default:
			return p, fmt.Errorf("%w: node.cordon: unknown parameter %q (known: reason, condition, condition_status)", action.ErrInvalidParams, k)
		}
	}
	var err error
	if p.reason, err = action.StringParam(params, "reason", ""); err != nil {
		return p, fmt.Errorf("node.cordon: %w", err)
	}
	if p.condition, err = action.StringParam(params, "condition", ""); err != nil {
		return p, fmt.Errorf("node.cordon: %w", err)
	}
	if p.statuses, err = action.StringsParam(params, "condition_status"); err != nil {
		return p, fmt.Errorf("node.cordon: %w", err)
	}
	if len(p.statuses) > 0 && p.condition == "" {
		return p, fmt.Errorf("%w: node.cordon: condition_status given without condition", action.ErrInvalidParams)
	}
	for _, s := range p.statuses {
		switch corev1.ConditionStatus(s) {
		case corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown:
		default:
			return p, fmt.Errorf("%w: node.cordon: condition_status %q (want True, False or Unknown)", action.ErrInvalidParams, s)
		}
	}
	if p.condition != "" && len(p.statuses) == 0 {
		p.statuses = []string{string(corev1.ConditionTrue)}
	}
	return p, nil
}

// Validate checks node.cordon's params.
func (c *Cordon) Validate(params map[string]any) error {
	_, err := parseCordonParams(params)
	return err
}

// Check re-reads the node from the API server (not a cache): it must still
// exist, not be cordoned by anyone else, and, when the policy named a
// condition, still have it.
func (c *Cordon) Check(ctx context.Context, req action.Request) error {
	p, err := parseCordonParams(req.Params)
	if err != nil {
		return err
	}
	node, err := c.get(ctx, req)
	if err != nil {
		return err
	}
	return checkNode(node, req, p)
}

func (c *Cordon) get(ctx context.Context, req action.Request) (*corev1.Node, error) {
	name := req.TargetName()
	node, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: node %s no longer exists", action.ErrNotNeeded, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", name, err)
	}
	return node, nil
}

func checkNode(node *corev1.Node, req action.Request, p cordonParams) error {
	if node.Spec.Unschedulable && node.Annotations[AnnotationOwner] == "" {
		return fmt.Errorf("%w: node %s is already cordoned by someone else; healer leaves it alone", action.ErrNotNeeded, node.Name)
	}
	if p.condition == "" {
		return nil
	}
	for _, cond := range node.Status.Conditions {
		if string(cond.Type) != p.condition {
			continue
		}
		if slices.Contains(p.statuses, string(cond.Status)) {
			return nil
		}
		return fmt.Errorf("%w: node %s condition %s is now %s (reason %q)", action.ErrNotNeeded, node.Name, cond.Type, cond.Status, cond.Reason)
	}
	return fmt.Errorf("%w: node %s does not report condition %s, so healer cannot tell whether it still holds", action.ErrUnsafe, node.Name, p.condition)
}

// problems returns the problem ids on the node.
func problems(node *corev1.Node) []string {
	v := node.Annotations[AnnotationProblems]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// Act cordons the node and marks it as owned by this action. The patch
// carries the resourceVersion read just before it, so a concurrent change
// by someone else makes it fail instead of being overwritten.
func (c *Cordon) Act(ctx context.Context, req action.Request, progress action.Progress) (action.Result, error) {
	p, err := parseCordonParams(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	node, err := c.get(ctx, req)
	if err != nil {
		return action.Result{}, err
	}
	if err := checkNode(node, req, p); err != nil {
		return action.Result{}, err
	}
	if req.Problem == "" {
		return action.Result{}, fmt.Errorf("%w: node.cordon: request without a problem id", action.ErrInvalidParams)
	}
	held := problems(node)
	if slices.Contains(held, req.Problem) {
		return action.Result{Message: fmt.Sprintf("node %s already cordoned for this problem", node.Name)}, nil
	}
	if node.Spec.Unschedulable {
		// Cordoned by healer for another problem: this one joins, so the
		// node stays cordoned until every problem that needs it clears.
		patch := map[string]any{"metadata": map[string]any{
			"resourceVersion": node.ResourceVersion,
			"annotations":     map[string]any{AnnotationProblems: strings.Join(append(held, req.Problem), ",")},
		}}
		if err := c.patch(ctx, node.Name, patch); err != nil {
			return action.Result{}, fmt.Errorf("join cordon of node %s: %w", node.Name, err)
		}
		return action.Result{
			Changed: false,
			Message: fmt.Sprintf("node %s was already cordoned by healer action %s; this problem now holds it too", node.Name, node.Annotations[AnnotationOwner]),
			Details: map[string]any{"node": node.Name, "owner": node.Annotations[AnnotationOwner], "problems": len(held) + 1},
		}, nil
	}
	reason := p.reason
	if reason == "" {
		reason = req.EventType
	}
	patch := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": node.ResourceVersion,
			"annotations": map[string]any{
				AnnotationOwner:      req.ID,
				AnnotationCordonedAt: c.now().UTC().Format(time.RFC3339),
				AnnotationReason:     reason,
				AnnotationProblems:   req.Problem,
			},
		},
		"spec": map[string]any{"unschedulable": true},
	}
	if err := c.patch(ctx, node.Name, patch); err != nil {
		return action.Result{}, fmt.Errorf("cordon node %s: %w", node.Name, err)
	}
	c.event(ctx, node, "HealerCordoned", fmt.Sprintf("healer cordoned the node: %s (action %s, event %s)", reason, req.ID, req.EventID))
	return action.Result{
		Changed: true,
		Message: fmt.Sprintf("cordoned node %s", node.Name),
		Details: map[string]any{"node": node.Name, "reason": reason},
	}, nil
}

// Verify confirms the node is unschedulable, owned by healer and held for
// this problem.
func (c *Cordon) Verify(ctx context.Context, req action.Request) error {
	node, err := c.client.CoreV1().Nodes().Get(ctx, req.TargetName(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("verify cordon of node %s: %w", req.TargetName(), err)
	}
	if !node.Spec.Unschedulable {
		return fmt.Errorf("verify cordon of node %s: node is schedulable", node.Name)
	}
	if node.Annotations[AnnotationOwner] == "" {
		return fmt.Errorf("verify cordon of node %s: no %s annotation", node.Name, AnnotationOwner)
	}
	if !slices.Contains(problems(node), req.Problem) {
		return fmt.Errorf("verify cordon of node %s: problem %s not in %s", node.Name, req.Problem, AnnotationProblems)
	}
	return nil
}

// Undo releases this problem's hold on the node and uncordons it when no
// other problem holds it and healer still owns it. A node someone else
// cordoned, or one that this problem never held, is left alone; a node
// someone else has uncordoned keeps its schedulability and loses only
// healer's stale marks.
func (c *Cordon) Undo(ctx context.Context, req action.Request) (action.Result, error) {
	node, err := c.get(ctx, req)
	if err != nil {
		if errors.Is(err, action.ErrNotNeeded) {
			return action.Result{Message: err.Error()}, nil
		}
		return action.Result{}, err
	}
	owner := node.Annotations[AnnotationOwner]
	held := problems(node)
	details := map[string]any{"node": node.Name, "owner": owner, "unschedulable": node.Spec.Unschedulable, "problems": len(held)}
	if owner == "" || !slices.Contains(held, req.Problem) {
		return action.Result{Message: fmt.Sprintf("node %s is not held by healer for this problem; left alone", node.Name), Details: details}, nil
	}
	rest := slices.DeleteFunc(slices.Clone(held), func(p string) bool { return p == req.Problem })
	if len(rest) > 0 && node.Spec.Unschedulable {
		patch := map[string]any{"metadata": map[string]any{
			"resourceVersion": node.ResourceVersion,
			"annotations":     map[string]any{AnnotationProblems: strings.Join(rest, ",")},
		}}
		if err := c.patch(ctx, node.Name, patch); err != nil {
			return action.Result{}, fmt.Errorf("release hold on node %s: %w", node.Name, err)
		}
		return action.Result{
			Changed: true,
			Message: fmt.Sprintf("node %s stays cordoned: %d other problem(s) still hold it", node.Name, len(rest)),
			Details: details,
		}, nil
	}
	clearMarks := map[string]any{
		"resourceVersion": node.ResourceVersion,
		"annotations": map[string]any{
			AnnotationOwner: nil, AnnotationCordonedAt: nil, AnnotationReason: nil, AnnotationProblems: nil,
		},
	}
	if !node.Spec.Unschedulable {
		if err := c.patch(ctx, node.Name, map[string]any{"metadata": clearMarks}); err != nil {
			return action.Result{}, fmt.Errorf("drop ownership marks on node %s: %w", node.Name, err)
		}
		return action.Result{
			Changed: true,
			Message: fmt.Sprintf("node %s was already uncordoned by someone else; healer left it as it is and dropped its marks", node.Name),
			Details: details,
		}, nil
	}
	if by := unschedulableSetBy(node); by != "" && by != fieldManager {
		// Someone uncordoned and cordoned it again: it is theirs now.
		if err := c.patch(ctx, node.Name, map[string]any{"metadata": clearMarks}); err != nil {
			return action.Result{}, fmt.Errorf("drop ownership marks on node %s: %w", node.Name, err)
		}
		return action.Result{
			Changed: true,
			Message: fmt.Sprintf("node %s was cordoned again by someone else (%s); healer left it cordoned and dropped its marks", node.Name, by),
			Details: details,
		}, nil
	}
	if err := c.patch(ctx, node.Name, map[string]any{"metadata": clearMarks, "spec": map[string]any{"unschedulable": false}}); err != nil {
		return action.Result{}, fmt.Errorf("uncordon node %s: %w", node.Name, err)
	}
	c.event(ctx, node, "HealerUncordoned", fmt.Sprintf("healer uncordoned the node: problem cleared (cordoned by action %s, undo by action %s)", owner, req.ID))
	return action.Result{Changed: true, Message: fmt.Sprintf("uncordoned node %s", node.Name), Details: details}, nil
}

// fieldManager is the name healer's changes to nodes are recorded under in
// managedFields, which is how a later human cordon is told apart from
// healer's own.
const fieldManager = "healer"

// unschedulableSetBy returns the field manager that last set
// spec.unschedulable, or "" when the node does not record one.
func unschedulableSetBy(node *corev1.Node) string {
	for _, mf := range node.ManagedFields {
		if mf.FieldsV1 == nil {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields); err != nil {
			continue
		}
		if spec, ok := fields["f:spec"].(map[string]any); ok {
			if _, ok := spec["f:unschedulable"]; ok {
				return mf.Manager
			}
		}
	}
	return ""
}

func (c *Cordon) patch(ctx context.Context, name string, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{FieldManager: fieldManager})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("%w: %w", action.ErrConflict, err)
	}
	return err
}

// event posts a Kubernetes Event on the node. Failing to post one is logged
// and does not fail the action: the audit trail is the record of truth.
func (c *Cordon) event(ctx context.Context, node *corev1.Node, reason, msg string) {
	now := metav1.NewTime(c.now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%s", node.Name, rand.String(10)),
			Namespace: metav1.NamespaceDefault,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID,
		},
		Reason:              reason,
		Message:             msg,
		Type:                corev1.EventTypeNormal,
		Source:              corev1.EventSource{Component: "healer"},
		ReportingController: "healer.io/healer",
		ReportingInstance:   "healer",
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	if _, err := c.client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.log.WarnContext(ctx, "post node event", "node", node.Name, "reason", reason, "err", err)
	}
}

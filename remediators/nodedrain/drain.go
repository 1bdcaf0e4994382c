package nodedrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	policyv1client "k8s.io/client-go/kubernetes/typed/policy/v1"
	"k8s.io/kubectl/pkg/drain"

	"github.com/selfheal/healer/action"
)

// DrainName is the name policies use for the drain remediator.
const DrainName = "node.drain"

const (
	// DefaultDrainTimeout is how long node.drain waits, by default, for
	// the node's pods to be evicted and gone.
	DefaultDrainTimeout = 5 * time.Minute
	// DefaultEvictRetryDelay is how long node.drain waits before asking
	// again to evict a pod whose eviction was refused with 429 Too Many
	// Requests (a PodDisruptionBudget allows no disruption now), as
	// kubectl drain does.
	DefaultEvictRetryDelay = 5 * time.Second
)

// Drain cordons a node exactly as node.cordon does and then evicts its pods
// through the Eviction API, so that PodDisruptionBudgets are honoured.
// DaemonSet and mirror pods stay. Pods are never deleted directly. Its undo
// is node.cordon's: the node is uncordoned when the last problem holding it
// clears; the evicted pods are not brought back (their controllers have
// already recreated them elsewhere).
type Drain struct {
	client kubernetes.Interface
	log    *slog.Logger
	cordon *Cordon
	// retryDelay is the pause before retrying a refused eviction.
	retryDelay time.Duration
}

var (
	_ action.Remediator = (*Drain)(nil)
	_ action.Undoer     = (*Drain)(nil)
)

// NewDrain returns the node.drain remediator acting through client.
func NewDrain(client kubernetes.Interface, log *slog.Logger) *Drain {
	log = log.With("remediator", DrainName)
	return &Drain{
		client:     client,
		log:        log,
		cordon:     &Cordon{client: client, log: log, now: time.Now},
		retryDelay: DefaultEvictRetryDelay,
	}
}

// Info describes node.drain.
func (d *Drain) Info() action.Info {
	return action.Info{
		Name:       DrainName,
		Summary:    "Cordons a node and evicts its pods through the Eviction API, honouring PodDisruptionBudgets (DaemonSet and mirror pods stay); uncordons it when the problem clears.",
		TargetKind: "node",
		Disruptive: true,
		RBAC: []action.Rule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
			{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}},
			{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"list"}},
		},
		Runbook: "runbooks/node.drain.md",
		Example: `{"remediator": "node.drain", "params": {"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock", "timeout": "10m"}, "approval": "one", "reason": "kernel deadlock: move the workloads off the node"}`,
	}
}

// drainParams are node.drain's parameters.
type drainParams struct {
	// cordon are the params it shares with node.cordon: reason,
	// condition, condition_status.
	cordon       map[string]any
	cordonParams cordonParams
	// timeout bounds the evictions and the wait for the pods to go.
	timeout time.Duration
	// gracePeriod is the pods' termination grace period in seconds; -1
	// keeps each pod's own.
	gracePeriod int
	// deleteEmptyDir allows evicting pods with emptyDir volumes, whose
	// data is lost.
	deleteEmptyDir bool
	// force allows evicting pods no controller manages (nothing
	// recreates them). It needs a human approver.
	force bool
}

func parseDrainParams(params map[string]any) (drainParams, error) {
	p := drainParams{cordon: map[string]any{}}
	for k, v := range params {
		switch k {
		case "reason", "condition", "condition_status":
			p.cordon[k] = v
		case "timeout", "grace_period_seconds", "delete_emptydir_data", "force":
		default:
			return p, fmt.Errorf("%w: node.drain: unknown parameter %q (known: reason, condition, condition_status, timeout, grace_period_seconds, delete_emptydir_data, force)", action.ErrInvalidParams, k)
		}
	}
	var err error
	if p.cordonParams, err = parseCordonParams(p.cordon); err != nil {
		return p, fmt.Errorf("node.drain: %w", err)
	}
	if p.timeout, err = action.DurationParam(params, "timeout", DefaultDrainTimeout); err != nil {
		return p, fmt.Errorf("node.drain: %w", err)
	}
	if p.timeout <= 0 {
		return p, fmt.Errorf("%w: node.drain: timeout must be positive, got %s", action.ErrInvalidParams, p.timeout)
	}
	if p.gracePeriod, err = intParam(params, "grace_period_seconds", -1); err != nil {
		return p, fmt.Errorf("node.drain: %w", err)
	}
	switch {
	case p.gracePeriod == 0:
		// A grace period of 0 removes the pod from the API at once,
		// before its containers have stopped: a forced delete.
		return p, fmt.Errorf("%w: node.drain: grace_period_seconds 0 would delete pods without waiting for them to stop; use 1 or more, or -1 for each pod's own", action.ErrInvalidParams)
	case p.gracePeriod < -1:
		return p, fmt.Errorf("%w: node.drain: grace_period_seconds %d (want -1 for each pod's own, or 1 or more)", action.ErrInvalidParams, p.gracePeriod)
	}
	if p.deleteEmptyDir, err = action.BoolParam(params, "delete_emptydir_data"); err != nil {
		return p, fmt.Errorf("node.drain: %w", err)
	}
	if p.force, err = action.BoolParam(params, "force"); err != nil {
		return p, fmt.Errorf("node.drain: %w", err)
	}
	return p, nil
}

// intParam reads an optional whole number; JSON numbers arrive as float64.
func intParam(params map[string]any, key string, def int) (int, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case int:
		return x, nil
	case int64:
		if x < math.MinInt32 || x > math.MaxInt32 {
			return 0, fmt.Errorf("%w: %s %d out of range", action.ErrInvalidParams, key, x)
		}
		return int(x), nil
	case float64:
		if x != math.Trunc(x) || x < math.MinInt32 || x > math.MaxInt32 {
			return 0, fmt.Errorf("%w: %s must be a whole number, got %v", action.ErrInvalidParams, key, x)
		}
		return int(x), nil
	default:
		return 0, fmt.Errorf("%w: %s must be a whole number, got %T", action.ErrInvalidParams, key, v)
	}
}

// Validate checks node.drain's params. Whether force is allowed depends on
// who approved the action, so Check and Act decide that.
func (d *Drain) Validate(params map[string]any) error {
	_, err := parseDrainParams(params)
	return err
}

// params parses the request's params and refuses force without a human
// approver.
func (d *Drain) params(req action.Request) (drainParams, error) {
	p, err := parseDrainParams(req.Params)
	if err != nil {
		return p, err
	}
	if p.force && !slices.ContainsFunc(req.Approvers, func(a string) bool { return strings.TrimSpace(a) != "" }) {
		return p, fmt.Errorf("%w: node.drain: force evicts pods that nothing recreates and needs a human approver; action %s has none", action.ErrInvalidParams, req.ID)
	}
	return p, nil
}

// Check re-reads the node from the API server: it must still exist, not be
// cordoned by anyone but healer, and, when the policy named a condition,
// still have it. The pods on it must all be evictable with the given
// params (no emptyDir data without delete_emptydir_data, no unmanaged pods
// without force), and the server must serve the Eviction API; otherwise
// draining is unsafe.
func (d *Drain) Check(ctx context.Context, req action.Request) error {
	p, err := d.params(req)
	if err != nil {
		return err
	}
	node, err := d.cordon.get(ctx, req)
	if err != nil {
		return err
	}
	if err := checkNode(node, req, p.cordonParams); err != nil {
		return err
	}
	_, err = d.evictable(ctx, d.helper(ctx, p, nil), node.Name)
	return err
}

// helper returns the kubectl drain helper node.drain evicts with. Its
// client refuses pod deletes, so the helper can only ever evict; rec, when
// given, learns of every eviction answer and every pod gone.
func (d *Drain) helper(ctx context.Context, p drainParams, rec *evictions) *drain.Helper {
	h := &drain.Helper{
		Ctx:                  ctx,
		Client:               evictOnlyClient{Interface: d.client, rec: rec},
		Force:                p.force,
		GracePeriodSeconds:   p.gracePeriod,
		IgnoreAllDaemonSets:  true,
		Timeout:              p.timeout,
		DeleteEmptyDirData:   p.deleteEmptyDir,
		DisableEviction:      false,
		EvictErrorRetryDelay: d.retryDelay,
		Out:                  logWriter{ctx: ctx, log: d.log, level: slog.LevelDebug},
		ErrOut:               logWriter{ctx: ctx, log: d.log, level: slog.LevelDebug},
	}
	if rec != nil {
		h.OnPodDeletionOrEvictionFinished = rec.finished
	}
	return h
}

// paramHints turns the drain helper's advice in msg, written for
// kubectl's flags, into node.drain's params.
func paramHints(msg string) string {
	return strings.NewReplacer(
		"cannot delete ", "cannot evict ",
		"(use --delete-emptydir-data to override)", "(param delete_emptydir_data: true evicts them, and their emptyDir data is lost)",
		"(use --force to override)", "(param force: true, with a human approver, evicts them, and nothing recreates them)",
	).Replace(msg)
}

// evictable returns the pods on the node that a drain evicts. It fails
// with ErrUnsafe when some pod cannot be evicted with the params, or when
// the server has no Eviction API (draining without it would delete pods
// past their PodDisruptionBudgets).
func (d *Drain) evictable(ctx context.Context, h *drain.Helper, node string) (*drain.PodDeleteList, error) {
	gv, err := drain.CheckEvictionSupport(d.client)
	if err != nil {
		return nil, fmt.Errorf("drain node %s: discover the Eviction API: %w", node, err)
	}
	if gv.Empty() {
		return nil, fmt.Errorf("%w: drain node %s: the API server does not serve the Eviction API, and node.drain never deletes pods past their PodDisruptionBudgets", action.ErrUnsafe, node)
	}
	list, errs := h.GetPodsForDeletion(node)
	if list == nil {
		// Listing failed: nothing is known about the pods yet.
		return nil, fmt.Errorf("drain node %s: list pods: %w", node, errors.Join(errs...))
	}
	if len(errs) > 0 {
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			msgs = append(msgs, paramHints(e.Error()))
		}
		slices.Sort(msgs)
		return nil, fmt.Errorf("%w: drain node %s: %s", action.ErrUnsafe, node, strings.Join(msgs, "; "))
	}
	return list, nil
}

// Act cordons the node as node.cordon does (joining the problems that hold
// it), then evicts its pods and waits until they are gone. A
// PodDisruptionBudget that refuses an eviction is waited out: the
// eviction is retried every few seconds until the timeout param, and the
// error then names the pods still there and the budgets that hold them.
// Nothing is cordoned when the pods could not all be evicted anyway.
func (d *Drain) Act(ctx context.Context, req action.Request, progress action.Progress) (action.Result, error) {
	p, err := d.params(req)
	if err != nil {
		return action.Result{}, err
	}
	if req.Problem == "" {
		return action.Result{}, fmt.Errorf("%w: node.drain: request without a problem id", action.ErrInvalidParams)
	}
	node, err := d.cordon.get(ctx, req)
	if err != nil {
		return action.Result{}, err
	}
	if err := checkNode(node, req, p.cordonParams); err != nil {
		return action.Result{}, err
	}
	// Refuse before cordoning what could not be drained anyway.
	if _, err := d.evictable(ctx, d.helper(ctx, p, nil), node.Name); err != nil {
		return action.Result{}, err
	}
	cordonReq := req
	cordonReq.Params = p.cordon
	cordoned, err := d.cordon.Act(ctx, cordonReq, nil)
	if err != nil {
		return action.Result{}, err
	}

	rec := newEvictions()
	h := d.helper(ctx, p, rec)
	// Listed again now that the node is cordoned: this is the set to
	// evict.
	list, err := d.evictable(ctx, h, node.Name)
	if err != nil {
		return action.Result{}, err
	}
	pods := list.Pods()
	report := func(step string, details map[string]any) {
		if progress != nil {
			progress(ctx, step, details)
		}
	}
	start := map[string]any{"node": node.Name, "pods": len(pods), "timeout": p.timeout.String(), "cordoned": cordoned.Changed}
	if w := list.Warnings(); w != "" {
		start["skipped"] = w
	}
	report("evicting", start)
	d.log.InfoContext(ctx, "draining node", "node", node.Name, "pods", len(pods), "action_id", req.ID, "timeout", p.timeout)

	begin := time.Now()
	done := make(chan error, 1)
	go func() { done <- h.DeleteOrEvictPods(pods) }()
	var evicted []string
	refused := map[string]bool{}
	var drainErr error
	// The helper's goroutines hand their news over here, so progress is
	// only ever called from this goroutine. The helper sends every piece
	// of news before it returns.
	for running := true; running; {
		select {
		case ev := <-rec.news:
			switch {
			case ev.gone:
				evicted = append(evicted, ev.pod)
				report("evicted", map[string]any{"pod": ev.pod, "evicted": len(evicted), "remaining": len(pods) - len(evicted)})
			case ev.err != nil && !refused[ev.pod]:
				// The first refusal of each pod goes to the audit trail;
				// the retries only to the log.
				refused[ev.pod] = true
				report("eviction_refused", map[string]any{"pod": ev.pod, "reason": refusalReason(ev.err), "retry_every": d.retryDelay.String()})
				d.log.InfoContext(ctx, "eviction refused; retrying until the timeout", "node", node.Name, "pod", ev.pod, "err", refusalReason(ev.err))
			case ev.err != nil:
				d.log.DebugContext(ctx, "eviction refused again", "node", node.Name, "pod", ev.pod, "err", refusalReason(ev.err))
			}
		case drainErr = <-done:
			running = false
		}
	}
	details := map[string]any{"node": node.Name, "evicted": len(evicted), "cordoned": cordoned.Changed, "took": time.Since(begin).Round(time.Millisecond).String()}
	if len(evicted) > 0 {
		details["evicted_pods"] = evicted
	}
	if drainErr != nil {
		err := d.blocked(ctx, node.Name, pods, rec, p.timeout, time.Since(begin), drainErr)
		d.cordon.event(ctx, node, "HealerDrainFailed", fmt.Sprintf("healer could not drain the node (action %s): %v", req.ID, err))
		return action.Result{Changed: cordoned.Changed || len(evicted) > 0, Message: err.Error(), Details: details}, err
	}
	if len(pods) == 0 {
		msg := fmt.Sprintf("node %s has no pods to evict", node.Name)
		if cordoned.Changed {
			msg = fmt.Sprintf("cordoned node %s; it had no pods to evict", node.Name)
		}
		return action.Result{Changed: cordoned.Changed, Message: msg, Details: details}, nil
	}
	d.cordon.event(ctx, node, "HealerDrained", fmt.Sprintf("healer drained the node: evicted %d pod(s) (action %s, event %s)", len(evicted), req.ID, req.EventID))
	d.log.InfoContext(ctx, "drained node", "node", node.Name, "evicted", len(evicted), "action_id", req.ID)
	return action.Result{
		Changed: true,
		Message: fmt.Sprintf("drained node %s: evicted %d pod(s)", node.Name, len(evicted)),
		Details: details,
	}, nil
}

// blocked explains a drain that did not finish: which pods are still on
// the node, why their evictions were refused, and which
// PodDisruptionBudgets cover them.
func (d *Drain) blocked(ctx context.Context, node string, pods []corev1.Pod, rec *evictions, timeout, took time.Duration, drainErr error) error {
	gone := rec.goneSet()
	byReason := map[string][]string{}
	var terminating []string
	var blockedPods []corev1.Pod
	for _, pod := range pods {
		key := pod.Namespace + "/" + pod.Name
		if gone[key] {
			continue
		}
		cur, err := d.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) || (err == nil && cur.UID != pod.UID):
			continue // went after all
		case err == nil && cur.DeletionTimestamp != nil:
			terminating = append(terminating, key)
			continue
		case err == nil:
			pod = *cur
		}
		reason := "not evicted yet"
		if last := rec.lastRefusal(key); last != nil {
			reason = refusalReason(last)
		}
		byReason[reason] = append(byReason[reason], key)
		blockedPods = append(blockedPods, pod)
	}
	var parts []string
	for _, reason := range slices.Sorted(maps.Keys(byReason)) {
		parts = append(parts, fmt.Sprintf("eviction refused for %s (%s)", strings.Join(byReason[reason], ", "), reason))
	}
	if len(terminating) > 0 {
		parts = append(parts, fmt.Sprintf("evicted but still terminating: %s", strings.Join(terminating, ", ")))
	}
	if pdbs := d.coveringBudgets(ctx, blockedPods); len(pdbs) > 0 {
		parts = append(parts, "PodDisruptionBudgets: "+strings.Join(pdbs, "; "))
	}
	left := len(blockedPods) + len(terminating)
	if ctx.Err() != nil {
		return fmt.Errorf("drain node %s: stopped with %d pod(s) left: %s: %w", node, left, strings.Join(parts, "; "), context.Cause(ctx))
	}
	if left == 0 {
		// Every pod went after all, yet the helper failed: say why.
		return fmt.Errorf("drain node %s: %w", node, drainErr)
	}
	if took < timeout {
		// Given up before the timeout: an error other than a refusal.
		return fmt.Errorf("drain node %s: %d pod(s) still on the node: %s: %w", node, left, strings.Join(parts, "; "), drainErr)
	}
	return fmt.Errorf("%w: drain node %s: %d pod(s) still on the node after the %s timeout (refused evictions are retried every %s): %s",
		action.ErrBlocked, node, left, timeout, d.retryDelay, strings.Join(parts, "; "))
}

// coveringBudgets describes the PodDisruptionBudgets that select the pods.
// Failing to list them only leaves them out of the message.
func (d *Drain) coveringBudgets(ctx context.Context, pods []corev1.Pod) []string {
	var out []string
	seen := map[string]bool{}
	listed := map[string][]policyv1.PodDisruptionBudget{}
	for _, pod := range pods {
		pdbs, ok := listed[pod.Namespace]
		if !ok {
			l, err := d.client.PolicyV1().PodDisruptionBudgets(pod.Namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				d.log.WarnContext(ctx, "list PodDisruptionBudgets", "namespace", pod.Namespace, "err", err)
			} else {
				pdbs = l.Items
			}
			listed[pod.Namespace] = pdbs
		}
		for _, pdb := range pdbs {
			key := pdb.Namespace + "/" + pdb.Name
			if seen[key] || pdb.Spec.Selector == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
				continue
			}
			seen[key] = true
			out = append(out, fmt.Sprintf("%s (%s; %d healthy, %d needed, %d disruptions allowed)",
				key, budgetSpec(pdb.Spec), pdb.Status.CurrentHealthy, pdb.Status.DesiredHealthy, pdb.Status.DisruptionsAllowed))
		}
	}
	return out
}

func budgetSpec(s policyv1.PodDisruptionBudgetSpec) string {
	switch {
	case s.MinAvailable != nil:
		return "minAvailable " + s.MinAvailable.String()
	case s.MaxUnavailable != nil:
		return "maxUnavailable " + s.MaxUnavailable.String()
	default:
		return "no minAvailable or maxUnavailable"
	}
}

// refusalReason is the message of an eviction error with the causes the
// server gave (a PodDisruptionBudget's name and health).
func refusalReason(err error) string {
	msg := err.Error()
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		if d := status.Status().Details; d != nil {
			for _, c := range d.Causes {
				if c.Message != "" && !strings.Contains(msg, c.Message) {
					msg = strings.TrimSuffix(msg, ".") + ": " + c.Message
				}
			}
		}
	}
	return msg
}

// Verify confirms that the node is cordoned and held for this problem, as
// node.cordon's Verify does, and that only pods a drain leaves are still on
// it: DaemonSet pods, mirror pods and pods that have finished.
func (d *Drain) Verify(ctx context.Context, req action.Request) error {
	if err := d.cordon.Verify(ctx, req); err != nil {
		return fmt.Errorf("verify drain of node %s: %w", req.TargetName(), err)
	}
	name := req.TargetName()
	list, err := d.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String(),
	})
	if err != nil {
		return fmt.Errorf("verify drain of node %s: list pods: %w", name, err)
	}
	var left []string
	for _, pod := range list.Items {
		if !stays(&pod) {
			left = append(left, pod.Namespace+"/"+pod.Name)
		}
	}
	if len(left) > 0 {
		slices.Sort(left)
		return fmt.Errorf("verify drain of node %s: %d pod(s) still on it: %s", name, len(left), strings.Join(left, ", "))
	}
	return nil
}

// stays reports whether a drain leaves the pod on its node.
func stays(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return true
	}
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	ref := metav1.GetControllerOf(pod)
	return ref != nil && ref.Kind == "DaemonSet" && ref.APIVersion == appsv1.SchemeGroupVersion.String()
}

// Undo is node.cordon's undo: it releases this problem's hold on the node
// and uncordons it when no other problem holds it and healer still owns
// it. Evicted pods are not brought back.
func (d *Drain) Undo(ctx context.Context, req action.Request) (action.Result, error) {
	return d.cordon.Undo(ctx, req)
}

// evictions collects what happens to the pods of one drain, from the drain
// helper's goroutines, and hands it to Act's goroutine over news.
type evictions struct {
	news chan evictionNews

	mu       sync.Mutex
	refusals map[string]error // last refusal by ns/name
	gone     map[string]bool
}

// evictionNews is one eviction answer or one pod gone.
type evictionNews struct {
	pod  string // ns/name
	err  error  // the refusal, for an eviction answer
	gone bool
}

func newEvictions() *evictions {
	return &evictions{news: make(chan evictionNews), refusals: map[string]error{}, gone: map[string]bool{}}
}

// answered records the server's answer to one eviction.
func (e *evictions) answered(pod string, err error) {
	e.mu.Lock()
	if err == nil {
		delete(e.refusals, pod)
	} else {
		e.refusals[pod] = err
	}
	e.mu.Unlock()
	if err != nil && !apierrors.IsNotFound(err) {
		e.news <- evictionNews{pod: pod, err: err}
	}
}

// finished is the helper's OnPodDeletionOrEvictionFinished: err is nil
// when the evicted pod is gone.
func (e *evictions) finished(pod *corev1.Pod, _ bool, err error) {
	if err != nil {
		return // the helper returns it too
	}
	key := pod.Namespace + "/" + pod.Name
	e.mu.Lock()
	e.gone[key] = true
	e.mu.Unlock()
	e.news <- evictionNews{pod: key, gone: true}
}

func (e *evictions) lastRefusal(pod string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refusals[pod]
}

func (e *evictions) goneSet() map[string]bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.gone)
}

// evictOnlyClient is the clientset the drain helper works through: deleting
// a pod through it fails (a delete would pass PodDisruptionBudgets by), and
// every eviction answer is recorded when rec is set.
type evictOnlyClient struct {
	kubernetes.Interface
	rec *evictions
}

// CoreV1 returns a client whose pods cannot be deleted.
func (c evictOnlyClient) CoreV1() corev1client.CoreV1Interface {
	return noDeleteCore{c.Interface.CoreV1()}
}

// PolicyV1 returns a client whose evictions are recorded.
func (c evictOnlyClient) PolicyV1() policyv1client.PolicyV1Interface {
	return recordingPolicy{PolicyV1Interface: c.Interface.PolicyV1(), rec: c.rec}
}

type noDeleteCore struct{ corev1client.CoreV1Interface }

// Pods returns a client for namespace's pods that cannot delete them.
func (c noDeleteCore) Pods(namespace string) corev1client.PodInterface {
	return noDeletePods{c.CoreV1Interface.Pods(namespace)}
}

type noDeletePods struct{ corev1client.PodInterface }

// errPodDelete is what the drain helper gets when it tries to delete a pod
// instead of evicting it.
func errPodDelete() error {
	return errors.New("node.drain never deletes pods, it only evicts them")
}

// Delete refuses.
func (p noDeletePods) Delete(_ context.Context, name string, _ metav1.DeleteOptions) error {
	return fmt.Errorf("delete pod %s: %w", name, errPodDelete())
}

// DeleteCollection refuses.
func (p noDeletePods) DeleteCollection(context.Context, metav1.DeleteOptions, metav1.ListOptions) error {
	return fmt.Errorf("delete pods: %w", errPodDelete())
}

type recordingPolicy struct {
	policyv1client.PolicyV1Interface
	rec *evictions
}

// Evictions returns a client for namespace's evictions that records them.
func (p recordingPolicy) Evictions(namespace string) policyv1client.EvictionInterface {
	return recordingEvictions{EvictionInterface: p.PolicyV1Interface.Evictions(namespace), namespace: namespace, rec: p.rec}
}

type recordingEvictions struct {
	policyv1client.EvictionInterface
	namespace string
	rec       *evictions
}

// Evict evicts and records the answer.
func (e recordingEvictions) Evict(ctx context.Context, eviction *policyv1.Eviction) error {
	err := e.EvictionInterface.Evict(ctx, eviction)
	if e.rec != nil {
		e.rec.answered(e.namespace+"/"+eviction.Name, err)
	}
	return err
}

// logWriter logs what the drain helper prints, one record per write.
type logWriter struct {
	ctx   context.Context
	log   *slog.Logger
	level slog.Level
}

func (w logWriter) Write(b []byte) (int, error) {
	if msg := strings.TrimSpace(string(b)); msg != "" {
		w.log.Log(w.ctx, w.level, "kubectl drain: "+msg)
	}
	return len(b), nil
}

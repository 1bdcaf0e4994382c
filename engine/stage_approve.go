package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
)

// approve asks humans when the decision says so, failing closed without an
// approval channel.
func (e approveStage) run(ctx context.Context, r *run) (bool, error) {
	need := r.decision.Approval
	if r.undo || r.state != actionNew || need == "" || need == policies.ApprovalNone {
		return false, nil
	}
	if e.Approver == nil {
		return true, e.suppress(ctx, r, outcomeSuppressed, fmt.Sprintf("approval %q required but no approval channel is configured", need))
	}
	n := 1
	if need == policies.ApprovalTwo {
		n = 2
	}
	if r.actionID == "" {
		r.actionID = newActionID()
	}
	req := ApprovalRequest{
		Key: r.idemKey, ActionID: r.actionID, EventID: r.ev.ID, Target: r.ev.Subject, Remediator: r.remName,
		Approvals: n, Reason: r.decision.Reason, Rule: r.decision.Rule, Params: r.params,
		Runbook: runbookOf(r), Requester: requester(r.ev),
	}
	if r.reserved != nil && e.Budget != nil {
		if st, err := e.Budget.StateFor(r.ev.TargetName()); err == nil {
			req.Budget = fmt.Sprintf("%d of %d nodes out of service or in flight (this one included), %d allowed",
				st.OutOfService+st.InFlight, st.TotalNodes, st.Allowed)
		}
	}
	// People take minutes: the wait gives its worker slot to other
	// events, and ends at once when the engine stops (the event is then
	// redelivered and waits on the same request).
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if e.stopping != nil {
		stop := e.stopping
		go func() {
			select {
			case <-stop:
				cancel()
			case <-waitCtx.Done():
			}
		}()
	}
	// The event and its decision are in the trail before anyone is asked.
	if err := e.flush(ctx, r); err != nil {
		return false, err
	}
	r.releaseSlot() // people take minutes; the step takes a slot again
	reacquire := r.yieldSlot()
	ans, err := e.Approver.Approve(waitCtx, req)
	reacquire()
	if err != nil && e.isStopping() {
		return false, fmt.Errorf("%w: approval: %w", errStopping, err)
	}
	if err != nil {
		return false, fmt.Errorf("%w: approval: %w", errTransient, err)
	}
	if err := e.audit(ctx, r, audit.KindApproval, audit.Details("approved", ans.Approved, "reason", ans.Reason, "by", ans.By, "need", n)); err != nil {
		return false, err
	}
	if !ans.Approved {
		return true, e.suppress(ctx, r, outcomeSuppressed, "approval denied or expired: "+ans.Reason)
	}
	r.approvers = ans.By
	return false, nil
}

// requester returns the person an event says asked for its action:
// data.requested_by, or an alert's requested_by annotation or label.
func requester(ev *bus.Event) string {
	var d struct {
		RequestedBy string            `json:"requested_by"`
		Annotations map[string]string `json:"annotations"`
		Labels      map[string]string `json:"labels"`
	}
	if len(ev.Data) == 0 || json.Unmarshal(ev.Data, &d) != nil {
		return ""
	}
	for _, v := range []string{d.RequestedBy, d.Annotations["requested_by"], d.Labels["requested_by"]} {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

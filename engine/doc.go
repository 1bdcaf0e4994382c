// Package engine turns events into actions. It reads events from the
// durable JetStream consumer and runs each through one pipeline of stages,
// wired in pipeline.go and read top to bottom:
//
//	dedupe → decide → guard → approve → act → verify
//
// Each stage is a type in its own file (stage_*.go) and owns a part of the
// run (delivery, problemRun, plan, clearance, stepRun); what several use
// lives below them (step.go). The action of a ladder step moves through
// the typed phases of actionPhase.
//
// Each stage audits what it did. The records of stages that only look and
// decide are appended together, in one group commit, before the engine
// asks people, claims an action or settles the event. An event is
// acknowledged only after its outcome is in the audit trail, and an action
// is never taken unless its start could be audited. A redelivered event never acts twice: every
// action is claimed under an idempotency key (event, remediator, target) in
// a JetStream key-value bucket before it starts.
//
// The engine is level-triggered: each open problem (target and problem
// id) is a record in the problems bucket (problem.go), written when an
// event settles and, with a compare-and-set, just before an action is
// claimed. What the guard holds back (the budget, a rate limit, a pause,
// a breaker) is recorded with what it waits for; the redriver (redrive.go)
// publishes the problem's latest event again once that clears, and the
// detectors' periodic re-assertions catch anything a crash lost. A
// problem that clears while held back is closed without acting, and an
// undo held back still runs when allowed. Re-drives and re-assertions are
// deduplicated by problem, and news of a problem whose action is open or
// done takes no second action.
//
// A policy decision is cut off at DecisionTimeout, and the event is then
// suppressed. A panic in a stage is recovered and logged with its stack;
// the event is handed back for redelivery and, after MaxAttempts, given up
// and audited naming the stage and the panic.
package engine

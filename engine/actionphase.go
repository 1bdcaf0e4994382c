package engine

import "fmt"

// actionPhase is where the action of one ladder step is, as the actions
// bucket keeps it under the step's idempotency key. Only next's
// transitions are taken; a redelivery reads the phase back and goes on
// from there.
type actionPhase string

// The phases of an action.
const (
	actionNew      actionPhase = ""         // not claimed: nothing of it exists
	actionClaimed  actionPhase = "claimed"  // claimed by an engine, not yet audited as started
	actionStarted  actionPhase = "started"  // audited as started: the world may have changed
	actionFinished actionPhase = "finished" // done (whether or not it changed anything)
	actionFailed   actionPhase = "failed"   // given up; not retried
)

// open reports whether an engine holds the action under a lease: it is
// resumed, never dropped, by a redelivery.
func (p actionPhase) open() bool { return p == actionClaimed || p == actionStarted }

// done reports whether the action is over.
func (p actionPhase) done() bool { return p == actionFinished || p == actionFailed }

// next reports whether an action may go from p to q.
func (p actionPhase) next(q actionPhase) bool {
	switch p {
	case actionNew:
		return q == actionClaimed
	case actionClaimed:
		// Audited as started; the claim given back (the problem cleared,
		// the re-check said no); or given up before it started.
		return q == actionStarted || q == actionNew || q == actionFailed
	case actionStarted:
		return q == actionFinished || q == actionFailed
	}
	return false // finished and failed are final
}

// mayAdvance refuses a transition of the run's action that next does not
// allow: that is a defect, and the event is given up on (audited) rather
// than acted on from a state nobody planned for.
func (r *run) mayAdvance(q actionPhase) error {
	if !r.state.next(q) {
		return fmt.Errorf("action %s: no transition from %q to %q", r.actionID, r.state, q)
	}
	return nil
}

// advance moves the run's action to q, if next allows it.
func (r *run) advance(q actionPhase) error {
	if err := r.mayAdvance(q); err != nil {
		return err
	}
	r.state = q
	return nil
}

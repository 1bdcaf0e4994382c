// Package action defines what every remediator is: a self-describing unit
// (Info) that validates its parameters when policies decide, re-checks just
// before acting that the action is still needed and still safe (failing
// closed when it cannot tell), acts, and verifies the result. Remediators
// that can be reversed also implement Undoer.
//
// The contract lives below the remediators and their registry, so that the
// bus (which carries actions to the node agents), the engine and every
// remediator package share it without importing one another.
package action

// Package action defines what every remediator is: a self-describing unit
// (Info) that validates its parameters when policies decide, re-checks just
// before acting that the action is still needed and still safe (failing
// closed when it cannot tell), acts, and verifies the result. Remediators
// that can be reversed also implement Undoer.
//
// The types live apart from the registry (package remediators) so that each
// remediator package can import them without an import cycle.
package action

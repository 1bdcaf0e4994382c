// Package remediators holds the one table of remediators healer can run
// (registry.go). Each remediator lives in its own package; the types they
// share are in package action.
package remediators

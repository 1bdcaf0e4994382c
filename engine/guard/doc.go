// Package guard holds the checks that stand between a decision and an
// action: rate limits (Redis, or an in-process limiter for a single
// replica), the cluster-wide blast-radius budget, and a circuit breaker per
// remediator. Every guard fails closed: when it cannot tell, it says no.
package guard

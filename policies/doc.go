// Package policies decides what healer does about an event. Decisions are
// written in Rego (v1 syntax): healer evaluates data.healer.decision with
// the event and the engine's context as input, and the result names the
// remediator to run, its params, the approval it needs, its rate limits and
// the reason, which is audited even when nothing is done.
//
// A policy directory is every *.rego file directly in it. Files ending in
// _test.rego hold Rego unit tests: Load runs them and refuses a policy that
// fails its own tests, so a broken policy never replaces a working one. The
// default policy (healer.rego, with healer_test.rego) is embedded and used
// when no directory is configured. A Watcher reloads a directory when its
// contents change, and a Holder hands the current policy to the engine.
//
// Decide is on the path of every event, so it builds the input as a Rego
// value directly and evaluates a query prepared once per policy.
package policies

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
// Policies are sandboxed: they are compiled with OPA's builtins less the
// ones that reach the network, files or the process's environment
// (http.send, net.*, opa.runtime, the JSON schema builtins, whose $ref
// loads files and URLs) and with no host allowed, and a file that uses one
// is refused at load with a [BuiltinError] naming the file, line and
// builtin. The one list, with the reason for each, is in sandbox.go. The
// engine bounds each decision with a deadline (engine.decisionTimeout)
// through the context given to Decide.
//
// Decide is on the path of every event, so it builds the input as a Rego
// value directly and evaluates a query prepared once per policy.
package policies

// Package nodeproblem is the detector for node problems reported through
// the Kubernetes API: the Node conditions that node-problem-detector sets
// (KernelDeadlock, ReadonlyFilesystem, FrequentKubeletRestart, ...), the
// kubelet's Ready condition, and the Events node-problem-detector posts on
// Nodes (TaskHung, OOMKilling, KernelOops).
//
// It watches Nodes and Node Events with client-go shared informers, keeping
// only the few fields it needs in their caches, so it stays small at 100,000
// nodes. A condition rule holds while the condition's status is one of the
// rule's statuses, and counts once it has held for the rule's For, measured
// from the condition's lastTransitionTime with a timer (no polling). The
// detector publishes a firing event when a condition starts to count and a
// resolved event, with the same key, when it stops holding. A matching Node
// Event becomes a firing event; Events have no resolve. Only Events that
// node-problem-detector could have posted count: about a core Node, in one
// of Config.Namespaces (only those are watched) and from one of
// Config.Sources; the others are ignored and counted by reason
// (RegisterMetrics).
//
// Event ids are derived from what the API says (node, condition type,
// status and lastTransitionTime; an Event's uid and count), so an informer
// resync, a relist, a second replica or a restart produces the same ids and
// JetStream stores each event once. At start-up the detector emits firing
// events for conditions that already count and, on nodes healer holds
// cordoned (annotation healer.io/problems), resolved events for conditions
// that are clear, so a problem that cleared while healer was down still gets
// its undo. Publishing is retried with backoff until JetStream acknowledges.
package nodeproblem

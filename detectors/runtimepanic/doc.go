// Package runtimepanic is the node-local detector for crashes of the node's
// Go daemons: the kubelet, containerd and dockerd. It follows their logs,
// from systemd's journal (journalctl -o json -f) or from plain log files
// (tailed by polling, following truncation and rotation), and recognises
// Go runtime crash reports in them: "panic: ..." with its goroutine stacks,
// "fatal error: ..." (concurrent map writes, out of memory), bare
// "SIGSEGV: segmentation violation" reports, and panics that a Kubernetes
// component recovered and logged through klog ("Observed a panic").
// Ordinary klog lines, and sentences that merely mention a panic, are not
// reports. From the journal it also counts the unit's restarts as systemd
// logs them, and reports a crash loop when a unit restarts often enough
// within a window.
//
// The parsing core, Scanner and RestartTracker, is pure: it is fed lines
// with their timestamps and returns Findings. The Detector wires it to the
// log sources and publishes one event per finding, with an id derived from
// the node, the source, the kind, the report's first line and its
// timestamp, so reading the same log lines again yields the same ids and
// JetStream stores each report once.
package runtimepanic

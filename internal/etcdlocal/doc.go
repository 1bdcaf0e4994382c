// Package etcdlocal runs etcd members on this machine: one member in this
// process (Run, with go.etcd.io/etcd/server/v3/embed), one member as a
// child process (StartProcess, which re-executes a binary that calls Run),
// and a whole cluster of such processes (StartCluster) on loopback ports.
//
// It is what `healer demo` runs its three-member cluster with, what the
// etcd.replace-member remediator's local provisioner starts a replacement
// with, and what the end-to-end tests kill members of. Members run as real
// processes so that killing one is a SIGKILL, not a graceful stop that
// hands leadership over first.
package etcdlocal

// Package restart restarts a node's components: a systemd unit over D-Bus
// (kubelet, containerd, docker), a static pod (its manifest moved out of the
// kubelet's manifest directory until the pod is gone, then back), or a
// process the agent itself supervises (for hosts without systemd).
//
// It has two halves. The node half, Verbs, runs inside `healer agent`: it
// knows the node's components from the agent's configuration, refuses any
// other, restarts at most Flap.MaxRestarts times per Flap.Window per
// component (past that it returns action.ErrFlapping so a ladder escalates
// instead), and after each restart waits for the component's health check
// (an HTTP endpoint, a TCP port or a Unix socket) to pass. The engine half,
// Remediator ("component.restart"), validates the policy's params, asks the
// node's agent over NATS to re-check, restart and report health, and fails
// closed when the agent cannot be reached.
package restart

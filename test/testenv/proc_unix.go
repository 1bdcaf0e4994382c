//go:build unix && !linux

package testenv

import "syscall"

// sysProcAttr puts the child in its own process group, so that it and its
// children can be signalled together.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func signalGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
}

package testenv

import "syscall"

// sysProcAttr puts the child in its own process group, so that it and its
// children can be signalled together, and has the kernel kill it when the
// test binary dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func signalGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
}

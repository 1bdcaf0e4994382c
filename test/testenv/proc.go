package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logTailBytes is how much of a process's output is logged when a test fails.
const logTailBytes = 64 << 10

// process is an external program that can be started, stopped and started
// again with the same arguments. Its output is appended to logPath.
type process struct {
	name    string
	path    string
	args    []string
	logPath string

	mu  sync.Mutex
	cur *run
}

// run is one execution of a process.
type run struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // set before done is closed
}

// start runs the program. It fails if the program is already running.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && !p.cur.exited() {
		return fmt.Errorf("start %s: already running as pid %d", p.name, p.cur.cmd.Process.Pid)
	}
	out, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: open log: %w", p.name, err)
	}
	defer out.Close() // the child has its own copy of the descriptor
	fmt.Fprintf(out, "==== testenv: %s starting at %s: %s %s\n",
		p.name, time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))

	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	r := &run{cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	p.cur = r
	return nil
}

// stop ends the program and waits until it has exited. With a positive grace
// it first asks the process group to terminate and kills it only when it is
// still running after grace. Stopping a stopped process does nothing.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.cur
	if r == nil || r.exited() {
		return
	}
	pid := r.cmd.Process.Pid
	if grace > 0 {
		signalGroup(pid, syscall.SIGTERM)
		select {
		case <-r.done:
			return
		case <-time.After(grace):
		}
	}
	signalGroup(pid, syscall.SIGKILL)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		// A process stuck in the kernel cannot be waited for; leave it
		// rather than hang the test binary.
	}
}

// exitErr reports whether the current run has exited and why. It returns nil
// while the program is running.
func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return errors.New("not started")
	}
	if !p.cur.exited() {
		return nil
	}
	if p.cur.err != nil {
		return fmt.Errorf("%s exited: %w", p.name, p.cur.err)
	}
	return fmt.Errorf("%s exited", p.name)
}

// pid returns the process id of the current run, or 0.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || p.cur.exited() {
		return 0
	}
	return p.cur.cmd.Process.Pid
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// logTail returns the end of the program's output.
func (p *process) logTail() string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no output: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(stat output: %v)", err)
	}
	var prefix string
	if off := st.Size() - logTailBytes; off > 0 {
		if _, err := f.Seek(off, 0); err != nil {
			return fmt.Sprintf("(seek output: %v)", err)
		}
		prefix = fmt.Sprintf("... (first %d bytes left out)\n", off)
	}
	buf := make([]byte, logTailBytes)
	n, _ := f.Read(buf)
	return prefix + string(buf[:n])
}

// logOnFailure logs the output of procs if t has failed.
func logOnFailure(t testing.TB, procs ...*process) {
	if !t.Failed() {
		return
	}
	for _, p := range procs {
		if p != nil {
			t.Logf("testenv: output of %s:\n%s", p.name, p.logTail())
		}
	}
}

package restart

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/selfheal/healer/action"
)

// process is a program the agent runs and restarts itself, for hosts
// without systemd. It is not restarted when it exits on its own: noticing
// that is the detectors' job, deciding what to do is the policy's.
type process struct {
	c   Component
	log *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool // the agent is shutting down
}

// start runs the process; it is stopped when ctx ends.
func (p *process) start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return fmt.Errorf("process %s: the agent is stopping", p.c.Name)
	}
	if p.cmd != nil && !isClosed(p.exited) {
		return nil
	}
	//nolint:gosec // the command is the operator's configuration, run without a shell
	cmd := exec.Command(p.c.Command[0], p.c.Command[1:]...)
	cmd.Dir = p.c.Dir
	cmd.Env = append(os.Environ(), p.c.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.c.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(p.c.LogFile), 0o750); err != nil {
			return fmt.Errorf("process %s: log dir: %w", p.c.Name, err)
		}
		f, err := os.OpenFile(p.c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640) //nolint:gosec // operator's path
		if err != nil {
			return fmt.Errorf("process %s: log file: %w", p.c.Name, err)
		}
		defer func() { _ = f.Close() }() // the child has its own copy
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start process %s: %w", p.c.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		close(exited)
		p.log.Info("supervised process exited", "component", p.c.Name, "pid", cmd.Process.Pid, "err", err)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.stopped = true
			p.mu.Unlock()
			p.stop(cmd, exited)
		case <-exited:
		}
	}()
	p.log.Info("supervised process started", "component", p.c.Name, "pid", cmd.Process.Pid)
	return nil
}

// stop sends SIGTERM to the process group, then SIGKILL after StopGrace.
func (p *process) stop(cmd *exec.Cmd, exited chan struct{}) {
	if isClosed(exited) {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(p.c.StopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
}

// pid is the running process's pid, or 0.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.exited) {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *process) restartWith(ctx, life context.Context, progress action.Progress) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd != nil {
		old := cmd.Process.Pid
		p.stop(cmd, exited)
		progress(ctx, "process stopped", map[string]any{"component": p.c.Name, "pid": old})
	}
	if err := p.start(life); err != nil {
		return err
	}
	progress(ctx, "process started", map[string]any{"component": p.c.Name, "pid": p.pid()})
	return nil
}

func isClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

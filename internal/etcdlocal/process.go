package etcdlocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Process is a member running as a child process.
type Process struct {
	Spec Spec
	// PID is the process id.
	PID  int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess starts the member s as a child process running command
// (argv; a binary that calls RunIfAsked or RunMain) with s in SpecEnv, and
// writes its pid to PIDFile(s). Its stdout and stderr go to s.LogFile's
// directory as <name>.out. It does not wait for the member to be ready:
// WaitReady does.
func StartProcess(command []string, s Spec) (*Process, error) {
	if len(command) == 0 {
		return nil, errors.New("etcd member process: no command")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode etcd member spec: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("etcd member %s: %w", s.Name, err)
	}
	out, err := os.OpenFile(filepath.Join(filepath.Dir(s.DataDir), s.Name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("etcd member %s output: %w", s.Name, err)
	}
	// The child gets its own descriptor; this one is closed when it has.
	defer func() { _ = out.Close() }()
	cmd := exec.Command(command[0], command[1:]...) //nolint:gosec // the command is the configured member binary, never event data
	cmd.Env = append(os.Environ(), SpecEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a terminal's ^C reaches the parent, which
	// stops its members in order. If the parent dies without doing so,
	// the kernel kills the member.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd member %s: %w", s.Name, err)
	}
	p := &Process{Spec: s, PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	// The pid and the process's start time: a pid the kernel has given to
	// another process since is not this member.
	start, _ := procStart(p.PID)
	if err := os.WriteFile(PIDFile(s), []byte(strconv.Itoa(p.PID)+" "+start+"\n"), 0o600); err != nil {
		_ = p.Kill()
		return nil, fmt.Errorf("etcd member %s pid file: %w", s.Name, err)
	}
	return p, nil
}

// PIDFile is where StartProcess writes the member's pid: beside its data
// directory.
func PIDFile(s Spec) string { return strings.TrimRight(s.DataDir, "/") + ".pid" }

// Running reports whether the process written to the member's pid file is
// alive, so that a second provisioner (healer restarted) does not start a
// member twice.
// A process that exists but may not be signalled (EPERM) counts as
// running: starting a second member is the worse mistake. A zombie, or a
// process whose start time differs from the one recorded (the pid was
// reused), does not.
func Running(s Spec) (int, bool) {
	b, err := os.ReadFile(PIDFile(s))
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return pid, false
	}
	state, start, err := procState(pid)
	if err != nil {
		return pid, true // alive, and /proc cannot say more
	}
	if state == "Z" || (len(fields) > 1 && fields[1] != "" && fields[1] != start) {
		return pid, false
	}
	return pid, true
}

// procStart returns the start time of process pid (clock ticks since
// boot, as /proc/<pid>/stat gives it).
func procStart(pid int) (string, error) {
	_, start, err := procState(pid)
	return start, err
}

// procState reads the state and start time of process pid from
// /proc/<pid>/stat. The command name is in parentheses and may hold
// spaces and parentheses itself, so the fields are counted from the last
// ')'.
func procState(pid int) (state, start string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", "", err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", "", fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state (field 3 of stat), ..., starttime (field 22).
	if len(f) < 20 {
		return "", "", fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	return f[0], f[19], nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Kill kills the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL) }

// Stop asks the member to stop (SIGTERM) and waits for it; after 10 s it
// is killed.
func (p *Process) Stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop etcd member %s: %w", p.Spec.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return p.Kill()
	}
}

func (p *Process) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal etcd member %s: %w", p.Spec.Name, err)
	}
	<-p.done
	return nil
}

// WaitReady waits until the member serves a linearizable read at its
// client URL, or the process exits, or ctx ends.
func WaitReady(ctx context.Context, s Spec, exited <-chan struct{}) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd member %s client: %w", s.Name, err)
	}
	defer func() { _ = cli.Close() }()
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-exited:
			return fmt.Errorf("etcd member %s exited before it was ready (see %s)", s.Name, filepath.Join(filepath.Dir(s.DataDir), s.Name+".out"))
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s not ready: %w (last error: %w)", s.Name, context.Cause(ctx), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

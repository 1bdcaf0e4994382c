package restart_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/test/testenv"
)

// TestRestartSystemdOverDBus drives the systemd path through the real
// go-systemd client: a private dbus-daemon stands in for the system bus and
// a fake systemd on it owns org.freedesktop.systemd1, restarts a real
// process on RestartUnit and reports the job with JobRemoved, the way
// systemd does.
func TestRestartSystemdOverDBus(t *testing.T) {
	bus := startBus(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)
	sd := startFakeSystemd1(t, bus)

	addr := testenv.FreeAddr(t)
	cmd, env := testenv.FakeDaemonCommand(t, addr)
	sd.addUnit(t, "kubelet.service", cmd, env)

	// restartUnit runs the restart verb on a kubelet component that is the
	// systemd unit named unit, with the real D-Bus dialer.
	restartUnit := func(t *testing.T, unit string) (action.Result, []string, error) {
		t.Helper()
		v, err := restart.NewVerbs(restart.Config{
			StateFile: filepath.Join(t.TempDir(), "history.json"),
			Components: []restart.Component{{
				Name: "kubelet", Kind: restart.KindSystemd, Unit: unit,
				Health: restart.Health{HTTP: "http://" + addr + "/healthz", Timeout: 10 * time.Second, Interval: 20 * time.Millisecond},
			}},
		}, discard())
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		// A lost JobRemoved would leave the verb waiting: fail instead.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var steps []string
		progress := func(_ context.Context, step string, _ map[string]any) { steps = append(steps, step) }
		res, err := verb(t, v, restart.VerbRestart).Run(ctx,
			action.NodeRequest{ID: "sd-" + unit, Verb: restart.VerbRestart, Params: map[string]any{"component": "kubelet"}}, progress)
		return res, steps, err
	}

	for _, tc := range []struct {
		name        string
		signalFirst bool
	}{{"done", false}, {"done before the reply", true}} {
		t.Run(tc.name, func(t *testing.T) {
			sd.setJob("kubelet.service", "done", tc.signalFirst)
			first := testenv.WaitFakeDaemon(t, addr, 0)
			calls := len(sd.restarts())
			res, steps, err := restartUnit(t, "kubelet.service")
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			second := testenv.WaitFakeDaemon(t, addr, 0)
			if !res.Changed || second == first {
				t.Fatalf("restart changed=%v, pid %d -> %d: want a new process", res.Changed, first, second)
			}
			if got := sd.restarts()[calls:]; !slices.Equal(got, []string{"kubelet.service:replace"}) {
				t.Fatalf("systemd asked %v, want RestartUnit(kubelet.service, replace)", got)
			}
			if got := strings.Join(steps, ","); got != "restarting,systemd job queued,waiting for health" {
				t.Errorf("progress steps %q", got)
			}
		})
	}

	t.Run("failed", func(t *testing.T) {
		sd.setJob("kubelet.service", "failed", false)
		calls := len(sd.restarts())
		res, steps, err := restartUnit(t, "kubelet.service")
		if err == nil || !strings.Contains(err.Error(), "kubelet.service") || !strings.Contains(err.Error(), `"failed"`) {
			t.Fatalf("restart of a unit whose job failed: %v, want an error naming kubelet.service and the result", err)
		}
		if res.Changed {
			t.Errorf("a failed job reported Changed")
		}
		if got := sd.restarts()[calls:]; !slices.Equal(got, []string{"kubelet.service:replace"}) {
			t.Fatalf("systemd asked %v, want RestartUnit(kubelet.service, replace)", got)
		}
		if !slices.Contains(steps, "systemd job queued") || slices.Contains(steps, "waiting for health") {
			t.Errorf("progress steps %q", steps)
		}
	})

	t.Run("no such unit", func(t *testing.T) {
		calls := len(sd.restarts())
		_, steps, err := restartUnit(t, "nosuch.service")
		if err == nil || !strings.Contains(err.Error(), "nosuch.service") {
			t.Fatalf("restart of an unknown unit: %v, want an error naming nosuch.service", err)
		}
		var dbusErr dbus.Error
		if !errors.As(err, &dbusErr) || dbusErr.Name != "org.freedesktop.systemd1.NoSuchUnit" {
			t.Errorf("restart of an unknown unit: %v, want the D-Bus error org.freedesktop.systemd1.NoSuchUnit wrapped", err)
		}
		if got := sd.restarts()[calls:]; !slices.Equal(got, []string{"nosuch.service:replace"}) {
			t.Fatalf("systemd asked %v, want RestartUnit(nosuch.service, replace)", got)
		}
		if slices.Contains(steps, "systemd job queued") {
			t.Errorf("progress steps %q: no job was queued", steps)
		}
	})
}

// startBus starts a private dbus-daemon for t, where anyone may own any
// name, and returns its address. It is killed when t ends.
func startBus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatalf("dbus-daemon not found on PATH (%v): install the Debian package dbus-daemon", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	config := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=` + filepath.Join(dir, "bus") + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "dbus-daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config-file="+conf, "--nofork", "--nopidfile", "--nosyslog", "--print-address=1")
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addrc <- strings.TrimSpace(line)
	}()
	select {
	case addr := <-addrc:
		if addr == "" {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("dbus-daemon printed no address; its log:\n%s", log)
		}
		return addr
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon printed no address in 10s")
		return ""
	}
}

// fakeSystemd1 is the part of systemd's manager a unit restart uses, on a
// bus: RestartUnit queues a job that stops and starts the unit's process,
// and the job's end is the JobRemoved signal.
type fakeSystemd1 struct {
	conn *dbus.Conn
	dir  string
	jobs sync.WaitGroup

	mu      sync.Mutex
	units   map[string]*fakeUnit
	calls   []string
	lastJob uint32
}

type fakeUnit struct {
	cmd, env []string
	proc     *exec.Cmd
	// result is what the unit's next job ends with: "done" restarts the
	// process, anything else leaves it alone.
	result string
	// signalFirst runs the job and sends JobRemoved before RestartUnit
	// answers.
	signalFirst bool
}

// fakeManager is the object exported at /org/freedesktop/systemd1; its
// methods are the D-Bus methods of org.freedesktop.systemd1.Manager.
type fakeManager struct{ sd *fakeSystemd1 }

// RestartUnit is org.freedesktop.systemd1.Manager.RestartUnit(s name, s mode) -> o job.
func (m fakeManager) RestartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	return m.sd.restartUnit(name, mode)
}

func startFakeSystemd1(t *testing.T, bus string) *fakeSystemd1 {
	t.Helper()
	conn, err := dbus.Dial(bus)
	if err != nil {
		t.Fatalf("fake systemd: dial %s: %v", bus, err)
	}
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		_ = conn.Close()
		t.Fatalf("fake systemd: auth: %v", err)
	}
	if err := conn.Hello(); err != nil {
		_ = conn.Close()
		t.Fatalf("fake systemd: hello: %v", err)
	}
	sd := &fakeSystemd1{conn: conn, dir: t.TempDir(), units: map[string]*fakeUnit{}}
	t.Cleanup(func() {
		sd.jobs.Wait()
		_ = conn.Close()
		sd.mu.Lock()
		defer sd.mu.Unlock()
		for _, u := range sd.units {
			stopProc(u.proc)
		}
	})
	if err := conn.Export(fakeManager{sd}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatalf("fake systemd: export: %v", err)
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake systemd: own org.freedesktop.systemd1: reply %v, %v", reply, err)
	}
	return sd
}

// addUnit adds a unit running cmd with the extra environment env, and
// starts it.
func (sd *fakeSystemd1) addUnit(t *testing.T, name string, cmd, env []string) {
	t.Helper()
	sd.mu.Lock()
	defer sd.mu.Unlock()
	u := &fakeUnit{cmd: cmd, env: env, result: "done"}
	p, err := sd.startProc(name, u)
	if err != nil {
		t.Fatalf("fake systemd: start %s: %v", name, err)
	}
	u.proc = p
	sd.units[name] = u
}

func (sd *fakeSystemd1) setJob(name, result string, signalFirst bool) {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	sd.units[name].result = result
	sd.units[name].signalFirst = signalFirst
}

// restarts are the RestartUnit calls seen, as "name:mode".
func (sd *fakeSystemd1) restarts() []string {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return slices.Clone(sd.calls)
}

func (sd *fakeSystemd1) restartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	sd.mu.Lock()
	sd.calls = append(sd.calls, name+":"+mode)
	u, ok := sd.units[name]
	if !ok {
		sd.mu.Unlock()
		return "", dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not found."})
	}
	sd.lastJob++
	id := sd.lastJob
	signalFirst := u.signalFirst
	sd.mu.Unlock()
	job := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/job/%d", id))
	run := func() {
		result := sd.runJob(name, u)
		// JobRemoved(u id, o job, s unit, s result), as go-systemd's jobComplete reads it.
		if err := sd.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, job, name, result); err != nil {
			fmt.Fprintf(os.Stderr, "fake systemd: emit JobRemoved for %s: %v\n", job, err)
		}
	}
	if signalFirst {
		// The job ends before the reply is sent: the client may well read
		// JobRemoved (on its signal connection) before the job's path.
		run()
		return job, nil
	}
	// Like systemd, answer with the queued job at once and run it after.
	sd.jobs.Add(1)
	go func() {
		defer sd.jobs.Done()
		run()
	}()
	return job, nil
}

// runJob restarts the unit's process and says how the job ended.
func (sd *fakeSystemd1) runJob(name string, u *fakeUnit) string {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if u.result != "done" {
		return u.result
	}
	stopProc(u.proc)
	u.proc = nil
	p, err := sd.startProc(name, u)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake systemd: start %s: %v\n", name, err)
		return "failed"
	}
	u.proc = p
	return "done"
}

func (sd *fakeSystemd1) startProc(name string, u *fakeUnit) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(sd.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(u.cmd[0], u.cmd[1:]...)
	cmd.Env = append(os.Environ(), u.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// stopProc stops a unit's process the way systemd does: SIGTERM, then
// SIGKILL if it lingers.
func stopProc(cmd *exec.Cmd) {
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

package restart_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/test/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunFakeDaemonIfAsked()
	os.Exit(m.Run())
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func nop(context.Context, string, map[string]any) {}

// verb returns the named verb of v.
func verb(t *testing.T, v *restart.Verbs, name string) action.NodeVerb {
	t.Helper()
	for _, nv := range v.Verbs() {
		if nv.Name() == name {
			return nv
		}
	}
	t.Fatalf("no verb %s", name)
	return nil
}

func processConfig(t *testing.T, addr, state string) restart.Config {
	cmd, env := testenv.FakeDaemonCommand(t, addr)
	return restart.Config{
		StateFile: state,
		Components: []restart.Component{{
			Name: "fakelet", Kind: restart.KindProcess, Command: cmd, Env: env,
			LogFile: filepath.Join(t.TempDir(), "fakelet.log"), StopGrace: 2 * time.Second,
			Health: restart.Health{HTTP: "http://" + addr + "/healthz", Timeout: 10 * time.Second, Interval: 20 * time.Millisecond},
		}},
	}
}

func TestRestartProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr := testenv.FreeAddr(t)
	state := filepath.Join(t.TempDir(), "history.json")
	v, err := restart.NewVerbs(processConfig(t, addr, state), discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := testenv.WaitFakeDaemon(t, addr, 0)
	rv := verb(t, v, restart.VerbRestart)
	params := map[string]any{"component": "fakelet"}

	var steps []string
	progress := func(_ context.Context, step string, _ map[string]any) { steps = append(steps, step) }
	res, err := rv.Run(ctx, action.NodeRequest{ID: "a1", Verb: restart.VerbRestart, Params: params}, progress)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	second := testenv.WaitFakeDaemon(t, addr, 0)
	if !res.Changed || second == first {
		t.Fatalf("restart changed=%v, pid %d -> %d: want a new process", res.Changed, first, second)
	}
	if got := strings.Join(steps, ","); got != "restarting,process stopped,process started,waiting for health" {
		t.Errorf("progress steps %q", got)
	}
	if res.Details["restarts_in_window"] != 1 {
		t.Errorf("restarts_in_window %v, want 1", res.Details["restarts_in_window"])
	}

	// The same action again (a retry) does not restart a second time.
	res, err = rv.Run(ctx, action.NodeRequest{ID: "a1", Verb: restart.VerbRestart, Params: params}, nop)
	if err != nil || res.Changed {
		t.Fatalf("retry of a1: changed=%v err=%v, want unchanged", res.Changed, err)
	}
	if pid := testenv.WaitFakeDaemon(t, addr, 0); pid != second {
		t.Fatalf("retry restarted the process: pid %d -> %d", second, pid)
	}

	// Healthy and only_if_unhealthy: not needed.
	_, err = rv.Run(ctx, action.NodeRequest{ID: "a2", Params: map[string]any{"component": "fakelet", "only_if_unhealthy": true}}, nop)
	if !errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("only_if_unhealthy on a healthy component: %v, want ErrNotNeeded", err)
	}

	// Two more restarts reach the limit of 3 an hour; the fourth is refused.
	for _, id := range []string{"a3", "a4"} {
		if _, err := rv.Run(ctx, action.NodeRequest{ID: id, Params: params}, nop); err != nil {
			t.Fatalf("restart %s: %v", id, err)
		}
	}
	before := testenv.WaitFakeDaemon(t, addr, 0)
	_, err = rv.Run(ctx, action.NodeRequest{ID: "a5", Params: params}, nop)
	if !errors.Is(err, action.ErrFlapping) || !errors.Is(err, action.ErrBlocked) {
		t.Fatalf("fourth restart in an hour: %v, want ErrFlapping (an ErrBlocked)", err)
	}
	if pid := testenv.WaitFakeDaemon(t, addr, 0); pid != before {
		t.Fatalf("a refused restart restarted the process")
	}

	// The history survives the agent: a new set of verbs still refuses.
	v2, err := restart.NewVerbs(restart.Config{StateFile: state, Components: processConfig(t, testenv.FreeAddr(t), state).Components}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verb(t, v2, restart.VerbRestart).Run(ctx, action.NodeRequest{ID: "a6", Params: params}, nop); !errors.Is(err, action.ErrFlapping) {
		t.Fatalf("after an agent restart: %v, want ErrFlapping", err)
	}

	// The check verb reports health and the count.
	res, err = verb(t, v, restart.VerbCheck).Run(ctx, action.NodeRequest{ID: "c1", Params: params}, nop)
	if err != nil || res.Details["healthy"] != true || res.Details["restarts_in_window"] != 3 {
		t.Fatalf("check: %v %v", res.Details, err)
	}
}

func TestRestartRefusesBadParams(t *testing.T) {
	v, err := restart.NewVerbs(restart.Config{}, discard())
	if err != nil {
		t.Fatal(err)
	}
	for name, params := range map[string]map[string]any{
		"missing component": {},
		"unknown component": {"component": "sshd"},
		"not a string":      {"component": 3},
		"bad flag":          {"component": "kubelet", "only_if_unhealthy": "yes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verb(t, v, restart.VerbRestart).Run(t.Context(), action.NodeRequest{ID: "x", Params: params}, nop)
			if !errors.Is(err, action.ErrInvalidParams) {
				t.Fatalf("got %v, want ErrInvalidParams", err)
			}
		})
	}
}

// TestRestartRefusesHostileParams: the component name is checked by
// agentparam before it is looked up, on both verbs, and params the verbs do
// not take are refused rather than ignored.
func TestRestartRefusesHostileParams(t *testing.T) {
	v, err := restart.NewVerbs(restart.Config{}, discard())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		param  string // the agentparam.Error's; "" for an unknown param
	}{
		{"component climbing out", map[string]any{"component": "../../etc/passwd"}, "component"},
		{"absolute component", map[string]any{"component": "/usr/bin/kubelet"}, "component"},
		{"component with a NUL", map[string]any{"component": "kubelet\x00"}, "component"},
		{"component with a newline", map[string]any{"component": "kubelet\nsshd"}, "component"},
		{"component as a shell command", map[string]any{"component": "kubelet.service; rm -rf /"}, "component"},
		{"very long component", map[string]any{"component": strings.Repeat("k", 1000)}, "component"},
		{"a unit to restart", map[string]any{"component": "kubelet", "unit": "sshd.service"}, ""},
		{"a command to run", map[string]any{"component": "kubelet", "command": []any{"/bin/sh"}}, ""},
	} {
		for _, name := range []string{restart.VerbRestart, restart.VerbCheck} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				_, err := verb(t, v, name).Run(t.Context(), action.NodeRequest{ID: "x", Params: tc.params}, nop)
				if !errors.Is(err, action.ErrInvalidParams) {
					t.Fatalf("got %v, want ErrInvalidParams", err)
				}
				var pe *agentparam.Error
				switch {
				case tc.param == "" && !strings.Contains(err.Error(), "unknown param"):
					t.Fatalf("got %v, want an unknown param", err)
				case tc.param != "" && (!errors.As(err, &pe) || pe.Param != tc.param):
					t.Fatalf("got %v, want an agentparam refusal of %s", err, tc.param)
				}
			})
		}
	}
}

// fakeKubelet runs a health endpoint while the manifest exists, as a
// kubelet runs a static pod while its manifest is in the manifest dir.
func fakeKubelet(ctx context.Context, t *testing.T, manifest, addr string) {
	t.Helper()
	var mu sync.Mutex
	var srv *http.Server
	stop := func() {
		mu.Lock()
		defer mu.Unlock()
		if srv != nil {
			_ = srv.Close()
			srv = nil
		}
	}
	go func() {
		defer stop()
		for ctx.Err() == nil {
			_, err := os.Stat(manifest)
			mu.Lock()
			running := srv != nil
			mu.Unlock()
			switch {
			case err == nil && !running:
				ln, lerr := net.Listen("tcp", addr)
				if lerr != nil {
					break
				}
				s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }), ReadHeaderTimeout: time.Second}
				mu.Lock()
				srv = s
				mu.Unlock()
				go func() { _ = s.Serve(ln) }()
			case err != nil && running:
				stop()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func TestRestartStaticPod(t *testing.T) {
	dir := t.TempDir()
	manifests, hold := filepath.Join(dir, "manifests"), filepath.Join(dir, "held")
	if err := os.MkdirAll(manifests, 0o700); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(manifests, "kube-scheduler.yaml")
	if err := os.WriteFile(manifest, []byte("kind: Pod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	fakeKubelet(t.Context(), t, manifest, addr)
	cfg := restart.Config{Components: []restart.Component{{
		Name: "kube-scheduler", Kind: restart.KindStaticPod, Manifest: manifest, HoldDir: hold, DownWait: 5 * time.Second,
		Health: restart.Health{HTTP: "http://" + addr + "/healthz", Timeout: 5 * time.Second, Interval: 20 * time.Millisecond},
	}}}
	v, err := restart.NewVerbs(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var steps []string
	res, err := verb(t, v, restart.VerbRestart).Run(t.Context(), action.NodeRequest{ID: "s1", Params: map[string]any{"component": "kube-scheduler"}},
		func(_ context.Context, step string, _ map[string]any) { steps = append(steps, step) })
	if err != nil || !res.Changed {
		t.Fatalf("restart static pod: changed=%v err=%v", res.Changed, err)
	}
	if got := strings.Join(steps, ","); got != "restarting,manifest moved out,pod stopped,manifest put back,waiting for health" {
		t.Errorf("steps %q", got)
	}
	if _, err := os.Stat(manifest); err != nil {
		t.Fatalf("manifest not back: %v", err)
	}

	// A pod that does not stop (here: no kubelet acts on the manifest) is
	// reported, and its manifest is put back.
	stuckAddr := testenv.FreeAddr(t)
	ln, err := net.Listen("tcp", stuckAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})) }() //nolint:gosec // test server
	cfg.Components[0].DownWait = 300 * time.Millisecond
	cfg.Components[0].Health.HTTP = "http://" + stuckAddr + "/healthz"
	v2, err := restart.NewVerbs(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	_, err = verb(t, v2, restart.VerbRestart).Run(t.Context(), action.NodeRequest{ID: "s2", Params: map[string]any{"component": "kube-scheduler"}}, nop)
	if err == nil || !strings.Contains(err.Error(), "did not stop") {
		t.Fatalf("stuck static pod: %v, want 'did not stop'", err)
	}
	if _, err := os.Stat(manifest); err != nil {
		t.Fatalf("manifest not put back after a failed restart: %v", err)
	}

	// An agent that died with the manifest held puts it back when it starts.
	if err := os.Rename(manifest, filepath.Join(hold, "kube-scheduler.yaml")); err != nil {
		t.Fatal(err)
	}
	v3, err := restart.NewVerbs(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := v3.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(manifest); err != nil {
		t.Fatalf("held manifest not recovered at start: %v", err)
	}
}

type fakeSystemd struct {
	mu       sync.Mutex
	result   string
	restarts []string
}

func (f *fakeSystemd) RestartUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts = append(f.restarts, name+":"+mode)
	ch <- f.result
	return len(f.restarts), nil
}
func (f *fakeSystemd) Close() {}

func TestRestartSystemdUnit(t *testing.T) {
	addr := testenv.FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	for _, tc := range []struct {
		result  string
		wantErr bool
	}{{"done", false}, {"failed", true}, {"timeout", true}} {
		t.Run(tc.result, func(t *testing.T) {
			sd := &fakeSystemd{result: tc.result}
			v, err := restart.NewVerbs(restart.Config{Components: []restart.Component{{
				Name: "kubelet", Kind: restart.KindSystemd, Unit: "kubelet.service", Health: restart.Health{TCP: addr, Timeout: time.Second},
			}}}, discard(), restart.WithSystemd(func(context.Context) (restart.UnitManager, error) { return sd, nil }))
			if err != nil {
				t.Fatal(err)
			}
			_, err = verb(t, v, restart.VerbRestart).Run(t.Context(), action.NodeRequest{ID: "u", Params: map[string]any{"component": "kubelet"}}, nop)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if len(sd.restarts) != 1 || sd.restarts[0] != "kubelet.service:replace" {
				t.Fatalf("systemd asked %v", sd.restarts)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := restart.Health{TCP: "127.0.0.1:1"}
	for _, tc := range []struct {
		name    string
		c       restart.Component
		wantErr string
	}{
		{"systemd ok", restart.Component{Name: "kubelet", Kind: "systemd", Unit: "kubelet.service", Health: ok}, ""},
		{"bad unit", restart.Component{Name: "kubelet", Kind: "systemd", Unit: "kubelet; rm -rf /", Health: ok}, "not a systemd unit"},
		{"unit starting with a dash", restart.Component{Name: "kubelet", Kind: "systemd", Unit: "-kubelet.service", Health: ok}, "not a systemd unit"},
		{"unit with two @", restart.Component{Name: "kubelet", Kind: "systemd", Unit: "a@b@c.service", Health: ok}, "not a systemd unit"},
		{"unit of 256 bytes", restart.Component{Name: "kubelet", Kind: "systemd", Unit: strings.Repeat("k", 248) + ".service", Health: ok}, "not a systemd unit"},
		{"template unit", restart.Component{Name: "kubelet", Kind: "systemd", Unit: "kubelet@main.service", Health: ok}, ""},
		{"bad name", restart.Component{Name: "Kube let", Kind: "systemd", Unit: "kubelet.service", Health: ok}, `name "Kube let": want 1 to 63 lower-case`},
		{"unknown kind", restart.Component{Name: "x", Kind: "shell", Health: ok}, "kind"},
		{"process without command", restart.Component{Name: "x", Kind: "process", Health: ok}, "command is required"},
		{"static pod hold in manifests", restart.Component{Name: "x", Kind: "staticpod", Manifest: "/etc/kubernetes/manifests/x.yaml", HoldDir: "/etc/kubernetes/manifests", Health: ok}, "holdDir"},
		{"two health checks", restart.Component{Name: "x", Kind: "systemd", Unit: "x.service", Health: restart.Health{TCP: "a:1", Unix: "/s"}}, "exactly one"},
		{"no health check", restart.Component{Name: "x", Kind: "systemd", Unit: "x.service"}, "exactly one"},
		{"relative socket", restart.Component{Name: "x", Kind: "systemd", Unit: "x.service", Health: restart.Health{Unix: "run/x.sock"}}, "absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := restart.Config{Components: []restart.Component{tc.c}}
			c.ApplyDefaults()
			err := c.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

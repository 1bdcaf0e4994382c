package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/detectors/runtimepanic"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/internal/etcdlocal"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/test/testenv"
)

// nodeDaemon is a real process on a node: the fake daemon the agent
// supervises as component "fakelet", its log followed by the runtimepanic
// detector.
type nodeDaemon struct {
	addr string
	log  string
}

// startAgent runs `healer agent` for node against e's NATS, supervising one
// fake daemon. maxRestarts is its flap limit per hour.
func startAgent(t testing.TB, e *env, node string, maxRestarts int) *nodeDaemon {
	t.Helper()
	d := &nodeDaemon{addr: testenv.FreeAddr(t), log: filepath.Join(t.TempDir(), "fakelet.log")}
	cmd, cmdEnv := testenv.FakeDaemonCommand(t, d.addr)
	cfg := agent.Config{
		Node:    node,
		DataDir: t.TempDir(),
		NATS:    e.agentNATS(t, node),
		Restart: restart.Config{
			Flap: restart.Flap{MaxRestarts: maxRestarts, Window: time.Hour},
			Components: []restart.Component{{
				Name: "fakelet", Kind: restart.KindProcess, Command: cmd, Env: cmdEnv, LogFile: d.log, StopGrace: 2 * time.Second,
				Health: restart.Health{HTTP: "http://" + d.addr + "/healthz", Timeout: 10 * time.Second, Interval: 10 * time.Millisecond},
			}},
		},
	}
	cfg.RuntimePanic.Sources = []runtimepanic.Source{{Name: "fakelet", File: d.log}}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelWarn
	}
	a, err := agent.Start(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})), agent.Deps{Version: "e2e"})
	if err != nil {
		cancel()
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = a.Wait() })
	testenv.WaitFakeDaemon(t, d.addr, 0)
	return d
}

// crash makes the daemon panic, as a kubelet does.
func (d *nodeDaemon) crash(t testing.TB) {
	t.Helper()
	resp, err := http.Post("http://"+d.addr+"/panic", "text/plain", nil) //nolint:noctx // test
	if err != nil {
		t.Fatalf("crash the daemon: %v", err)
	}
	_ = resp.Body.Close()
}

// TestPanicRestartedByAgent: a real process on a node crashes with a Go
// panic; the agent's runtimepanic detector finds the crash report in its
// log and sends the event through serve into JetStream; the default policy
// restarts the daemon; the agent restarts the process and waits for its
// health; the engine verifies. Then the same crash past the flap limit is
// refused, and the ladder escalates.
func TestPanicRestartedByAgent(t *testing.T) {
	kube := testenv.StartKube(t)
	testenv.CreateNodes(t.Context(), t, kube.Client, "worker-1", "worker-2", "worker-3")
	e := startHealer(t, serve.Config{Kubeconfig: kube.KubeconfigPath})
	d := startAgent(t, e, "worker-1", 2)
	first := testenv.WaitFakeDaemon(t, d.addr, 0)

	start := time.Now()
	d.crash(t)
	second := testenv.WaitFakeDaemon(t, d.addr, first)
	restarted := time.Since(start)

	var recs []audit.Record
	waitFor(t, 20*time.Second, "the restart to be verified", func() (bool, string) {
		recs = e.records(url.Values{"target": {"node/worker-1"}})
		for _, r := range recs {
			if r.Kind == audit.KindVerified {
				return true, ""
			}
		}
		return false, describe(recs)
	})
	t.Logf("panic to restarted and healthy: %s (pid %d -> %d)", restarted, first, second)
	want := []string{"event", "decision", "action.started", "action.finished", "verified"}
	got := kinds(recs)
	for i, j := 0, 0; i < len(want); j++ {
		if j == len(got) {
			t.Fatalf("audit trail %v lacks %v in order%s", got, want, describe(recs))
		}
		if got[j] == want[i] {
			i++
		}
	}
	for _, r := range recs {
		if r.Kind == audit.KindEvent && !strings.Contains(string(r.Details), "assignment to entry in nil map") {
			t.Errorf("event does not carry the panic message: %s", r.Details)
		}
		if r.Kind == audit.KindActionStarted && r.Remediator != restart.Name {
			t.Errorf("action by %s, want %s", r.Remediator, restart.Name)
		}
	}

	// A second crash is restarted too; the third is past the limit of 2 an
	// hour: refused as flapping, and the ladder escalates: the node is
	// cordoned.
	d.crash(t)
	third := testenv.WaitFakeDaemon(t, d.addr, second)
	waitFor(t, 20*time.Second, "the second restart's ladder to end", func() (bool, string) {
		recs = e.records(url.Values{"target": {"node/worker-1"}, "kind": {"verified"}})
		ended := 0
		for _, r := range recs {
			if strings.Contains(string(r.Details), "ends: component.restart succeeded") {
				ended++
			}
		}
		return ended == 2, describe(recs)
	})
	d.crash(t)
	waitFor(t, 20*time.Second, "the third crash to escalate", func() (bool, string) {
		recs = e.records(url.Values{"target": {"node/worker-1"}})
		s := describe(recs)
		return strings.Contains(s, "flapping") && strings.Contains(s, "escalate"), s
	})
	waitFor(t, 20*time.Second, "the node to be cordoned", func() (bool, string) {
		n, err := kube.Client.CoreV1().Nodes().Get(t.Context(), "worker-1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return n.Spec.Unschedulable, "schedulable"
	})
	if pid, err := testenv.FakeDaemonPID(d.addr); err == nil && pid != third {
		t.Fatalf("the daemon was restarted past its flap limit (pid %d -> %d)", third, pid)
	}
}

func TestMain(m *testing.M) {
	testenv.RunFakeDaemonIfAsked()
	etcdlocal.RunIfAsked()
	os.Exit(m.Run())
}

package agent_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/test/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunFakeDaemonIfAsked()
	os.Exit(m.Run())
}

// natsEnv is an embedded NATS server with one user for serve and one per
// node agent, each agent confined by bus.AgentPermissions.
type natsEnv struct {
	t       testing.TB
	dir     string
	port    int
	users   []*server.User
	pw      map[string]string // password file by user
	tls     *tls.Config
	caFile  string
	ns      *server.Server
	service *nats.Conn
}

func startNATS(t testing.TB, nodes []string, withTLS bool) *natsEnv {
	t.Helper()
	return startNATSWith(t, nodes, withTLS, bus.AgentPermissionsOptions{})
}

// startNATSWith is startNATS with every agent's permissions widened by opts.
func startNATSWith(t testing.TB, nodes []string, withTLS bool, perm bus.AgentPermissionsOptions) *natsEnv {
	t.Helper()
	e := &natsEnv{t: t, dir: t.TempDir(), port: testenv.FreePort(t), pw: map[string]string{}}
	e.users = append(e.users, &server.User{Username: "healer", Password: "service-secret"})
	for _, n := range nodes {
		perms, err := bus.AgentPermissions(n, perm)
		if err != nil {
			t.Fatal(err)
		}
		pw := "pw-" + n
		e.users = append(e.users, &server.User{Username: n, Password: pw, Permissions: perms})
		f := filepath.Join(e.dir, n+".password")
		if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e.pw[n] = f
	}
	if withTLS {
		ca, cert, key := testenv.ServingPKI(t)
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		e.tls = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		e.caFile = ca
	}
	e.start()
	opts := []nats.Option{nats.UserInfo("healer", "service-secret"), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	if withTLS {
		opts = append(opts, nats.RootCAs(e.caFile))
	}
	nc, err := nats.Connect(e.url(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.service = nc
	return e
}

func (e *natsEnv) url() string {
	scheme := "nats"
	if e.tls != nil {
		scheme = "tls"
	}
	return scheme + "://127.0.0.1:" + strconv.Itoa(e.port)
}

func (e *natsEnv) start() {
	e.t.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: filepath.Join(e.dir, "js"), Port: e.port, Users: e.users, TLS: e.tls}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ns = ns
	e.t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
}

func (e *natsEnv) restart() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	e.start()
}

// startAgent runs `healer agent` for node with one supervised fake daemon,
// "fakelet", on addr.
func (e *natsEnv) startAgent(ctx context.Context, node, addr string) *agent.Agent {
	e.t.Helper()
	cmd, env := testenv.FakeDaemonCommand(e.t, addr)
	cfg := agent.Config{
		Node:    node,
		DataDir: e.t.TempDir(),
		NATS:    agent.NATS{URL: e.url(), User: node, PasswordFile: e.pw[node], CAFile: e.caFile, ReconnectWait: 50 * time.Millisecond},
		Restart: restart.Config{Components: []restart.Component{{
			Name: "fakelet", Kind: restart.KindProcess, Command: cmd, Env: env, StopGrace: 2 * time.Second,
			Health: restart.Health{HTTP: "http://" + addr + "/healthz", Timeout: 10 * time.Second, Interval: 20 * time.Millisecond},
		}}},
		RuntimePanic: agent.RuntimePanicConfig{Disabled: true},
	}
	a, err := agent.Start(ctx, cfg, slog.New(slog.DiscardHandler), agent.Deps{Version: "test"})
	if err != nil {
		e.t.Fatalf("start agent %s: %v", node, err)
	}
	e.t.Cleanup(func() { _ = a.Wait() })
	return a
}

func call(t *testing.T, c *bus.AgentClient, node, verb, id string, params map[string]any) (action.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	return c.Call(ctx, action.NodeRequest{ID: id, Verb: verb, Node: node, Params: params})
}

func TestAgentConfinedToItsNode(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	env := startNATS(t, []string{"node-a", "node-b.example.com"}, false)
	env.startAgent(ctx, "node-a", testenv.FreeAddr(t))
	env.startAgent(ctx, "node-b.example.com", testenv.FreeAddr(t))
	client := bus.NewAgentClient(env.service, 2*time.Second)

	for _, node := range []string{"node-a", "node-b.example.com"} {
		res, err := call(t, client, node, agent.VerbPing, "ping-"+node, nil)
		if err != nil || res.Details["node"] != node {
			t.Fatalf("ping %s: %v %v", node, res.Details, err)
		}
	}

	// Node A's credentials, used by an intruder: every way of seeing node
	// B's actions, or anyone's replies, is refused by the server.
	var mu sync.Mutex
	var violations []string
	intruder, err := nats.Connect(env.url(), nats.UserInfo("node-a", "pw-node-a"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	var got []string
	for _, subj := range []string{"healer.agent.node-b_example_com.act", "healer.agent.>", "healer.agent.*.act", "_INBOX.>", ">"} {
		if _, err := intruder.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			got = append(got, m.Subject)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := intruder.Flush(); err != nil {
		t.Fatal(err)
	}
	// B's agent still gets B's actions; the intruder sees none of them.
	if _, err := call(t, client, "node-b.example.com", agent.VerbPing, "ping-b-2", nil); err != nil {
		t.Fatalf("ping node B: %v", err)
	}
	// A's credentials cannot send events as B either.
	if err := intruder.Publish("healer.agent.node-b_example_com.events", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	_ = intruder.Flush()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(violations)
		mu.Unlock()
		if n >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) > 0 {
		t.Fatalf("node A's credentials received %v", got)
	}
	if len(violations) < 6 {
		t.Fatalf("want 5 subscribe and 1 publish permission violations, got %q", violations)
	}
	for _, v := range violations {
		if !strings.Contains(strings.ToLower(v), "permissions violation") {
			t.Errorf("unexpected error %q", v)
		}
	}
}

func TestAgentRestartOverNATS(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	env := startNATS(t, []string{"node-a"}, true) // over TLS
	addr := testenv.FreeAddr(t)
	env.startAgent(ctx, "node-a", addr)
	client := bus.NewAgentClient(env.service, 2*time.Second)
	first := testenv.WaitFakeDaemon(t, addr, 0)

	var steps []string
	req := action.NodeRequest{ID: "act-1", Verb: restart.VerbRestart, Node: "node-a", Params: map[string]any{"component": "fakelet"}, Deadline: time.Now().Add(20 * time.Second)}
	res, err := client.CallProgress(ctx, req, func(_ context.Context, step string, _ map[string]any) { steps = append(steps, step) })
	if err != nil || !res.Changed {
		t.Fatalf("restart: %+v %v", res, err)
	}
	second := testenv.WaitFakeDaemon(t, addr, 0)
	if second == first {
		t.Fatal("process not restarted")
	}
	if !strings.Contains(strings.Join(steps, ","), "process started") {
		t.Errorf("progress %v", steps)
	}
	// The same action id again is answered from the first outcome.
	res, err = client.Call(ctx, req)
	if err != nil || !res.Changed {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if pid := testenv.WaitFakeDaemon(t, addr, 0); pid != second {
		t.Fatal("a retried request restarted again")
	}

	for name, tc := range map[string]struct {
		req  action.NodeRequest
		want error
	}{
		"unknown verb":      {action.NodeRequest{ID: "x1", Verb: "exec", Node: "node-a", Params: map[string]any{"cmd": "reboot"}}, action.ErrInvalidParams},
		"unknown component": {action.NodeRequest{ID: "x2", Verb: restart.VerbRestart, Node: "node-a", Params: map[string]any{"component": "sshd"}}, action.ErrInvalidParams},
		"no agent":          {action.NodeRequest{ID: "x3", Verb: agent.VerbPing, Node: "node-z"}, action.ErrAgentUnreachable},
		"not a node name":   {action.NodeRequest{ID: "x4", Verb: agent.VerbPing, Node: "node-a.>"}, action.ErrInvalidParams},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := call(t, client, tc.req.Node, tc.req.Verb, tc.req.ID, tc.req.Params)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAgentResumesAfterNATSRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	env := startNATS(t, []string{"node-a"}, false)
	env.startAgent(ctx, "node-a", testenv.FreeAddr(t))
	client := bus.NewAgentClient(env.service, time.Second)
	if _, err := call(t, client, "node-a", agent.VerbPing, "before", nil); err != nil {
		t.Fatal(err)
	}
	env.restart()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		_, err := call(t, client, "node-a", agent.VerbPing, "after-"+strconv.Itoa(i), nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not answer after NATS came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

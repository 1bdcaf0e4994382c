package etcdlocal

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	RunIfAsked()
	os.Exit(m.Run())
}

func testCommand(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, "-test.run=^$"}
}

// A killed leader is a crash: the others elect a new one and keep serving,
// and the killed member comes back from its data directory.
func TestClusterSurvivesKilledLeader(t *testing.T) {
	ctx := t.Context()
	c, err := StartCluster(ctx, ClusterConfig{Members: 3, Dir: t.TempDir(), Command: testCommand(t), NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "before"); err != nil {
		t.Fatal(err)
	}
	lead, err := c.Leader(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Member(lead).Proc.PID
	if _, alive := Running(c.Member(lead).Spec); !alive {
		t.Fatalf("leader's pid file does not name a live process")
	}
	if err := c.Kill(lead); err != nil {
		t.Fatal(err)
	}
	if got, alive := Running(c.Member(lead).Spec); alive || got != pid {
		t.Fatalf("after kill: Running = %d, %v; want %d, false", got, alive, pid)
	}
	next, err := c.Leader(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if next == lead {
		t.Fatalf("leader is still the killed member %d", lead)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Put(wctx, "k", "after"); err != nil {
		t.Fatalf("write after the leader was killed: %v", err)
	}
	if err := c.Restart(ctx, lead); err != nil {
		t.Fatal(err)
	}
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Member(lead).Spec.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	resp, err := one.Get(wctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "after" {
		t.Fatalf("restarted member reads %v, %v; want the write made while it was down", resp, err)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"complete", Spec{Name: "a", DataDir: "/d", PeerURL: "http://127.0.0.1:1", ClientURL: "http://127.0.0.1:2", InitialCluster: "a=http://127.0.0.1:1", ClusterState: StateNew}, true},
		{"no name", Spec{DataDir: "/d", PeerURL: "http://127.0.0.1:1", ClientURL: "http://127.0.0.1:2", InitialCluster: "a=x", ClusterState: StateNew}, false},
		{"bad state", Spec{Name: "a", DataDir: "/d", PeerURL: "http://127.0.0.1:1", ClientURL: "http://127.0.0.1:2", InitialCluster: "a=x", ClusterState: "old"}, false},
		{"no urls", Spec{Name: "a", DataDir: "/d", InitialCluster: "a=x", ClusterState: StateExisting}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.spec.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// The pid file names a process by pid and start time: a live process
// with another start time (a reused pid) is not the member, a zombie is
// not, and a process healer may not signal still is.
func TestRunningReadsThePIDFile(t *testing.T) {
	s := Spec{Name: "m", DataDir: filepath.Join(t.TempDir(), "m")}
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(PIDFile(s), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	self := os.Getpid()
	start, err := procStart(self)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		content string
		want    bool
	}{
		"this process, its start time":     {fmt.Sprintf("%d %s\n", self, start), true},
		"this process, pid only (old)":     {fmt.Sprintf("%d\n", self), true},
		"the pid reused by another":        {fmt.Sprintf("%d 1\n", self), false},
		"init, which healer cannot signal": {"1\n", true},
		"no such process":                  {"2147483646\n", false},
		"garbage":                          {"x y\n", false},
		"empty":                            {"", false},
	} {
		write(tc.content)
		if _, got := Running(s); got != tc.want {
			t.Errorf("%s: Running = %v, want %v", name, got, tc.want)
		}
	}
	// A child that exited and was not reaped yet.
	child := exec.Command("true")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, _, err := procState(child.Process.Pid); err == nil && st == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child did not become a zombie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	zstart, _ := procStart(child.Process.Pid)
	write(fmt.Sprintf("%d %s\n", child.Process.Pid, zstart))
	if _, got := Running(s); got {
		t.Error("a zombie counts as running")
	}
}

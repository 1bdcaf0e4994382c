package etcdlocal

import (
	"context"
	"os"
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

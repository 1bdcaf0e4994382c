package etcdmember

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus/bustest"
	etcddet "github.com/selfheal/healer/detectors/etcdmember"
	"github.com/selfheal/healer/internal/etcdlocal"
)

func TestMain(m *testing.M) {
	etcdlocal.RunIfAsked()
	os.Exit(m.Run())
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// memberCommand runs a member from this test binary.
func memberCommand(t testing.TB) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, "-test.run=^$"}
}

// startCluster starts n member processes; they are stopped when the test
// ends, and so is any replacement started in the cluster's directory.
func startCluster(t testing.TB, n int) *etcdlocal.Cluster {
	t.Helper()
	dir := t.TempDir()
	c, err := etcdlocal.StartCluster(t.Context(), etcdlocal.ClusterConfig{Members: n, Dir: dir, Command: memberCommand(t), NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Destroy)
	return c
}

// journalBucket is the journal bucket on a real embedded JetStream server.
func journalBucket(t testing.TB) jetstream.KeyValue {
	t.Helper()
	kv, err := EnsureBucket(t.Context(), bustest.Start(t).JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func clusterConfig(c *etcdlocal.Cluster) etcddet.Config {
	return etcddet.Config{ClusterName: "test", Endpoints: c.Endpoints(), RequestTimeout: time.Second, DialTimeout: 500 * time.Millisecond, Interval: 200 * time.Millisecond}
}

// localProvisioner runs replacements where the cluster keeps its members.
func localProvisioner(t testing.TB, c *etcdlocal.Cluster) *Local {
	t.Helper()
	members := map[string]LocalMember{}
	for _, m := range c.Members() {
		members[m.Spec.Name] = LocalMember{DataDir: m.Spec.DataDir, LogFile: m.Spec.LogFile}
	}
	p, err := NewLocal(LocalConfig{Command: memberCommand(t), Members: members, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newReplace(t testing.TB, c *etcdlocal.Cluster, kv jetstream.KeyValue, prov Provisioner) *Replace {
	t.Helper()
	r, err := New(Config{Provisioner: ProvisionerLocal, Local: LocalConfig{Command: []string{"unused"}, Members: map[string]LocalMember{"x": {DataDir: "/x"}}}, PollInterval: 50 * time.Millisecond, CatchUpTimeout: 30 * time.Second},
		&Deps{Cluster: clusterConfig(c), Journal: kv, Provisioner: prov}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// memberID returns the id of the member named name, from a serializable
// member list of the given endpoint.
func memberID(t testing.TB, cli *clientv3.Client, name string) etcddet.MemberID {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range resp.Members {
		if m.Name == name {
			return etcddet.MemberID(m.ID)
		}
	}
	t.Fatalf("no member %s", name)
	return 0
}

// recorder keeps the progress steps.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) progress(_ context.Context, step string, _ map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, step)
}

func (r *recorder) Steps() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.steps...)
}

// failingProvisioner fails its first n calls, as a healer killed while
// provisioning would leave things, then starts members for real.
type failingProvisioner struct {
	next  Provisioner
	mu    sync.Mutex
	fails int
}

func (f *failingProvisioner) Start(ctx context.Context, s MemberSpec, p action.Progress) error {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return errors.New("provisioner: test says the host went away")
	}
	f.mu.Unlock()
	return f.next.Start(ctx, s, p)
}

func dataDirOf(c *etcdlocal.Cluster, i int) string { return c.Member(i).Spec.DataDir }

func asideDirs(t testing.TB, dataDir string) []string {
	t.Helper()
	m, err := filepath.Glob(dataDir + ".replaced-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func clientv3WithPrefix() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}
func clientv3WithSerializable() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithSerializable()}
}

package etcdmember

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/selfheal/healer/action"
)

// manifestDir writes the kubeadm-style etcd manifest of testdata with its
// data dir in a temporary directory holding one old file.
func manifestDir(t *testing.T) (manifest, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "var-lib-etcd")
	if err := os.MkdirAll(filepath.Join(dataDir, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "member", "old"), []byte("old data"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/etcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest = filepath.Join(dir, "manifests", "etcd.yaml")
	if err := os.MkdirAll(filepath.Dir(manifest), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest, []byte(strings.ReplaceAll(string(raw), "DATADIR", dataDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	return manifest, dataDir
}

// nodeCaller runs the verb in this process, as the agent would.
type nodeCaller struct {
	verbs *Verbs
	node  string
	calls []action.NodeRequest
}

func (c *nodeCaller) CallProgress(ctx context.Context, req action.NodeRequest, p action.Progress) (action.Result, error) {
	c.calls = append(c.calls, req)
	if req.Node != c.node {
		return action.Result{}, action.ErrAgentUnreachable
	}
	for _, v := range c.verbs.Verbs() {
		if v.Name() == req.Verb {
			return v.Run(ctx, req, p)
		}
	}
	return action.Result{}, errors.New("no such verb")
}

func testSpec(clientURL string) MemberSpec {
	return MemberSpec{
		ActionID: "act-m", Name: "master-1", ID: "abc", PeerURLs: []string{"https://10.0.0.11:2380"}, ClientURLs: []string{clientURL},
		InitialCluster: "master-0=https://10.0.0.10:2380,master-2=https://10.0.0.12:2380,master-1=https://10.0.0.11:2380",
	}
}

func readCommand(t *testing.T, manifest string) []string {
	t.Helper()
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	return pod.Spec.Containers[0].Command
}

func TestAgentProvisionerRewritesManifest(t *testing.T) {
	manifest, dataDir := manifestDir(t)
	verbs := NewVerbs(VerbsConfig{Manifest: manifest, StopTimeout: time.Second}, testLogger(t))
	caller := &nodeCaller{verbs: verbs, node: "node-m1"}
	prov, err := NewAgentProvisioner(caller, map[string]string{"master-1": "node-m1"})
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec("http://" + closedAddr(t))
	rec := &recorder{}
	if err := prov.Start(t.Context(), spec, rec.progress); err != nil {
		t.Fatal(err)
	}
	cmd := readCommand(t, manifest)
	if v, _ := flag(cmd, "initial-cluster"); v != spec.InitialCluster {
		t.Errorf("--initial-cluster=%q, want %q", v, spec.InitialCluster)
	}
	if v, _ := flag(cmd, "initial-cluster-state"); v != "existing" {
		t.Errorf("--initial-cluster-state=%q, want existing", v)
	}
	if v, _ := flag(cmd, "name"); v != "master-1" {
		t.Errorf("--name changed to %q", v)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "member", "old")); err == nil {
		t.Error("the old data is still where etcd reads it")
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, "member.replaced-act-m", "old")); err != nil || string(b) != "old data" {
		t.Errorf("old data kept aside: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(manifest), ".healer-held", "etcd.yaml.before-act-m")); err != nil {
		t.Errorf("old manifest not kept: %v", err)
	}
	if caller.calls[0].Node != "node-m1" || caller.calls[0].Verb != VerbStart {
		t.Errorf("called %+v, want %s on node-m1", caller.calls[0], VerbStart)
	}

	// Again, for the same action (a retry): nothing changes.
	before, _ := os.ReadFile(manifest)
	res, err := verbs.start(t.Context(), spec, rec.progress)
	if err != nil || res.Changed {
		t.Fatalf("second start = %+v, %v; want unchanged", res, err)
	}
	after, _ := os.ReadFile(manifest)
	if string(before) != string(after) {
		t.Error("the manifest changed on a retry")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "member.replaced-act-m", "old")); err != nil {
		t.Errorf("the data kept aside is gone: %v", err)
	}
}

func TestAgentProvisionerRefuses(t *testing.T) {
	t.Run("wrong node: another member's manifest", func(t *testing.T) {
		manifest, dataDir := manifestDir(t)
		verbs := NewVerbs(VerbsConfig{Manifest: manifest}, testLogger(t))
		spec := testSpec("http://" + closedAddr(t))
		spec.Name = "master-2"
		_, err := verbs.start(t.Context(), spec, (&recorder{}).progress)
		if !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "wrong node") {
			t.Fatalf("start = %v, want ErrUnsafe (wrong node)", err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "member", "old")); err != nil {
			t.Fatal("the data dir was touched")
		}
	})
	t.Run("the old member does not stop: manifest put back, data untouched", func(t *testing.T) {
		manifest, dataDir := manifestDir(t)
		verbs := NewVerbs(VerbsConfig{Manifest: manifest, StopTimeout: 500 * time.Millisecond}, testLogger(t))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
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
		before, _ := os.ReadFile(manifest)
		_, err = verbs.start(t.Context(), testSpec("http://"+ln.Addr().String()), (&recorder{}).progress)
		if !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "still accepts connections") {
			t.Fatalf("start = %v, want ErrUnsafe (still running)", err)
		}
		after, err := os.ReadFile(manifest)
		if err != nil || string(after) != string(before) {
			t.Fatalf("manifest not put back as it was: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "member", "old")); err != nil {
			t.Fatal("the data dir was touched")
		}
	})
	t.Run("the port is closed but a process still holds the database", func(t *testing.T) {
		manifest, dataDir := manifestDir(t)
		verbs := NewVerbs(VerbsConfig{Manifest: manifest, StopTimeout: 500 * time.Millisecond}, testLogger(t))
		db := filepath.Join(dataDir, "member", "snap", "db")
		if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(db)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// As bbolt does while etcd runs.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(manifest)
		_, err = verbs.start(t.Context(), testSpec("http://"+closedAddr(t)), (&recorder{}).progress)
		if !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "database") {
			t.Fatalf("start = %v, want ErrUnsafe (database in use)", err)
		}
		if after, err := os.ReadFile(manifest); err != nil || string(after) != string(before) {
			t.Fatalf("manifest not put back as it was: %v", err)
		}
		if _, err := os.Stat(db); err != nil {
			t.Fatal("the data dir was touched")
		}
		// Released, the same request goes ahead.
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		if _, err := verbs.start(t.Context(), testSpec("http://"+closedAddr(t)), (&recorder{}).progress); err != nil {
			t.Fatalf("start after the database was released: %v", err)
		}
	})
	t.Run("bad params", func(t *testing.T) {
		verbs := NewVerbs(VerbsConfig{Manifest: "/nonexistent"}, testLogger(t))
		_, err := verbs.Verbs()[0].Run(t.Context(), action.NodeRequest{ID: "x", Verb: VerbStart, Params: map[string]any{"name": "m"}}, (&recorder{}).progress)
		if !errors.Is(err, action.ErrInvalidParams) {
			t.Fatalf("Run = %v, want ErrInvalidParams", err)
		}
	})
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestStartRefusesHostileParams: every parameter of etcd.member.start
// that reaches a file name or the member's command line is checked, and a
// refused request touches nothing.
func TestStartRefusesHostileParams(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		name  string
		param string // named in the error
		set   func(p map[string]any)
	}{
		{"action id climbing out", "action_id", func(p map[string]any) { p["action_id"] = "../../etc/passwd" }},
		{"action id climbing out after a name", "action_id", func(p map[string]any) { p["action_id"] = "x/../../../outside" }},
		{"absolute action id", "action_id", func(p map[string]any) { p["action_id"] = "/etc/passwd" }},
		{"action id with a NUL", "action_id", func(p map[string]any) { p["action_id"] = "act\x00m" }},
		{"action id with a newline", "action_id", func(p map[string]any) { p["action_id"] = "act-m\n--data-dir=/" }},
		{"very long action id", "action_id", func(p map[string]any) { p["action_id"] = long }},
		{"member name climbing out", "name", func(p map[string]any) { p["name"] = "../master-1" }},
		{"member id not hex", "id", func(p map[string]any) { p["id"] = "abc; rm" }},
		{"peer URL with a path", "peer_urls[0]", func(p map[string]any) { p["peer_urls"] = []any{"https://10.0.0.11:2380/../x"} }},
		{"client URL of a file", "client_urls[0]", func(p map[string]any) { p["client_urls"] = []any{"file:///etc/passwd"} }},
		{"too many client URLs", "client_urls", func(p map[string]any) {
			urls := make([]any, maxURLs+1)
			for i := range urls {
				urls[i] = "http://127.0.0.1:2379"
			}
			p["client_urls"] = urls
		}},
		{"initial cluster with a flag", "initial_cluster[1]", func(p map[string]any) {
			p["initial_cluster"] = "master-0=https://10.0.0.10:2380,master-1=https://10.0.0.11:2380 --data-dir=/"
		}},
		{"initial cluster without =", "initial_cluster[0]", func(p map[string]any) { p["initial_cluster"] = "master-1" }},
		{"unknown param", "unknown field", func(p map[string]any) { p["data_dir"] = "/" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			manifest, dataDir := manifestDir(t)
			before, _ := os.ReadFile(manifest)
			verbs := NewVerbs(VerbsConfig{Manifest: manifest, StopTimeout: 100 * time.Millisecond}, testLogger(t))
			spec := testSpec("http://" + closedAddr(t))
			params, err := specParams(&spec)
			if err != nil {
				t.Fatal(err)
			}
			tc.set(params)
			_, err = verbs.Verbs()[0].Run(t.Context(), action.NodeRequest{ID: "r", Verb: VerbStart, Params: params}, (&recorder{}).progress)
			if !errors.Is(err, action.ErrInvalidParams) || !strings.Contains(err.Error(), tc.param) {
				t.Fatalf("Run = %v, want ErrInvalidParams naming %s", err, tc.param)
			}
			if after, err := os.ReadFile(manifest); err != nil || string(after) != string(before) {
				t.Fatalf("the manifest changed: %v", err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(manifest), ".healer-held")); err == nil {
				t.Fatal("the manifest was held")
			}
			entries, _ := os.ReadDir(dataDir)
			if len(entries) != 1 || entries[0].Name() != "member" {
				t.Fatalf("the data dir changed: %v", entries)
			}
		})
	}
	t.Run("local provisioner", func(t *testing.T) {
		dir := t.TempDir()
		l, err := NewLocal(LocalConfig{Command: []string{"false"}, Members: map[string]LocalMember{"master-1": {DataDir: filepath.Join(dir, "data")}}})
		if err != nil {
			t.Fatal(err)
		}
		spec := testSpec("http://" + closedAddr(t))
		spec.ActionID = "../../outside"
		if err := l.Start(t.Context(), spec, (&recorder{}).progress); !errors.Is(err, action.ErrInvalidParams) {
			t.Fatalf("Start = %v, want ErrInvalidParams", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("something was written: %v", entries)
		}
	})
}

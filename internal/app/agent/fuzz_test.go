package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/remediators/certrenew"
	"github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/remediators/vip"
	"github.com/selfheal/healer/test/testenv"
)

// fuzzNode is the node of the fuzzed agent.
const fuzzNode = "master-1"

// verbFixture is an agent with every node verb configured, each on its
// own directories inside a tree of sentinel files, reached over NATS the
// way serve reaches it.
type verbFixture struct {
	base    string   // the whole tree
	allowed []string // the verbs' configured directories in it
	before  map[string]string
	client  *bus.AgentClient
	closed  string // a client URL nothing listens on
	units   *fakeSystemd
	verbs   []fuzzVerb
}

// fuzzVerb maps the fuzzed strings onto one verb's params.
type fuzzVerb struct {
	name   string
	params func(fx *verbFixture, p1, p2, p3 string) map[string]any
}

func fuzzVerbs() []fuzzVerb {
	component := func(_ *verbFixture, p1, p2, _ string) map[string]any {
		return map[string]any{"component": p1, "only_if_unhealthy": p2 == "unhealthy"}
	}
	cert := func(_ *verbFixture, p1, p2, _ string) map[string]any {
		m := map[string]any{}
		if p1 != "" {
			m["cert"] = p1
		}
		if p2 != "" {
			m["file"] = p2
		}
		return m
	}
	member := func(fx *verbFixture, p1, p2, p3 string) map[string]any {
		name, client := cmpOr(p2, fuzzNode), cmpOr(p3, fx.closed)
		return map[string]any{
			"action_id": p1, "name": name, "id": "abc",
			"peer_urls": []any{"https://10.0.0.11:2380"}, "client_urls": []any{client},
			"initial_cluster": "master-0=https://10.0.0.10:2380," + name + "=https://10.0.0.11:2380",
		}
	}
	addr := func(_ *verbFixture, p1, _, _ string) map[string]any { return map[string]any{"vip": p1} }
	return []fuzzVerb{
		{restart.VerbRestart, component}, {restart.VerbCheck, component},
		{certrenew.VerbRenew, cert}, {certrenew.VerbCheck, cert},
		{etcdmember.VerbStart, member},
		{vip.VerbAcquire, addr}, {vip.VerbRelease, addr}, {vip.VerbStatus, addr},
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// fakeSystemd records the units it is asked to restart.
type fakeSystemd struct {
	mu    sync.Mutex
	units []string
}

func (f *fakeSystemd) RestartUnitContext(_ context.Context, name, _ string, ch chan<- string) (int, error) {
	f.mu.Lock()
	f.units = append(f.units, name)
	f.mu.Unlock()
	ch <- "done"
	return 1, nil
}

func (f *fakeSystemd) Close() {}

func (f *fakeSystemd) restarted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.units)
}

// etcdManifest is a kubeadm-style etcd static pod, its data dir filled in.
const etcdManifest = `apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --data-dir=%s
    - --initial-advertise-peer-urls=https://10.0.0.11:2380
    - --initial-cluster=master-1=https://10.0.0.11:2380
    - --name=master-1
    image: registry.k8s.io/etcd:3.6.7-0
    name: etcd
`

func newVerbFixture(tb testing.TB) *verbFixture {
	tb.Helper()
	ctx, cancel := context.WithCancel(tb.Context())
	tb.Cleanup(cancel)
	base := tb.TempDir()
	node := filepath.Join(base, "node")
	fx := &verbFixture{base: base, closed: "http://" + testenv.FreeAddr(tb), units: &fakeSystemd{}, verbs: fuzzVerbs()}
	dataDir := filepath.Join(node, "agent-data")
	manifests := filepath.Join(node, "manifests")
	pki := filepath.Join(node, "pki")
	etcdManifests := filepath.Join(node, "etcd", "manifests")
	etcdData := filepath.Join(node, "etcd", "data")
	fx.allowed = []string{dataDir, manifests, pki, etcdManifests, etcdData}

	// Sentinels at every level above the configured directories: what a
	// "../" in a parameter would reach.
	write := func(path, data string) {
		tb.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	for _, dir := range []string{base, node, filepath.Join(node, "etcd")} {
		write(filepath.Join(dir, "etc", "passwd"), "root:x:0:0::/root:/bin/sh\n")
		write(filepath.Join(dir, "outside", "keep"), "sentinel\n")
	}
	write(filepath.Join(manifests, "kube-scheduler.yaml"), "kind: Pod\n")
	write(filepath.Join(etcdData, "member", "old"), "old data")
	write(filepath.Join(etcdManifests, "etcd.yaml"), fmt.Sprintf(etcdManifest, etcdData))
	writeFuzzPKI(tb, pki)

	env := startNATSWith(tb, []string{fuzzNode}, false, bus.AgentPermissionsOptions{KVBuckets: []string{vip.Bucket}})
	js, err := jetstream.New(env.service)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := vip.EnsureBucket(ctx, js, 1); err != nil {
		tb.Fatal(err)
	}
	down := restart.Health{TCP: testenv.FreeAddr(tb), Timeout: 10 * time.Millisecond, Interval: 5 * time.Millisecond}
	cfg := agent.Config{
		Node: fuzzNode, DataDir: dataDir,
		NATS: agent.NATS{URL: env.url(), User: fuzzNode, PasswordFile: env.pw[fuzzNode], ReconnectWait: 50 * time.Millisecond},
		Restart: restart.Config{
			StateFile: filepath.Join(dataDir, "restarts.json"),
			Flap:      restart.Flap{MaxRestarts: 1 << 20, Window: time.Second},
			Components: []restart.Component{
				{Name: "kubelet", Kind: restart.KindSystemd, Unit: "kubelet.service", Health: down},
				{Name: "kube-scheduler", Kind: restart.KindStaticPod, Manifest: filepath.Join(manifests, "kube-scheduler.yaml"),
					DownWait: 10 * time.Millisecond, Health: down},
			},
		},
		CertRenew: certrenew.Config{MinCALeft: time.Hour, Certs: []certrenew.Cert{{
			Name: "apiserver", CertFile: filepath.Join(pki, "apiserver.crt"), KeyFile: filepath.Join(pki, "apiserver.key"),
			CAFile: filepath.Join(pki, "ca.crt"), CAKeyFile: filepath.Join(pki, "ca.key"),
		}}},
		EtcdMember:   &etcdmember.VerbsConfig{Manifest: filepath.Join(etcdManifests, "etcd.yaml"), StopTimeout: 50 * time.Millisecond},
		VIP:          &vip.Config{VIPs: []vip.VIPConfig{{Address: "10.10.0.100/32", Interface: "eth0"}}},
		RuntimePanic: agent.RuntimePanicConfig{Disabled: true},
	}
	dial := func(context.Context) (restart.UnitManager, error) { return fx.units, nil }
	a, err := agent.Start(ctx, cfg, slog.New(slog.DiscardHandler), agent.Deps{
		Restart: []restart.Option{restart.WithSystemd(dial)}, VIPAddresses: &memAddrs{on: map[string]bool{}},
	})
	if err != nil {
		tb.Fatalf("start agent: %v", err)
	}
	tb.Cleanup(func() { cancel(); _ = a.Wait() })
	fx.client = bus.NewAgentClient(env.service, 2*time.Second)
	fx.before = fx.snapshot(tb)
	return fx
}

// writeFuzzPKI writes a CA (with its key) and a certificate it signed.
func writeFuzzPKI(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	issue := func(name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			tb.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		for file, block := range map[string]*pem.Block{name + ".crt": {Type: "CERTIFICATE", Bytes: der}, name + ".key": {Type: "PRIVATE KEY", Bytes: keyDER}} {
			if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
				tb.Fatal(err)
			}
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			tb.Fatal(err)
		}
		return c, key
	}
	now := time.Now()
	ca, caKey := issue("ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz-ca"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, nil)
	issue("apiserver", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"},
	}, ca, caKey)
}

// snapshot describes every entry of the tree outside the configured
// directories: its type, permissions and, for a file, a hash of it.
func (fx *verbFixture) snapshot(tb testing.TB) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(fx.base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if slices.Contains(fx.allowed, path) {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := info.Mode().String()
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[path] = desc
		return nil
	})
	if err != nil {
		tb.Fatalf("snapshot %s: %v", fx.base, err)
	}
	return out
}

// changedOutside says what differs outside the configured directories
// since the fixture was made.
func (fx *verbFixture) changedOutside(tb testing.TB) []string {
	tb.Helper()
	now := fx.snapshot(tb)
	var diff []string
	for p, d := range now {
		switch was, ok := fx.before[p]; {
		case !ok:
			diff = append(diff, "created "+p)
		case was != d:
			diff = append(diff, "modified "+p)
		}
	}
	for p := range fx.before {
		if _, ok := now[p]; !ok {
			diff = append(diff, "removed "+p)
		}
	}
	slices.Sort(diff)
	return diff
}

// request builds the request the fuzzed values stand for: the verb's
// params from p1..p3, and then the fields of extra when it is a JSON
// object, so any key and any type reaches the verb too.
func (fx *verbFixture) request(verb uint8, id, p1, p2, p3 string, extra []byte) action.NodeRequest {
	v := fx.verbs[int(verb)%len(fx.verbs)]
	params := v.params(fx, p1, p2, p3)
	var more map[string]any
	if json.Unmarshal(extra, &more) == nil {
		for k, val := range more {
			params[k] = val
		}
	}
	return action.NodeRequest{ID: id, Verb: v.name, Node: fuzzNode, Params: params, Deadline: time.Now().Add(5 * time.Second)}
}

// FuzzAgentVerbParams sends every verb of an agent that has them all
// (restart and restart.check of a systemd unit and a static pod,
// cert.renew and cert.check, etcd.member.start, vip.acquire, vip.release
// and vip.status) requests with fuzzed ids and params, over NATS as serve
// sends them, and checks after each that no file or directory outside the
// verbs' configured directories was created, changed or removed, and that
// systemd was asked to restart no unit but the configured one.
func FuzzAgentVerbParams(f *testing.F) {
	// The seed corpus is testdata/fuzz/FuzzAgentVerbParams: one valid
	// request per verb, and the hostile values each verb must refuse
	// ("../" in ids, names and paths, absolute paths, NUL bytes, newlines,
	// long values, wrong types). The first byte picks the verb (modulo the
	// list of fuzzVerbs).
	fx := newVerbFixture(f)
	f.Fuzz(func(t *testing.T, verb uint8, id, p1, p2, p3 string, extra []byte) {
		req := fx.request(verb, id, p1, p2, p3, extra)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := fx.client.Call(ctx, req)
		cancel()
		if diff := fx.changedOutside(t); len(diff) > 0 {
			t.Fatalf("%s %q with params %v (err %v) touched files outside its directories:\n%s", req.Verb, req.ID, req.Params, err, strings.Join(diff, "\n"))
		}
		for _, u := range fx.units.restarted() {
			if u != "kubelet.service" {
				t.Fatalf("%s %q with params %v made systemd restart %q", req.Verb, req.ID, req.Params, u)
			}
		}
	})
}

package etcdmember

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/test/testenv"
)

// This file is a small harness of real, embedded etcd members. A later
// remediator (etcd.replace-member) needs the same; it is the shape proposed
// for test/testenv.

// etcdCluster is a cluster of embedded etcd members on free loopback
// ports, each with its data in its own temporary directory.
type etcdCluster struct {
	t       testing.TB
	token   string
	initial string
	pki     *testPKI
	quota   int64
	loose   bool
	Members []*etcdMember
}

// etcdMember is one member; Etcd is nil while it is stopped.
type etcdMember struct {
	Name      string
	Dir       string
	PeerURL   string
	ClientURL string
	Etcd      *embed.Etcd
	logFile   string
}

// clusterOptions change how a cluster is started.
type clusterOptions struct {
	// TLS, when set, serves clients over https with client certificate
	// authentication; peers stay on http.
	TLS *testPKI
	// QuotaBackendBytes is each member's backend quota; 0 keeps etcd's.
	QuotaBackendBytes int64
	// LooseReconfig turns off etcd's strict reconfiguration check, which
	// refuses to add members until every member has been connected for
	// five seconds.
	LooseReconfig bool
}

// startEtcdCluster starts n members and waits until every one is ready and
// serves a linearizable read. The members are stopped when the test ends.
func startEtcdCluster(t testing.TB, n int, opts clusterOptions) *etcdCluster {
	t.Helper()
	c := &etcdCluster{t: t, token: fmt.Sprintf("healer-test-%d", time.Now().UnixNano()), pki: opts.TLS, quota: opts.QuotaBackendBytes, loose: opts.LooseReconfig}
	ports := freePorts(t, 2*n)
	scheme := "http"
	if c.pki != nil {
		scheme = "https"
	}
	var initial []string
	for i := range n {
		m := &etcdMember{
			Name:      fmt.Sprintf("m%d", i),
			Dir:       filepath.Join(t.TempDir(), "data"),
			PeerURL:   "http://127.0.0.1:" + strconv.Itoa(ports[2*i]),
			ClientURL: scheme + "://127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
		}
		m.logFile = filepath.Join(filepath.Dir(m.Dir), "etcd.log")
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(func() {
		for i := range c.Members {
			c.Stop(i)
		}
		if t.Failed() {
			c.dumpLogs()
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.Members {
		e, err := embed.StartEtcd(c.config(m))
		if err != nil {
			t.Fatalf("start etcd member %s: %v", m.Name, err)
		}
		m.Etcd = e
		wg.Go(func() { errs[i] = waitReady(e) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("etcd member %s: %v", c.Members[i].Name, err)
		}
	}
	c.WaitHealthy(t)
	return c
}

func (c *etcdCluster) config(m *etcdMember) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	peer, _ := url.Parse(m.PeerURL)
	client, _ := url.Parse(m.ClientURL)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{m.logFile}
	cfg.StrictReconfigCheck = !c.loose
	if c.quota > 0 {
		cfg.QuotaBackendBytes = c.quota
	}
	if p := c.pki; p != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: p.ServerCert, KeyFile: p.ServerKey, TrustedCAFile: p.CA, ClientCertAuth: true,
		}
	}
	return cfg
}

// waitReady waits until the member has joined the cluster.
func waitReady(e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("failed before ready: %w", err)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("not ready within 30s")
	}
}

// Endpoints returns every member's client URL.
func (c *etcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// ID returns the member id of member i, which must be running or have run.
func (c *etcdCluster) ID(t testing.TB, i int) MemberID {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	for _, m := range resp.Members {
		if m.Name == c.Members[i].Name {
			return MemberID(m.ID)
		}
	}
	t.Fatalf("member %s not in the member list", c.Members[i].Name)
	return 0
}

// Stop stops member i (etcd's Close) and waits until it has stopped; a
// stopped member is left alone.
func (c *etcdCluster) Stop(i int) {
	m := c.Members[i]
	if m.Etcd == nil {
		return
	}
	m.Etcd.Close()
	m.Etcd = nil
}

// Restart starts member i again from its data directory and waits until
// it has rejoined.
func (c *etcdCluster) Restart(t testing.TB, i int) {
	t.Helper()
	m := c.Members[i]
	if m.Etcd != nil {
		t.Fatalf("member %s is running", m.Name)
	}
	e, err := embed.StartEtcd(c.config(m))
	if err != nil {
		t.Fatalf("restart etcd member %s: %v", m.Name, err)
	}
	m.Etcd = e
	if err := waitReady(e); err != nil {
		t.Fatalf("etcd member %s: %v", m.Name, err)
	}
}

// Leader returns the index of the member that leads, as the running
// members see it, waiting for one to be elected.
func (c *etcdCluster) Leader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			if m.Etcd == nil {
				continue
			}
			lead := m.Etcd.Server.Leader()
			for j, o := range c.Members {
				if o.Etcd != nil && o.Etcd.Server.MemberID() == lead {
					return j
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no etcd leader within 15s")
	return -1
}

// WaitHealthy waits until every running member serves a linearizable read.
func (c *etcdCluster) WaitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range c.Members {
		if m.Etcd == nil {
			continue
		}
		cli := c.clientFor(t, m.ClientURL)
		for {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			_, err := cli.Get(ctx, "health")
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("etcd member %s not healthy within 30s: %v", m.Name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Client returns a client of the whole cluster, closed when the test ends.
func (c *etcdCluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return c.clientFor(t, c.Endpoints()...)
}

func (c *etcdCluster) clientFor(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()}
	if c.pki != nil {
		tc, err := tlsConfig(&Config{Endpoints: endpoints, TLS: c.pki.ClientTLS()})
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Config returns a detector configuration for the cluster, polling fast.
func (c *etcdCluster) Config() Config {
	cfg := Config{
		ClusterName:    "test",
		Endpoints:      c.Endpoints(),
		Interval:       200 * time.Millisecond,
		RequestTimeout: time.Second,
		DialTimeout:    time.Second,
		LostAfter:      2 * time.Second,
		PublishTimeout: time.Second,
	}
	if c.pki != nil {
		cfg.TLS = c.pki.ClientTLS()
	}
	return cfg
}

func (c *etcdCluster) dumpLogs() {
	for _, m := range c.Members {
		b, err := os.ReadFile(m.logFile)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		lines = lines[max(0, len(lines)-40):]
		c.t.Logf("etcd member %s log (last %d lines):\n%s", m.Name, len(lines), strings.Join(lines, "\n"))
	}
}

// freePorts returns n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p := testenv.FreePort(t)
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

// testPKI is a CA, a serving certificate for 127.0.0.1 and localhost that
// is also good for client authentication (etcd dials itself with it), and
// a client certificate, all signed by the CA.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// ClientTLS returns the detector's TLS settings for the PKI.
func (p *testPKI) ClientTLS() *TLS {
	return &TLS{CAFile: p.CA, CertFile: p.ClientCert, KeyFile: p.ClientKey}
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcdmember-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{CA: write("ca.crt", "CERTIFICATE", caDER)}
	leaf := func(name string, serial int64, usage []x509.ExtKeyUsage) (cert, key string) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "PRIVATE KEY", kder)
	}
	p.ServerCert, p.ServerKey = leaf("server", 2, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	p.ClientCert, p.ClientKey = leaf("client", 3, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	return p
}

// recorder is a Publisher that keeps what it is given; failFirst makes
// that many calls fail first.
type recorder struct {
	mu        sync.Mutex
	events    []*bus.Event
	calls     int
	failFirst int
	notify    chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) Publish(_ context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.failFirst {
		return bus.PublishResult{}, fmt.Errorf("%w: test says no", bus.ErrUnavailable)
	}
	r.events = append(r.events, events...)
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return bus.PublishResult{Stored: len(events)}, nil
}

// Events returns the events published so far.
func (r *recorder) Events() []*bus.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*bus.Event(nil), r.events...)
}

// waitFor waits until an event after the first `from` matches, and returns
// it with its index.
func (r *recorder) waitFor(t testing.TB, from int, timeout time.Duration, what string, match func(*bus.Event) bool) (*bus.Event, int) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		evs := r.Events()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				return evs[i], i
			}
		}
		select {
		case <-r.notify:
		case <-deadline:
			var got []string
			for _, e := range evs {
				got = append(got, e.Type+" "+e.Status+" "+e.Subject)
			}
			t.Fatalf("no %s within %s; events: %v", what, timeout, got)
		}
	}
}

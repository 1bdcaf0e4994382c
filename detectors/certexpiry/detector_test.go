package certexpiry

import (
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/selfheal/healer/bus"
)

// kubeadmNode is a kubeadm-like /etc/kubernetes made by a test.
type kubeadmNode struct {
	dir                          string
	ca, etcdCA                   *testCA
	apiserver, etcdServer, admin issued
	frontProxyCA                 *testCA
	kubelet                      issued
}

// newKubeadmNode writes, under a temporary directory, kubeadm's layout
// with certificates chosen to be in every band at t0 (a Tuesday):
//
//	pki/apiserver.crt          RSA, 5 days left      7d
//	pki/front-proxy-ca.crt     CA, 20 days left      30d
//	pki/etcd/server.crt        expired a day ago     expired
//	admin.conf (embedded)      12 hours left         1d
//	kubelet.conf (file, rel.)  25 days left          30d
//
// and others far from expiry. scheduler.conf and super-admin.conf are
// missing, as on an older node.
func newKubeadmNode(t *testing.T) *kubeadmNode {
	t.Helper()
	n := &kubeadmNode{dir: t.TempDir()}
	pki := filepath.Join(n.dir, "pki")
	n.ca = newCA(t, "kubernetes", t0.AddDate(10, 0, 0))
	n.etcdCA = newCA(t, "etcd-ca", t0.AddDate(10, 0, 0))
	n.frontProxyCA = newCA(t, "front-proxy-ca", t0.Add(20*day))
	writeFile(t, filepath.Join(pki, "ca.crt"), n.ca.pem)
	writeFile(t, filepath.Join(pki, "ca.key"), []byte("not read: .key"))
	writeFile(t, filepath.Join(pki, "sa.pub"), []byte("not read: .pub"))
	writeFile(t, filepath.Join(pki, "front-proxy-ca.crt"), n.frontProxyCA.pem)
	n.apiserver = n.ca.issue(t, leaf{
		cn: "kube-apiserver", key: keyRSA, notAfter: t0.Add(5 * day),
		dns: []string{"cp-1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		ips: []net.IP{net.ParseIP("10.96.0.1"), net.ParseIP("10.0.0.10")},
	})
	writeFile(t, filepath.Join(pki, "apiserver.crt"), n.apiserver.certPEM)
	writeFile(t, filepath.Join(pki, "apiserver.key"), n.apiserver.keyPEM)
	etcdClient := n.etcdCA.issue(t, leaf{cn: "kube-apiserver-etcd-client", client: true, notAfter: t0.Add(300 * day)})
	writeFile(t, filepath.Join(pki, "apiserver-etcd-client.crt"), etcdClient.certPEM)
	fpClient := n.frontProxyCA.issue(t, leaf{cn: "front-proxy-client", client: true, notAfter: t0.Add(300 * day)})
	writeFile(t, filepath.Join(pki, "front-proxy-client.crt"), fpClient.certPEM)
	writeFile(t, filepath.Join(pki, "etcd", "ca.crt"), n.etcdCA.pem)
	n.etcdServer = n.etcdCA.issue(t, leaf{cn: "cp-1", notAfter: t0.Add(-day), ips: []net.IP{net.ParseIP("127.0.0.1")}})
	writeFile(t, filepath.Join(pki, "etcd", "server.crt"), n.etcdServer.certPEM)
	peer := n.etcdCA.issue(t, leaf{cn: "cp-1", notAfter: t0.Add(300 * day)})
	writeFile(t, filepath.Join(pki, "etcd", "peer.crt"), peer.certPEM)

	n.admin = n.ca.issue(t, leaf{cn: "kubernetes-admin", org: "kubeadm:cluster-admins", client: true, notAfter: t0.Add(12 * time.Hour)})
	writeFile(t, filepath.Join(n.dir, "admin.conf"), kubeconfig("kubernetes-admin", n.ca, n.admin, "", ""))
	n.kubelet = n.ca.issue(t, leaf{cn: "system:node:cp-1", org: "system:nodes", client: true, notAfter: t0.Add(25 * day)})
	writeFile(t, filepath.Join(n.dir, "kubelet-pki", "kubelet-client-current.pem"), slices.Concat(n.kubelet.certPEM, n.kubelet.keyPEM))
	writeFile(t, filepath.Join(n.dir, "kubelet.conf"), kubeconfig("system:node:cp-1", n.ca, n.kubelet,
		"kubelet-pki/kubelet-client-current.pem", "kubelet-pki/kubelet-client-current.pem"))
	cm := n.ca.issue(t, leaf{cn: "system:kube-controller-manager", client: true, notAfter: t0.Add(300 * day)})
	writeFile(t, filepath.Join(n.dir, "controller-manager.conf"), kubeconfig("system:kube-controller-manager", n.ca, cm, "", ""))
	return n
}

func (n *kubeadmNode) pki(name string) string { return filepath.Join(n.dir, "pki", name) }

func TestDetectorKubeadmNode(t *testing.T) {
	n := newKubeadmNode(t)
	h := start(t, Config{Node: "cp-1", KubeadmDir: n.dir}, t0)

	apiKey := "cp-1:file:" + n.pki("apiserver.crt")
	fpcaKey := "cp-1:file:" + n.pki("front-proxy-ca.crt")
	etcdKey := "cp-1:file:" + n.pki("etcd/server.crt")
	adminKey := "cp-1:kubeconfig:" + filepath.Join(n.dir, "admin.conf") + ":kubernetes-admin"
	kubeletKey := "cp-1:kubeconfig:" + filepath.Join(n.dir, "kubelet.conf") + ":system:node:cp-1"

	first := h.pub.take()
	if got, want := keys(first), []string{
		"firing CertificateExpiring " + apiKey,
		"firing CertificateExpiring " + fpcaKey,
		"firing CertificateExpired " + etcdKey,
		"firing CertificateExpiring " + adminKey,
		"firing CertificateExpiring " + kubeletKey,
	}; !slices.Equal(got, want) {
		t.Fatalf("first look published\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	evs := byKey(t, first)
	for _, e := range first {
		checkEvent(t, e, e.Type, "node/cp-1", bus.StatusFiring, t0)
	}

	t.Run("apiserver", func(t *testing.T) {
		d := data(t, evs[apiKey])
		c := n.apiserver.cert
		if d.Kind != KindFile || d.Node != "cp-1" || d.Path != n.pki("apiserver.crt") || d.Index != 0 {
			t.Errorf("location %+v", d.Location)
		}
		if d.SubjectCN != "kube-apiserver" || d.IssuerCN != "kubernetes" || d.Serial != c.SerialNumber.Text(16) {
			t.Errorf("names %q %q serial %q", d.SubjectCN, d.IssuerCN, d.Serial)
		}
		if !slices.Equal(d.DNSNames, c.DNSNames) || !slices.Equal(d.IPAddresses, []string{"10.96.0.1", "10.0.0.10"}) {
			t.Errorf("SANs %v %v", d.DNSNames, d.IPAddresses)
		}
		if d.Band != "7d" || d.Threshold != "168h0m0s" || d.DaysLeft != 5 || !d.NotAfter.Equal(t0.Add(5*day)) || !d.NotBefore.Equal(c.NotBefore) {
			t.Errorf("band %q threshold %q days_left %v not_after %s", d.Band, d.Threshold, d.DaysLeft, d.NotAfter)
		}
		if d.IsCA || d.KeyType != "RSA-2048" || !slices.Equal(d.KeyUsage, []string{"digitalSignature", "keyEncipherment"}) || !slices.Equal(d.ExtKeyUsage, []string{"serverAuth"}) {
			t.Errorf("is_ca %v key %q usage %v %v", d.IsCA, d.KeyType, d.KeyUsage, d.ExtKeyUsage)
		}
		if d.UsedBy != "kube-apiserver" || !slices.Equal(d.Restart, []string{"kube-apiserver"}) {
			t.Errorf("used_by %q restart %v", d.UsedBy, d.Restart)
		}
		// 2026-12-06 is a Sunday.
		if d.ExpiresWeekday != "Sunday" || !d.ExpiresOnWeekend {
			t.Errorf("expires %s, on a weekend %v", d.ExpiresWeekday, d.ExpiresOnWeekend)
		}
	})
	t.Run("front-proxy CA", func(t *testing.T) {
		d := data(t, evs[fpcaKey])
		if !d.IsCA || !d.SelfSigned || d.Band != "30d" || d.UsedBy != "kube-apiserver" || d.DaysLeft != 20 {
			t.Errorf("is_ca %v self_signed %v band %q used_by %q days_left %v", d.IsCA, d.SelfSigned, d.Band, d.UsedBy, d.DaysLeft)
		}
	})
	t.Run("etcd server", func(t *testing.T) {
		d := data(t, evs[etcdKey])
		if d.Band != BandExpired || d.DaysLeft != -1 || d.Threshold != "" || d.UsedBy != "etcd" || !slices.Equal(d.Restart, []string{"etcd"}) || d.KeyType != "ECDSA-P256" {
			t.Errorf("band %q days_left %v threshold %q used_by %q restart %v key %q", d.Band, d.DaysLeft, d.Threshold, d.UsedBy, d.Restart, d.KeyType)
		}
	})
	t.Run("admin.conf", func(t *testing.T) {
		d := data(t, evs[adminKey])
		if d.Kind != KindKubeconfig || d.Path != filepath.Join(n.dir, "admin.conf") || d.User != "kubernetes-admin" || d.CertPath != "" {
			t.Errorf("location %+v", d.Location)
		}
		if d.Band != "1d" || d.DaysLeft != 0.5 || d.SubjectCN != "kubernetes-admin" || d.Subject != "CN=kubernetes-admin,O=kubeadm:cluster-admins" || d.UsedBy != "kubectl" || len(d.Restart) != 0 {
			t.Errorf("band %q days_left %v subject %q used_by %q restart %v", d.Band, d.DaysLeft, d.Subject, d.UsedBy, d.Restart)
		}
	})
	t.Run("kubelet.conf", func(t *testing.T) {
		d := data(t, evs[kubeletKey])
		if d.CertPath != filepath.Join(n.dir, "kubelet-pki", "kubelet-client-current.pem") {
			t.Errorf("cert_path %q: want the relative path resolved against the kubeconfig", d.CertPath)
		}
		if d.Band != "30d" || d.SubjectCN != "system:node:cp-1" || d.UsedBy != "kubelet" || !slices.Equal(d.Restart, []string{"kubelet"}) || !slices.Equal(d.ExtKeyUsage, []string{"clientAuth"}) {
			t.Errorf("band %q subject %q used_by %q restart %v eku %v", d.Band, d.SubjectCN, d.UsedBy, d.Restart, d.ExtKeyUsage)
		}
	})
	if recs := h.logs.records("certificate source unreadable"); len(recs) != 0 {
		t.Errorf("a kubeadm layout without scheduler.conf logged problems: %v", recs)
	}
	if n := len(h.logs.records("certificate close to expiry")); n != 5 {
		t.Errorf("%d warnings logged, want one per firing event", n)
	}

	// Three days later, on Friday at noon: admin.conf has expired, and the
	// apiserver's certificate, which expires on Sunday at noon, is in the
	// 1d band since Friday 00:00 rather than from Saturday noon.
	h.at(t0.Add(3 * day))
	if got, want := keys(h.pub.take()), []string{
		"firing CertificateExpiring " + apiKey,
		"firing CertificateExpired " + adminKey,
	}; !slices.Equal(got, want) {
		t.Errorf("three days later: %v, want %v", got, want)
	}

	// The apiserver certificate is renewed and the front-proxy CA removed.
	renewed := n.ca.issue(t, leaf{cn: "kube-apiserver", key: keyRSA, notAfter: t0.Add(365 * day)})
	writeFile(t, n.pki("apiserver.crt"), renewed.certPEM)
	if err := os.Remove(n.pki("front-proxy-ca.crt")); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(3*day + time.Hour)
	h.at(at)
	got := h.pub.take()
	if want := []string{"resolved CertificateExpiring " + apiKey, "resolved CertificateExpiring " + fpcaKey}; !slices.Equal(keys(got), want) {
		t.Fatalf("after renewal: %v, want %v", keys(got), want)
	}
	checkEvent(t, got[0], TypeExpiring, "node/cp-1", bus.StatusResolved, at)
	if d := data(t, got[0]); d.Resolution != ResolvedRenewed || d.Serial != renewed.cert.SerialNumber.Text(16) || d.Band != "1d" ||
		d.Previous == nil || d.Previous.Serial != n.apiserver.cert.SerialNumber.Text(16) || d.DaysLeft != 362 {
		t.Errorf("renewed: resolution %q serial %q band %q previous %+v days_left %v", d.Resolution, d.Serial, d.Band, d.Previous, d.DaysLeft)
	}
	if d := data(t, got[1]); d.Resolution != ResolvedGone || !d.IsCA || d.Previous != nil {
		t.Errorf("gone: resolution %q is_ca %v previous %+v", d.Resolution, d.IsCA, d.Previous)
	}
	if got[0].ID == evs[apiKey].ID || got[0].Key != evs[apiKey].Key {
		t.Error("the resolved event must share the key of the firing one and not its id")
	}

	// etcd's server certificate becomes unreadable: it keeps its state,
	// and the problem is logged once.
	writeFile(t, n.pki("etcd/server.crt"), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	h.at(at.Add(time.Hour))
	h.at(at.Add(2 * time.Hour))
	if got := h.pub.take(); len(got) != 0 {
		t.Errorf("an unreadable certificate published %v", keys(got))
	}
	recs := h.logs.records("certificate source unreadable")
	if len(recs) != 1 || recs[0]["read"] != "file "+n.pki("etcd/server.crt") || !strings.Contains(recs[0]["err"].(string), n.pki("etcd/server.crt")) {
		t.Errorf("unreadable logged as %v, want once, naming the file", recs)
	}
	etcdRenewed := n.etcdCA.issue(t, leaf{cn: "cp-1", notAfter: t0.Add(365 * day)})
	writeFile(t, n.pki("etcd/server.crt"), etcdRenewed.certPEM)
	h.at(at.Add(3 * time.Hour))
	if got, want := keys(h.pub.take()), []string{"resolved CertificateExpired " + etcdKey}; !slices.Equal(got, want) {
		t.Errorf("after etcd renewal: %v, want %v", got, want)
	}
	if recs := h.logs.records("certificate source read again"); len(recs) != 1 {
		t.Errorf("read again logged %d times, want once", len(recs))
	}
}

// A restarted detector that finds the same certificates in the same bands
// publishes events with the same ids, which JetStream stores once.
func TestDetectorIDsSurviveRestart(t *testing.T) {
	n := newKubeadmNode(t)
	cfg := Config{Node: "cp-1", KubeadmDir: n.dir}
	h1 := start(t, cfg, t0)
	first := h1.pub.take()
	h1.stop()
	h2 := start(t, cfg, t0.Add(time.Hour))
	second := h2.pub.take()
	if len(first) == 0 || len(first) != len(second) {
		t.Fatalf("%d events, then %d after a restart", len(first), len(second))
	}
	for i := range first {
		if first[i].ID != second[i].ID || first[i].Key != second[i].Key {
			t.Errorf("event %d: %s %s, after a restart %s %s", i, first[i].Key, first[i].ID, second[i].Key, second[i].ID)
		}
	}
}

func TestDetectorFilesAndGlobs(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "app-ca", t0.Add(6*day))
	a := ca.issue(t, leaf{cn: "a", notAfter: t0.Add(2 * day), key: keyEd25519})
	far := ca.issue(t, leaf{cn: "far", notAfter: t0.Add(200 * day)})
	// A bundle: the leaf and its CA, in one file, named on its own.
	writeFile(t, filepath.Join(dir, "app", "bundle.pem"), slices.Concat(a.certPEM, ca.pem))
	writeFile(t, filepath.Join(dir, "glob", "x.pem"), a.certPEM)
	writeFile(t, filepath.Join(dir, "glob", "key-only.pem"), a.keyPEM)
	writeFile(t, filepath.Join(dir, "glob", "far.pem"), far.certPEM)
	writeFile(t, filepath.Join(dir, "named-key.pem"), a.keyPEM)
	cfg := Config{Node: "w-1", Files: []string{
		filepath.Join(dir, "app", "bundle.pem"),
		filepath.Join(dir, "glob", "*.pem"),
		filepath.Join(dir, "glob", "x.pem"), // also matched by the glob: reported once
		filepath.Join(dir, "named-key.pem"), // named, and holds no certificate: a problem
		filepath.Join(dir, "missing.crt"),   // named and missing: a problem
	}, Components: []Component{{Match: "app/*.pem", UsedBy: "app", Restart: []string{"app"}}}}
	h := start(t, cfg, t0)
	bundle := "w-1:file:" + filepath.Join(dir, "app", "bundle.pem")
	got := h.pub.take()
	want := []string{
		"firing CertificateExpiring " + bundle,
		"firing CertificateExpiring " + bundle + "#2",
		"firing CertificateExpiring w-1:file:" + filepath.Join(dir, "glob", "x.pem"),
	}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("published\n  %s\nwant\n  %s", strings.Join(keys(got), "\n  "), strings.Join(want, "\n  "))
	}
	d1, d2 := data(t, got[0]), data(t, got[1])
	if d1.Index != 1 || d2.Index != 2 || d1.SubjectCN != "a" || d2.SubjectCN != "app-ca" || !d2.IsCA || d1.KeyType != "Ed25519" {
		t.Errorf("bundle: %d %s, %d %s is_ca %v", d1.Index, d1.SubjectCN, d2.Index, d2.SubjectCN, d2.IsCA)
	}
	if d1.UsedBy != "app" || !slices.Equal(d1.Restart, []string{"app"}) {
		t.Errorf("configured component: used_by %q restart %v", d1.UsedBy, d1.Restart)
	}
	var reads []string
	for _, r := range h.logs.records("certificate source unreadable") {
		reads = append(reads, r["read"].(string))
	}
	if want := []string{"file " + filepath.Join(dir, "missing.crt"), "file " + filepath.Join(dir, "named-key.pem")}; !slices.Equal(reads, want) {
		t.Errorf("problems logged for %v, want %v", reads, want)
	}

	// The bundle's file is deleted: both its certificates resolve.
	if err := os.Remove(filepath.Join(dir, "app", "bundle.pem")); err != nil {
		t.Fatal(err)
	}
	h.at(t0.Add(time.Hour))
	if got, want := keys(h.pub.take()), []string{"resolved CertificateExpiring " + bundle, "resolved CertificateExpiring " + bundle + "#2"}; !slices.Equal(got, want) {
		t.Errorf("after removal: %v, want %v", got, want)
	}
}

// Private keys sit next to certificates, in the same files and in
// kubeconfigs; none of it may reach a log or an event.
func TestDetectorNeverLeaksKeys(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "kubernetes", t0.AddDate(5, 0, 0))
	crt := ca.issue(t, leaf{cn: "kubernetes-admin", client: true, notAfter: t0.Add(2 * day)})
	good := kubeconfig("kubernetes-admin", ca, crt, "", "")
	writeFile(t, filepath.Join(dir, "admin.conf"), good)
	// A kubeconfig broken after its key, and one whose certificate data
	// is not a certificate but the key.
	writeFile(t, filepath.Join(dir, "broken.conf"), append(slices.Clone(good), []byte("\n  : [oops\n")...))
	keyAsCert := strings.Replace(string(good), base64.StdEncoding.EncodeToString(crt.certPEM), base64.StdEncoding.EncodeToString(crt.keyPEM), 1)
	writeFile(t, filepath.Join(dir, "key-as-cert.conf"), []byte(keyAsCert))
	// A combined file whose certificate is broken.
	writeFile(t, filepath.Join(dir, "combined.pem"), slices.Concat(crt.keyPEM, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")))
	h := start(t, Config{Node: "cp-1", Files: []string{filepath.Join(dir, "combined.pem")}, Kubeconfigs: []string{
		filepath.Join(dir, "admin.conf"), filepath.Join(dir, "broken.conf"), filepath.Join(dir, "key-as-cert.conf"),
	}}, t0)
	evs := h.pub.take()
	if len(evs) != 1 {
		t.Fatalf("published %v, want admin.conf's certificate only", keys(evs))
	}
	if n := len(h.logs.records("certificate source unreadable")); n != 3 {
		t.Errorf("%d problems logged, want 3:\n%s", n, h.logs.String())
	}
	keyBody := strings.Join(strings.Split(string(crt.keyPEM), "\n")[1:3], "")
	secrets := []string{base64.StdEncoding.EncodeToString(crt.keyPEM), "PRIVATE KEY", keyBody[:40]}
	for _, s := range secrets {
		if strings.Contains(h.logs.String(), s) {
			t.Errorf("the log holds key material %q:\n%s", s, h.logs.String())
		}
		if strings.Contains(string(evs[0].Data), s) {
			t.Errorf("the event holds key material %q", s)
		}
	}
}

func TestDetectorRetriesPublishing(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca", t0.Add(3*day))
	writeFile(t, filepath.Join(dir, "ca.crt"), ca.pem)
	cfg := Config{Node: "n", Files: []string{dir}}
	cfg.ApplyDefaults()
	pub := &recordingPublisher{fail: 2}
	logs := &syncBuffer{}
	d, err := New(cfg, pub, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.poll(t.Context(), t0)
	if evs := pub.take(); len(evs) != 1 || pub.calls != 3 {
		t.Errorf("%d events stored after %d calls, want 1 after 3", len(evs), pub.calls)
	}
	if n := len(logs.records("publish event failed; retrying")); n != 2 {
		t.Errorf("%d retries logged, want 2", n)
	}
}

func TestDetectorWaitsIntervalPlusJitter(t *testing.T) {
	dir := t.TempDir()
	h := start(t, Config{Node: "n", Files: []string{dir}, Interval: time.Hour, Jitter: 10 * time.Minute}, t0)
	for i := range 20 {
		h.at(t0.Add(time.Duration(i+1) * time.Hour))
	}
	h.stop()
	close(h.waits)
	n := 0
	for w := range h.waits {
		n++
		if w < time.Hour || w > time.Hour+10*time.Minute {
			t.Errorf("waited %s, want between 1h and 1h10m", w)
		}
	}
	if n < 20 {
		t.Errorf("%d waits seen", n)
	}
}

func TestNew(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	pub := &recordingPublisher{}
	if _, err := New(Config{}, pub, log); err == nil || !strings.Contains(err.Error(), "nothing to watch") {
		t.Errorf("New(empty) = %v", err)
	}
	if _, err := New(Config{Secrets: &Secrets{}}, pub, log); err == nil || !strings.Contains(err.Error(), "WithKubeClient") {
		t.Errorf("New(secrets without client) = %v", err)
	}
	if _, err := New(Config{Secrets: &Secrets{}}, pub, log, WithKubeClient(fake.NewClientset())); err != nil {
		t.Errorf("New(secrets with client) = %v", err)
	}
	if _, err := New(Config{Endpoints: []Endpoint{{Address: "a:1"}}}, nil, log); err == nil {
		t.Error("New without a publisher succeeded")
	}
}

func TestScan(t *testing.T) {
	n := newKubeadmNode(t)
	d, err := New(Config{Node: "cp-1", KubeadmDir: n.dir, Files: []string{filepath.Join(n.dir, "nope.crt")}}, &recordingPublisher{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d.now = func() time.Time { return t0 }
	r, err := d.Scan(t.Context())
	if err == nil || !strings.Contains(err.Error(), "nope.crt") || strings.Contains(err.Error(), "scheduler.conf") {
		t.Errorf("Scan() error %v, want the missing named file only", err)
	}
	// Eight files in pki and pki/etcd, three kubeconfigs with a client
	// certificate.
	if !r.At.Equal(t0) || len(r.Certs) != 11 {
		t.Errorf("Scan() at %s found %d certificates, want 11", r.At, len(r.Certs))
	}
	if len(d.eval.Firing()) != 0 {
		t.Error("Scan() must not change the detector's state")
	}
}

// One certificate over its last weeks, looked at hourly-ish by a detector
// whose clock the test moves: each band fires once, then the renewal
// resolves it.
func TestDetectorBandsOverTime(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "kubernetes", t0.AddDate(10, 0, 0))
	path := filepath.Join(dir, "pki", "apiserver.crt")
	old := ca.issue(t, leaf{cn: "kube-apiserver", notAfter: t0.Add(45 * day)}) // Friday 2027-01-15
	writeFile(t, path, old.certPEM)
	h := start(t, Config{Node: "cp-1", Files: []string{filepath.Join(dir, "pki")}}, t0)
	steps := []struct {
		at   time.Duration
		want string // "<status> <type> <band>", or "" for nothing
	}{
		{0, ""},
		{14 * day, ""},
		{15*day + time.Hour, "firing CertificateExpiring 30d"},
		{16 * day, ""},
		{37 * day, ""},
		{38*day + time.Hour, "firing CertificateExpiring 7d"},
		{40 * day, ""},
		{44*day + time.Hour, "firing CertificateExpiring 1d"},
		{44*day + 12*time.Hour, ""},
		{45 * day, "firing CertificateExpired expired"},
		{46 * day, ""},
		{47 * day, "resolved CertificateExpired expired"}, // renewed just before
		{48 * day, ""},
	}
	ids := map[string]bool{}
	for _, s := range steps {
		at := t0.Add(s.at)
		if s.at == 47*day {
			writeFile(t, path, ca.issue(t, leaf{cn: "kube-apiserver", notAfter: at.Add(365 * day)}).certPEM)
		}
		if s.at > 0 {
			h.at(at)
		}
		evs := h.pub.take()
		var got string
		if len(evs) > 1 {
			t.Fatalf("at +%s: %v", s.at, keys(evs))
		}
		if len(evs) == 1 {
			e := evs[0]
			got = e.Status + " " + e.Type + " " + data(t, e).Band
			if e.Key != "cp-1:file:"+path || !e.Time.Equal(at) {
				t.Errorf("at +%s: key %s time %s", s.at, e.Key, e.Time)
			}
			if ids[e.ID] {
				t.Errorf("at +%s: id %s used before", s.at, e.ID)
			}
			ids[e.ID] = true
		}
		if got != s.want {
			t.Errorf("at +%s: %q, want %q", s.at, got, s.want)
		}
	}
}

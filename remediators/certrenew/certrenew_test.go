package certrenew_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
	"github.com/selfheal/healer/remediators/certrenew"
	"github.com/selfheal/healer/remediators/restart"
)

// pki is a test CA and one leaf issued by it, on disk.
type pki struct {
	dir               string
	caFile, caKeyFile string
	certFile, keyFile string
	ca                *x509.Certificate
	leaf              *x509.Certificate
	leafKey           crypto.Signer
	caKey             crypto.Signer
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newPKI(t *testing.T, leafKey crypto.Signer, caLeft, leafLeft time.Duration) *pki {
	t.Helper()
	now := time.Now()
	p := &pki{dir: t.TempDir()}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(caLeft),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(caDER)
	p.caKey = caKey
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "kube-apiserver", Organization: []string{"kubeadm"}},
		NotBefore: now.Add(-300 * 24 * time.Hour), NotAfter: now.Add(leafLeft),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"kubernetes", "kubernetes.default.svc", "localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, p.ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.leaf, _ = x509.ParseCertificate(leafDER)
	p.leafKey = leafKey
	p.caFile, p.caKeyFile = filepath.Join(p.dir, "ca.crt"), filepath.Join(p.dir, "ca.key")
	p.certFile, p.keyFile = filepath.Join(p.dir, "apiserver.crt"), filepath.Join(p.dir, "apiserver.key")
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	caKeyDER, _ := x509.MarshalPKCS8PrivateKey(caKey)
	writePEM(t, p.caKeyFile, "PRIVATE KEY", caKeyDER)
	writePEM(t, p.certFile, "CERTIFICATE", leafDER)
	if k, ok := leafKey.(*rsa.PrivateKey); ok {
		writePEM(t, p.keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
	} else {
		der, _ := x509.MarshalPKCS8PrivateKey(leafKey)
		writePEM(t, p.keyFile, "PRIVATE KEY", der)
	}
	return p
}

func (p *pki) cert(endpoint string) certrenew.Cert {
	return certrenew.Cert{Name: "apiserver", CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile, CAKeyFile: p.caKeyFile,
		Component: "kube-apiserver", Endpoint: endpoint}
}

func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verbNamed(t *testing.T, vs []action.NodeVerb, name string) action.NodeVerb {
	t.Helper()
	for _, v := range vs {
		if v.Name() == name {
			return v
		}
	}
	t.Fatalf("no verb %s", name)
	return nil
}

func nop(context.Context, string, map[string]any) {}

func TestRenewKeepsIdentity(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"RSA-2048": rsaKey, "ECDSA-P-256": ecKey} {
		t.Run(name, func(t *testing.T) {
			p := newPKI(t, key, 5*365*24*time.Hour, 3*24*time.Hour)
			v, err := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert("")}}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			renew := verbNamed(t, v.Verbs(), certrenew.VerbRenew)
			res, err := renew.Run(t.Context(), action.NodeRequest{ID: "act-1", Params: map[string]any{"cert": "apiserver"}}, nop)
			if err != nil || !res.Changed {
				t.Fatalf("renew: changed=%v err=%v", res.Changed, err)
			}
			got := readLeaf(t, p.certFile)
			if err := got.CheckSignatureFrom(p.ca); err != nil {
				t.Fatalf("renewed certificate not signed by the CA: %v", err)
			}
			if got.SerialNumber.Cmp(p.leaf.SerialNumber) == 0 {
				t.Error("serial unchanged")
			}
			if got.Subject.String() != p.leaf.Subject.String() || !slices.Equal(got.DNSNames, p.leaf.DNSNames) ||
				len(got.IPAddresses) != 2 || !got.IPAddresses[1].Equal(p.leaf.IPAddresses[1]) {
				t.Errorf("identity changed: %v %v %v", got.Subject, got.DNSNames, got.IPAddresses)
			}
			if got.KeyUsage != p.leaf.KeyUsage || !slices.Equal(got.ExtKeyUsage, p.leaf.ExtKeyUsage) {
				t.Errorf("key usages changed: %v %v", got.KeyUsage, got.ExtKeyUsage)
			}
			if !got.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Error("the key changed; renew keeps it (and so its type)")
			}
			if left := time.Until(got.NotAfter); left < 364*24*time.Hour || left > 366*24*time.Hour {
				t.Errorf("valid for %s, want a year", left)
			}
			// The old certificate is kept beside it.
			backup := p.certFile + ".healer-act-1.bak"
			if old := readLeaf(t, backup); old.SerialNumber.Cmp(p.leaf.SerialNumber) != 0 {
				t.Error("backup does not hold the old certificate")
			}
			// A retry of the same action writes nothing again.
			res, err = renew.Run(t.Context(), action.NodeRequest{ID: "act-1", Params: map[string]any{"cert": "apiserver"}}, nop)
			if err != nil || res.Changed {
				t.Fatalf("retry: changed=%v err=%v", res.Changed, err)
			}
			if again := readLeaf(t, p.certFile); again.SerialNumber.Cmp(got.SerialNumber) != 0 {
				t.Fatal("a retry renewed again")
			}
		})
	}
}

func TestRenewRefuses(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("CA near expiry", func(t *testing.T) {
		p := newPKI(t, key, 10*24*time.Hour, 2*24*time.Hour)
		v, _ := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert("")}}, slog.New(slog.DiscardHandler))
		_, err := verbNamed(t, v.Verbs(), certrenew.VerbRenew).Run(t.Context(), action.NodeRequest{ID: "a", Params: map[string]any{"cert": "apiserver"}}, nop)
		if !errors.Is(err, action.ErrUnsafe) || !errors.Is(err, certrenew.ErrCANearExpiry) {
			t.Fatalf("got %v, want ErrUnsafe and ErrCANearExpiry", err)
		}
		if readLeaf(t, p.certFile).SerialNumber.Cmp(p.leaf.SerialNumber) != 0 {
			t.Fatal("the certificate was replaced")
		}
	})
	t.Run("key does not match", func(t *testing.T) {
		p := newPKI(t, key, 365*24*time.Hour, 2*24*time.Hour)
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(other)
		writePEM(t, p.keyFile, "PRIVATE KEY", der)
		v, _ := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert("")}}, slog.New(slog.DiscardHandler))
		_, err := verbNamed(t, v.Verbs(), certrenew.VerbRenew).Run(t.Context(), action.NodeRequest{ID: "a", Params: map[string]any{"cert": "apiserver"}}, nop)
		if !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("got %v, want ErrUnsafe", err)
		}
	})
	t.Run("unknown certificate", func(t *testing.T) {
		v, _ := certrenew.NewVerbs(certrenew.Config{}, slog.New(slog.DiscardHandler))
		_, err := verbNamed(t, v.Verbs(), certrenew.VerbRenew).Run(t.Context(), action.NodeRequest{ID: "a", Params: map[string]any{"cert": "/etc/passwd"}}, nop)
		if !errors.Is(err, action.ErrInvalidParams) {
			t.Fatalf("got %v, want ErrInvalidParams", err)
		}
	})
}

// servingComponent is an HTTPS endpoint that loads its certificate from
// disk when it (re)starts, as kube-apiserver does; "restart" is its
// restart verb.
type servingComponent struct {
	mu       sync.Mutex
	cert     *tls.Certificate
	certFile string
	keyFile  string
	restarts int
}

func (s *servingComponent) load() error {
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cert = &c
	s.mu.Unlock()
	return nil
}

func (s *servingComponent) Name() string { return restart.VerbRestart }
func (s *servingComponent) Run(context.Context, action.NodeRequest, action.Progress) (action.Result, error) {
	if err := s.load(); err != nil {
		return action.Result{}, err
	}
	s.mu.Lock()
	s.restarts++
	s.mu.Unlock()
	return action.Result{Changed: true, Message: "kube-apiserver restarted"}, nil
}

// directAgent runs verbs in-process, as the agent would on the master.
type directAgent struct{ verbs []action.NodeVerb }

func (d directAgent) CallProgress(ctx context.Context, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	for _, v := range d.verbs {
		if v.Name() == req.Verb {
			if progress == nil {
				progress = nop
			}
			return v.Run(ctx, req, progress)
		}
	}
	return action.Result{}, action.ErrInvalidParams
}

// TestRenewAndServe: an HTTPS endpoint serves a certificate about to
// expire; the remediator re-checks, renews, restarts the component, and
// verifies that the endpoint now presents the renewed certificate.
func TestRenewAndServe(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t, key, 5*365*24*time.Hour, 20*time.Hour)
	comp := &servingComponent{certFile: p.certFile, keyFile: p.keyFile}
	if err := comp.load(); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		comp.mu.Lock()
		defer comp.mu.Unlock()
		return comp.cert, nil
	}})
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
			go func() { _ = c.(*tls.Conn).Handshake(); _ = c.Close() }()
		}
	}()
	v, err := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert(ln.Addr().String())}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := certrenew.New(directAgent{verbs: append(v.Verbs(), comp)}, slog.New(slog.DiscardHandler))
	req := action.Request{ID: "act-7", Target: "node/master-1", Params: map[string]any{"cert": "apiserver"}}
	if err := r.Validate(req.Params); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(t.Context(), req); err != nil {
		t.Fatalf("before: the endpoint serves the file's certificate, verify said %v", err)
	}
	if err := r.Check(t.Context(), req); err != nil {
		t.Fatalf("check: %v", err)
	}
	var steps []string
	res, err := r.Act(t.Context(), req, func(_ context.Context, step string, _ map[string]any) { steps = append(steps, step) })
	if err != nil || !res.Changed {
		t.Fatalf("act: %+v %v", res, err)
	}
	if comp.restarts != 1 || !slices.Equal(steps, []string{"certificate written", "restarting kube-apiserver"}) {
		t.Fatalf("restarts %d, steps %v", comp.restarts, steps)
	}
	if err := r.Verify(t.Context(), req); err != nil {
		t.Fatalf("verify: %v", err)
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool(p.ca), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("a client trusting the CA: %v", err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	_ = conn.Close()
	if time.Until(served.NotAfter) < 300*24*time.Hour {
		t.Fatalf("the endpoint serves a certificate valid until %s", served.NotAfter)
	}
	// A certificate renewed on disk but not yet served fails verification.
	if _, err := verbNamed(t, v.Verbs(), certrenew.VerbRenew).Run(t.Context(), action.NodeRequest{ID: "act-8", Params: map[string]any{"cert": "apiserver"}}, nop); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(t.Context(), req); err == nil {
		t.Fatal("verify passed while the endpoint still serves the previous certificate")
	}
}

func TestRemediatorRefusesWhenCANearExpiry(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p := newPKI(t, key, 5*24*time.Hour, 2*24*time.Hour)
	v, _ := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert("")}}, slog.New(slog.DiscardHandler))
	r := certrenew.New(directAgent{verbs: v.Verbs()}, slog.New(slog.DiscardHandler))
	err := r.Check(t.Context(), action.Request{ID: "a", Target: "node/master-1", Params: map[string]any{"cert": "apiserver"}})
	if !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("Check = %v, want ErrUnsafe (renew the CA first)", err)
	}
	if err := certrenew.New(nil, slog.New(slog.DiscardHandler)).Check(t.Context(), action.Request{Target: "node/m", Params: map[string]any{"cert": "apiserver"}}); !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("without agents: %v, want ErrUnsafe", err)
	}
}

func pool(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}

func TestRenewByFile(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p := newPKI(t, key, 365*24*time.Hour, 2*24*time.Hour)
	v, _ := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert("")}}, slog.New(slog.DiscardHandler))
	renew := verbNamed(t, v.Verbs(), certrenew.VerbRenew)
	for name, params := range map[string]map[string]any{
		"a file not configured": {"file": "/etc/passwd"},
		"both names":            {"file": p.certFile, "cert": "apiserver"},
		"neither":               {},
	} {
		if _, err := renew.Run(t.Context(), action.NodeRequest{ID: "x", Params: params}, nop); !errors.Is(err, action.ErrInvalidParams) {
			t.Errorf("%s: %v, want ErrInvalidParams", name, err)
		}
	}
	res, err := renew.Run(t.Context(), action.NodeRequest{ID: "by-file", Params: map[string]any{"file": p.certFile}}, nop)
	if err != nil || !res.Changed || res.Details["cert"] != "apiserver" {
		t.Fatalf("renew by file: %+v %v", res, err)
	}
	if err := certrenew.New(nil, slog.New(slog.DiscardHandler)).Validate(map[string]any{"file": "pki/apiserver.crt"}); !errors.Is(err, action.ErrInvalidParams) {
		t.Fatalf("a relative file: %v, want ErrInvalidParams", err)
	}
}

// TestVerbsRefuseHostileParams: the action id (which names the backup
// file), cert and file are checked by agentparam before anything is read
// or written; a refused request leaves the PKI directory as it was.
func TestVerbsRefuseHostileParams(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name   string
		verb   string
		id     string
		params func(p *pki) map[string]any
		param  string // the agentparam.Error's
	}{
		{"action id climbing out", certrenew.VerbRenew, "../../etc/passwd", byName, "action id"},
		{"action id with a slash", certrenew.VerbRenew, "act/1", byName, "action id"},
		{"absolute action id", certrenew.VerbRenew, "/var/lib/x", byName, "action id"},
		{"action id with a NUL", certrenew.VerbRenew, "act\x001", byName, "action id"},
		{"action id with a newline", certrenew.VerbRenew, "act-1\nx", byName, "action id"},
		{"very long action id", certrenew.VerbRenew, string(make([]byte, 300)), byName, "action id"},
		{"file through ..", certrenew.VerbRenew, "act-1", func(p *pki) map[string]any {
			return map[string]any{"file": p.dir + "/../" + filepath.Base(p.dir) + "/" + filepath.Base(p.certFile)}
		}, "file"},
		{"file with a NUL", certrenew.VerbCheck, "c-1", func(p *pki) map[string]any { return map[string]any{"file": p.certFile + "\x00.bak"} }, "file"},
		{"relative file", certrenew.VerbCheck, "c-1", func(*pki) map[string]any { return map[string]any{"file": "apiserver.crt"} }, "file"},
		{"cert climbing out", certrenew.VerbCheck, "c-1", func(*pki) map[string]any { return map[string]any{"cert": "../ca"} }, "cert"},
		{"cert with a newline", certrenew.VerbRenew, "act-1", func(*pki) map[string]any { return map[string]any{"cert": "apiserver\n"} }, "cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t, key, 365*24*time.Hour, 2*24*time.Hour)
			v, err := certrenew.NewVerbs(certrenew.Config{Certs: []certrenew.Cert{p.cert("")}}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			before := dirListing(t, p.dir)
			_, err = verbNamed(t, v.Verbs(), tc.verb).Run(t.Context(), action.NodeRequest{ID: tc.id, Params: tc.params(p)}, nop)
			var pe *agentparam.Error
			if !errors.Is(err, action.ErrInvalidParams) || !errors.As(err, &pe) || pe.Param != tc.param {
				t.Fatalf("Run = %v, want an agentparam refusal of %s", err, tc.param)
			}
			if after := dirListing(t, p.dir); !slices.Equal(before, after) {
				t.Fatalf("the PKI directory changed: %v, was %v", after, before)
			}
			if readLeaf(t, p.certFile).SerialNumber.Cmp(p.leaf.SerialNumber) != 0 {
				t.Fatal("the certificate was replaced")
			}
		})
	}
}

func byName(*pki) map[string]any { return map[string]any{"cert": "apiserver"} }

func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

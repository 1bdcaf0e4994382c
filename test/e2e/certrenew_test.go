package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/detectors/certexpiry"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/remediators/certrenew"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/test/testenv"
)

// testPKI writes a CA valid for five years and a serving certificate for
// 127.0.0.1 signed by it that expires in leafLeft, as kubeadm lays them
// out; it returns the paths and the CA for clients.
func testPKI(t *testing.T, leafLeft time.Duration) (dir string, ca *x509.Certificate) {
	t.Helper()
	dir = t.TempDir()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(1001), Subject: pkix.Name{CommonName: "kube-apiserver"}, NotBefore: now.Add(-360 * 24 * time.Hour), NotAfter: now.Add(leafLeft),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caKeyDER, _ := x509.MarshalPKCS8PrivateKey(caKey)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write("ca.crt", "CERTIFICATE", caDER)
	write("ca.key", "PRIVATE KEY", caKeyDER)
	write("apiserver.crt", "CERTIFICATE", leafDER)
	write("apiserver.key", "PRIVATE KEY", keyDER)
	return dir, ca
}

// presented is the leaf an HTTPS server at addr presents to a client that
// trusts ca.
func presented(t *testing.T, addr string, ca *x509.Certificate) *x509.Certificate {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0]
}

// A master's apiserver certificate expires in three days. The agent's
// certexpiry detector reports it, the default policy renews it, the agent
// re-issues it with the CA, restarts the HTTPS server that serves it (a
// real process reading its certificate at start), and healer verifies the
// endpoint now presents the new certificate.
func TestExpiringCertificateRenewedAndServed(t *testing.T) {
	dir, ca := testPKI(t, 3*24*time.Hour)
	certFile, keyFile := filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	raw, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	before, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	h := startHealer(t, serve.Config{NoKubernetes: true})
	addr := testenv.FreeAddr(t)
	cmd, cmdEnv := testenv.FakeDaemonCommand(t, addr)
	cmdEnv = append(cmdEnv, testenv.FakeDaemonTLSEnv+"="+certFile+":"+keyFile)
	cfg := agent.Config{
		Node: "master-1", DataDir: t.TempDir(), NATS: h.agentNATS(t, "master-1"),
		Restart: restart.Config{Components: []restart.Component{{
			Name: "kube-apiserver", Kind: restart.KindProcess, Command: cmd, Env: cmdEnv,
			LogFile: filepath.Join(t.TempDir(), "apiserver.log"), StopGrace: 2 * time.Second,
			Health: restart.Health{TCP: addr, Timeout: 10 * time.Second, Interval: 20 * time.Millisecond},
		}}},
		CertExpiry: &certexpiry.Config{Node: "master-1", Files: []string{certFile}, Interval: time.Second},
		CertRenew: certrenew.Config{Certs: []certrenew.Cert{{
			Name: "apiserver", CertFile: certFile, KeyFile: keyFile,
			CAFile: filepath.Join(dir, "ca.crt"), CAKeyFile: filepath.Join(dir, "ca.key"),
			Component: "kube-apiserver", Endpoint: addr,
		}}},
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	start := time.Now() // the certificate is already expiring: the agent's detector sees it at once
	a, err := agent.Start(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), agent.Deps{Version: "e2e"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = a.Wait() })
	var recs []audit.Record
	waitFor(t, 60*time.Second, "cert.renew verified", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/master-1"}})
		for _, r := range recs {
			if r.Remediator == certrenew.Name && (r.Kind == audit.KindActionFailed || r.Kind == audit.KindSuppressed) {
				t.Fatalf("cert.renew did not happen: %s%s", r.Kind, describe(recs))
			}
			if r.Remediator == certrenew.Name && r.Kind == audit.KindVerified {
				return true, ""
			}
		}
		return false, describe(recs)
	})
	if want := []string{"event", "decision", "action.started", "action.progress", "action.finished", "verified"}; !testenv.IsSubsequence(want, kinds(recs)) {
		t.Fatalf("records %v, want in order %v", kinds(recs), want)
	}
	t.Logf("time to heal: expiring certificate to renewed, served and verified: %s", time.Since(start).Round(time.Millisecond))
	after := presented(t, addr, ca)
	switch {
	case after.SerialNumber.Cmp(before.SerialNumber) == 0:
		t.Fatal("the server still presents the old certificate")
	case time.Until(after.NotAfter) < 300*24*time.Hour:
		t.Fatalf("the served certificate is valid until %s, want about a year", after.NotAfter)
	case after.Subject.CommonName != before.Subject.CommonName || !after.IPAddresses[0].Equal(before.IPAddresses[0]):
		t.Fatalf("the renewed certificate changed identity: %v %v", after.Subject, after.IPAddresses)
	}
	backups, _ := filepath.Glob(certFile + ".healer-*.bak")
	if len(backups) != 1 {
		t.Fatalf("backups of the old certificate: %v, want one", backups)
	}
}

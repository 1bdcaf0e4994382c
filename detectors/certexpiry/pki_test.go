package certexpiry

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Key types of test certificates.
const (
	keyRSA     = "rsa"
	keyECDSA   = "ecdsa"
	keyEd25519 = "ed25519"
)

// testCA is a CA made by a test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// leaf describes a certificate for testCA.issue.
type leaf struct {
	cn       string
	dns      []string
	ips      []net.IP
	notAfter time.Time
	key      string // keyRSA (2048 bits), keyECDSA (P-256) or keyEd25519; default keyECDSA
	client   bool   // clientAuth rather than serverAuth
	org      string
}

// issued is a certificate and its key, in PEM.
type issued struct {
	cert    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
	key     crypto.Signer
}

func newKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case keyRSA:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case keyEd25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// newCA makes a self-signed RSA CA valid until notAfter.
func newCA(t testing.TB, cn string, notAfter time.Time) *testCA {
	t.Helper()
	key := newKey(t, keyRSA)
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notAfter.AddDate(-10, 0, 0),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate signed by ca.
func (ca *testCA) issue(t testing.TB, l leaf) issued {
	t.Helper()
	key := newKey(t, l.key)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		Subject:      pkix.Name{CommonName: l.cn},
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
		NotBefore:    l.notAfter.AddDate(-1, 0, 0),
		NotAfter:     l.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if l.org != "" {
		tmpl.Subject.Organization = []string{l.org}
	}
	if l.key == keyRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if l.client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return issued{
		cert:    c,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		key:     key,
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// kubeconfig is a kubeconfig whose one user has the client certificate
// data, or the file certFile when data is nil.
func kubeconfig(user string, ca *testCA, crt issued, certFile, keyFile string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	auth := fmt.Sprintf("    client-certificate-data: %s\n    client-key-data: %s\n", b64(crt.certPEM), b64(crt.keyPEM))
	if certFile != "" {
		auth = fmt.Sprintf("    client-certificate: %s\n    client-key: %s\n", certFile, keyFile)
	}
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: https://10.0.0.10:6443
    certificate-authority-data: %s
contexts:
- name: %s@kubernetes
  context: {cluster: kubernetes, user: %s}
current-context: %s@kubernetes
users:
- name: %s
  user:
%s`, b64(ca.pem), user, user, user, user, auth)
}

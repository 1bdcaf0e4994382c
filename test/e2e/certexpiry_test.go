package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/detectors/certexpiry"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// selfSigned is a PEM certificate and key valid until notAfter.
func selfSigned(t *testing.T, cn string, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: notAfter, DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// serve watches the cluster's TLS secrets: a secret whose certificate
// expires in three days is reported with where it is and days left, and
// only reported (the policy renews files on masters, not secrets).
func TestServeReportsExpiringTLSSecret(t *testing.T) {
	kube := testenv.StartKube(t)
	crt, key := selfSigned(t, "shop.example.com", time.Now().Add(3*24*time.Hour))
	if _, err := kube.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ingress"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.CoreV1().Secrets("ingress").Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h := startHealer(t, serve.Config{
		Kubeconfig: kube.KubeconfigPath,
		CertExpiry: &certexpiry.Config{Secrets: &certexpiry.Secrets{Namespaces: []string{"ingress"}}, Interval: time.Second},
	})
	const target = "cert/ingress/shop-tls"
	var recs []audit.Record
	waitFor(t, 30*time.Second, "the expiring secret's event and decision", func() (bool, string) {
		recs = h.records(url.Values{"target": {target}})
		return len(recs) >= 2, describe(recs)
	})
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Band     string  `json:"band"`
			Kind     string  `json:"kind"`
			DaysLeft float64 `json:"days_left"`
			Subject  string  `json:"subject"`
		} `json:"data"`
	}
	if err := json.Unmarshal(recs[0].Details, &ev); err != nil {
		t.Fatal(err)
	}
	if recs[0].Kind != audit.KindEvent || ev.Type != "CertificateExpiring" || ev.Data.Band != "7d" || ev.Data.Kind != "secret" || ev.Data.DaysLeft < 2.9 || ev.Data.DaysLeft > 3 {
		t.Fatalf("event %s: %+v, want CertificateExpiring in band 7d for a secret with 3 days left", recs[0].Kind, ev)
	}
	var dec struct {
		Decision struct {
			Remediator string `json:"remediator"`
			Rule       string `json:"rule"`
		} `json:"decision"`
	}
	if err := json.Unmarshal(recs[1].Details, &dec); err != nil {
		t.Fatal(err)
	}
	if recs[1].Kind != audit.KindDecision || dec.Decision.Remediator != "" || dec.Decision.Rule != "report_expiring_certificate" {
		t.Fatalf("decision %+v, want report_expiring_certificate without a remediator", dec)
	}
}

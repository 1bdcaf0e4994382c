package certexpiry

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Kinds of location a certificate is found in.
const (
	KindFile       = "file"
	KindKubeconfig = "kubeconfig"
	KindSecret     = "secret"
	KindEndpoint   = "endpoint"
)

// ErrNoCertificate is returned for PEM data that holds no certificate.
var ErrNoCertificate = errors.New("no certificate")

// Location is where a certificate was found.
type Location struct {
	// Kind is KindFile, KindKubeconfig, KindSecret or KindEndpoint.
	Kind string `json:"kind"`
	// Node is the node the file, kubeconfig or local endpoint is on.
	Node string `json:"node,omitempty"`
	// Path is the certificate file, or the kubeconfig.
	Path string `json:"path,omitempty"`
	// Index is the certificate's position (from 1) in a file that holds
	// more than one; 0 otherwise.
	Index int `json:"index,omitempty"`
	// User is the kubeconfig user the client certificate belongs to.
	User string `json:"user,omitempty"`
	// CertPath is the client-certificate file a kubeconfig user names,
	// resolved against the kubeconfig's directory; empty for
	// client-certificate-data.
	CertPath string `json:"cert_path,omitempty"`
	// Namespace and Secret name a TLS secret.
	Namespace string `json:"namespace,omitempty"`
	Secret    string `json:"secret,omitempty"`
	// CertManagerCertificate is the cert-manager Certificate that owns
	// the secret (its cert-manager.io/certificate-name annotation).
	CertManagerCertificate string `json:"cert_manager_certificate,omitempty"`
	// Endpoint is the host:port of a TLS endpoint, and ServerName the SNI
	// sent to it.
	Endpoint   string `json:"endpoint,omitempty"`
	ServerName string `json:"server_name,omitempty"`
}

// Key is the location's stable key, the events' key:
// "<node>:file:<path>" (with "#<index>" for the second certificate of a
// file and later ones), "<node>:kubeconfig:<path>:<user>",
// "secret:<namespace>/<name>", and "<node>:endpoint:<host:port>" (or
// "endpoint:<host:port>" without a node).
func (l Location) Key() string {
	switch l.Kind {
	case KindFile:
		k := l.Node + ":file:" + l.Path
		if l.Index > 1 {
			k += fmt.Sprintf("#%d", l.Index)
		}
		return k
	case KindKubeconfig:
		return l.Node + ":kubeconfig:" + l.Path + ":" + l.User
	case KindSecret:
		return "secret:" + l.Namespace + "/" + l.Secret
	default:
		if l.Node == "" {
			return "endpoint:" + l.Endpoint
		}
		return l.Node + ":endpoint:" + l.Endpoint
	}
}

// EventSubject is the events' subject: "node/<node>" for files and
// kubeconfigs, "cert/<namespace>/<secret>" for secrets and
// "endpoint/<host:port>" for endpoints.
func (l Location) EventSubject() string {
	switch l.Kind {
	case KindSecret:
		return "cert/" + l.Namespace + "/" + l.Secret
	case KindEndpoint:
		return "endpoint/" + l.Endpoint
	default:
		return "node/" + l.Node
	}
}

// name is what Component.Match is matched against.
func (l Location) name() string {
	switch l.Kind {
	case KindSecret:
		return l.Namespace + "/" + l.Secret
	case KindEndpoint:
		return l.Endpoint
	default:
		return l.Path
	}
}

// Cert is what is reported of a certificate.
type Cert struct {
	SubjectCN     string    `json:"subject_cn"`
	Subject       string    `json:"subject"`
	DNSNames      []string  `json:"dns_names"`
	IPAddresses   []string  `json:"ip_addresses"`
	IssuerCN      string    `json:"issuer_cn"`
	Issuer        string    `json:"issuer"`
	Serial        string    `json:"serial"`
	SHA256        string    `json:"sha256"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	IsCA          bool      `json:"is_ca"`
	SelfSigned    bool      `json:"self_signed"`
	KeyType       string    `json:"key_type"`
	SignatureAlgo string    `json:"signature_algorithm"`
	KeyUsage      []string  `json:"key_usage"`
	ExtKeyUsage   []string  `json:"ext_key_usage"`
}

// NewCert describes c. Serial is lower-case hex, SHA256 the fingerprint
// of the DER encoding, the times UTC.
func NewCert(c *x509.Certificate) Cert {
	sum := sha256.Sum256(c.Raw)
	out := Cert{
		SubjectCN:     c.Subject.CommonName,
		Subject:       c.Subject.String(),
		DNSNames:      append([]string{}, c.DNSNames...),
		IPAddresses:   []string{},
		IssuerCN:      c.Issuer.CommonName,
		Issuer:        c.Issuer.String(),
		Serial:        c.SerialNumber.Text(16),
		SHA256:        hex.EncodeToString(sum[:]),
		NotBefore:     c.NotBefore.UTC(),
		NotAfter:      c.NotAfter.UTC(),
		IsCA:          c.IsCA,
		SelfSigned:    bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil,
		KeyType:       keyType(c.PublicKey),
		SignatureAlgo: c.SignatureAlgorithm.String(),
		KeyUsage:      keyUsageNames(c.KeyUsage),
		ExtKeyUsage:   extKeyUsageNames(c.ExtKeyUsage),
	}
	for _, ip := range c.IPAddresses {
		out.IPAddresses = append(out.IPAddresses, ip.String())
	}
	return out
}

// keyType names a public key as "RSA-2048", "ECDSA-P256" or "Ed25519".
func keyType(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-" + strings.ReplaceAll(k.Curve.Params().Name, "-", "")
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

// keyUsageNames names the bits of u as RFC 5280 does.
func keyUsageNames(u x509.KeyUsage) []string {
	names := []string{
		"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly",
	}
	out := []string{}
	for i, n := range names {
		if u&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// extKeyUsageNames names extended key usages as RFC 5280 and its
// successors do.
func extKeyUsageNames(us []x509.ExtKeyUsage) []string {
	out := []string{}
	for _, u := range us {
		var n string
		switch u {
		case x509.ExtKeyUsageAny:
			n = "any"
		case x509.ExtKeyUsageServerAuth:
			n = "serverAuth"
		case x509.ExtKeyUsageClientAuth:
			n = "clientAuth"
		case x509.ExtKeyUsageCodeSigning:
			n = "codeSigning"
		case x509.ExtKeyUsageEmailProtection:
			n = "emailProtection"
		case x509.ExtKeyUsageTimeStamping:
			n = "timeStamping"
		case x509.ExtKeyUsageOCSPSigning:
			n = "OCSPSigning"
		default:
			n = fmt.Sprintf("unknown(%d)", u)
		}
		out = append(out, n)
	}
	return out
}

// ParsePEM returns the certificates in PEM data, in order, skipping
// blocks of other types (private keys, parameters) without looking at
// them. It returns ErrNoCertificate when there is none, and an error
// naming the block's position when a certificate does not parse.
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, ErrNoCertificate
	}
	return certs, nil
}

// KubeadmComponents is the built-in table of who uses the certificates of
// a kubeadm control plane, and what to restart once one is renewed. It is
// a best guess from the file names; Config.Components come first.
func KubeadmComponents() []Component {
	apiserver := []string{"kube-apiserver"}
	return []Component{
		{Kind: KindFile, Match: "pki/apiserver.crt", UsedBy: "kube-apiserver", Restart: apiserver},
		{Kind: KindFile, Match: "pki/apiserver-kubelet-client.crt", UsedBy: "kube-apiserver", Restart: apiserver},
		{Kind: KindFile, Match: "pki/apiserver-etcd-client.crt", UsedBy: "kube-apiserver", Restart: apiserver},
		{Kind: KindFile, Match: "pki/front-proxy-client.crt", UsedBy: "kube-apiserver", Restart: apiserver},
		{Kind: KindFile, Match: "pki/front-proxy-ca.crt", UsedBy: "kube-apiserver", Restart: []string{"kube-apiserver", "kube-controller-manager"}},
		{Kind: KindFile, Match: "pki/ca.crt", UsedBy: "kube-apiserver", Restart: []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}},
		{Kind: KindFile, Match: "etcd/ca.crt", UsedBy: "etcd", Restart: []string{"etcd", "kube-apiserver"}},
		{Kind: KindFile, Match: "etcd/server.crt", UsedBy: "etcd", Restart: []string{"etcd"}},
		{Kind: KindFile, Match: "etcd/peer.crt", UsedBy: "etcd", Restart: []string{"etcd"}},
		{Kind: KindFile, Match: "etcd/healthcheck-client.crt", UsedBy: "etcd"},
		{Kind: KindFile, Match: "kubelet-client-current.pem", UsedBy: "kubelet", Restart: []string{"kubelet"}},
		{Kind: KindFile, Match: "kubelet.crt", UsedBy: "kubelet", Restart: []string{"kubelet"}},
		{Kind: KindKubeconfig, Match: "admin.conf", UsedBy: "kubectl"},
		{Kind: KindKubeconfig, Match: "super-admin.conf", UsedBy: "kubectl"},
		{Kind: KindKubeconfig, Match: "kubelet.conf", UsedBy: "kubelet", Restart: []string{"kubelet"}},
		{Kind: KindKubeconfig, Match: "controller-manager.conf", UsedBy: "kube-controller-manager", Restart: []string{"kube-controller-manager"}},
		{Kind: KindKubeconfig, Match: "scheduler.conf", UsedBy: "kube-scheduler", Restart: []string{"kube-scheduler"}},
		{Kind: KindEndpoint, Match: "*:6443", UsedBy: "kube-apiserver", Restart: apiserver},
		{Kind: KindEndpoint, Match: "*:2379", UsedBy: "etcd", Restart: []string{"etcd"}},
		{Kind: KindEndpoint, Match: "*:2380", UsedBy: "etcd", Restart: []string{"etcd"}},
		{Kind: KindEndpoint, Match: "*:10250", UsedBy: "kubelet", Restart: []string{"kubelet"}},
		{Kind: KindEndpoint, Match: "*:10257", UsedBy: "kube-controller-manager", Restart: []string{"kube-controller-manager"}},
		{Kind: KindEndpoint, Match: "*:10259", UsedBy: "kube-scheduler", Restart: []string{"kube-scheduler"}},
	}
}

// matches reports whether the rule applies to l.
func (r Component) matches(l Location) bool {
	if r.Kind != "" && r.Kind != l.Kind {
		return false
	}
	want := strings.Count(r.Match, "/") + 1
	parts := strings.Split(strings.TrimLeft(l.name(), "/"), "/")
	if len(parts) < want {
		return false
	}
	ok, _ := path.Match(r.Match, strings.Join(parts[len(parts)-want:], "/"))
	return ok
}

// componentFor returns the first rule of rules that matches l, or the
// zero Component.
func componentFor(rules []Component, l Location) Component {
	for _, r := range rules {
		if r.matches(l) {
			return r
		}
	}
	return Component{}
}

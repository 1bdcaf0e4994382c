package certexpiry

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCert(t *testing.T) {
	notAfter := time.Date(2027, 3, 6, 8, 30, 0, 0, time.UTC)
	ca := newCA(t, "kubernetes", notAfter.AddDate(9, 0, 0))
	tests := []struct {
		name    string
		leaf    leaf
		keyType string
		usage   []string
		ext     []string
	}{
		{"rsa server", leaf{cn: "kube-apiserver", key: keyRSA, dns: []string{"kubernetes", "kubernetes.default.svc"}, ips: []net.IP{net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")}, notAfter: notAfter},
			"RSA-2048", []string{"digitalSignature", "keyEncipherment"}, []string{"serverAuth"}},
		{"ecdsa client", leaf{cn: "kube-apiserver-etcd-client", key: keyECDSA, client: true, notAfter: notAfter},
			"ECDSA-P256", []string{"digitalSignature"}, []string{"clientAuth"}},
		{"ed25519", leaf{cn: "front-proxy-client", key: keyEd25519, client: true, notAfter: notAfter},
			"Ed25519", []string{"digitalSignature"}, []string{"clientAuth"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crt := ca.issue(t, tt.leaf)
			c := NewCert(crt.cert)
			if c.SubjectCN != tt.leaf.cn || c.IssuerCN != "kubernetes" || c.Subject != "CN="+tt.leaf.cn || c.Issuer != "CN=kubernetes" {
				t.Errorf("names: subject %q (%q), issuer %q (%q)", c.SubjectCN, c.Subject, c.IssuerCN, c.Issuer)
			}
			if c.KeyType != tt.keyType {
				t.Errorf("key type %q, want %q", c.KeyType, tt.keyType)
			}
			if !slices.Equal(c.KeyUsage, tt.usage) || !slices.Equal(c.ExtKeyUsage, tt.ext) {
				t.Errorf("usage %v %v, want %v %v", c.KeyUsage, c.ExtKeyUsage, tt.usage, tt.ext)
			}
			if c.Serial != crt.cert.SerialNumber.Text(16) || c.Serial != strings.ToLower(c.Serial) {
				t.Errorf("serial %q, want lower-case hex of %s", c.Serial, crt.cert.SerialNumber)
			}
			if !c.NotAfter.Equal(notAfter) || c.NotAfter.Location() != time.UTC || !c.NotBefore.Equal(notAfter.AddDate(-1, 0, 0)) {
				t.Errorf("validity %s to %s", c.NotBefore, c.NotAfter)
			}
			if c.IsCA || c.SelfSigned {
				t.Errorf("a leaf is_ca %v self_signed %v", c.IsCA, c.SelfSigned)
			}
			if !slices.Equal(c.DNSNames, append([]string{}, tt.leaf.dns...)) {
				t.Errorf("dns names %v, want %v", c.DNSNames, tt.leaf.dns)
			}
			var ips []string
			for _, ip := range tt.leaf.ips {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(c.IPAddresses, append([]string{}, ips...)) {
				t.Errorf("ip addresses %v, want %v", c.IPAddresses, ips)
			}
			if len(c.SHA256) != 64 {
				t.Errorf("sha256 %q", c.SHA256)
			}
		})
	}
	t.Run("ca", func(t *testing.T) {
		c := NewCert(ca.cert)
		if !c.IsCA || !c.SelfSigned || c.KeyType != "RSA-2048" || !slices.Contains(c.KeyUsage, "keyCertSign") {
			t.Errorf("CA described as %+v", c)
		}
		if c.DNSNames == nil || c.IPAddresses == nil || c.ExtKeyUsage == nil {
			t.Error("empty lists must encode as [], not null")
		}
	})
}

func TestParsePEM(t *testing.T) {
	ca := newCA(t, "etcd-ca", t0.AddDate(5, 0, 0))
	srv := ca.issue(t, leaf{cn: "etcd-server", notAfter: t0.AddDate(1, 0, 0)})
	tests := []struct {
		name    string
		data    []byte
		wantCNs []string
		wantErr error
		errText string
	}{
		{"one", srv.certPEM, []string{"etcd-server"}, nil, ""},
		{"a key before and after, like kubelet-client-current.pem", slices.Concat(srv.keyPEM, srv.certPEM, srv.keyPEM), []string{"etcd-server"}, nil, ""},
		{"a chain in order", slices.Concat(srv.certPEM, ca.pem), []string{"etcd-server", "etcd-ca"}, nil, ""},
		{"only a key", srv.keyPEM, nil, ErrNoCertificate, ""},
		{"not PEM", []byte("hello"), nil, ErrNoCertificate, ""},
		{"a broken certificate", slices.Concat(srv.certPEM, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), nil, nil, "PEM block 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ParsePEM(tt.data)
			switch {
			case tt.wantErr != nil || tt.errText != "":
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ParsePEM() error %v, want %v %q", err, tt.wantErr, tt.errText)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			var cns []string
			for _, c := range certs {
				cns = append(cns, c.Subject.CommonName)
			}
			if !slices.Equal(cns, tt.wantCNs) {
				t.Errorf("certificates %v, want %v", cns, tt.wantCNs)
			}
		})
	}
}

func TestComponents(t *testing.T) {
	custom := []Component{
		{Kind: KindSecret, Match: "ingress/*", UsedBy: "ingress-nginx", Restart: []string{"ingress-nginx"}},
		{Match: "apiserver.crt", UsedBy: "my-apiserver"}, // wins over the kubeadm table for any kind
	}
	rules := append(slices.Clone(custom), KubeadmComponents()...)
	file := func(p string) Location { return Location{Kind: KindFile, Node: "n", Path: p} }
	tests := []struct {
		name    string
		rules   []Component
		loc     Location
		usedBy  string
		restart []string
	}{
		{"apiserver", KubeadmComponents(), file("/etc/kubernetes/pki/apiserver.crt"), "kube-apiserver", []string{"kube-apiserver"}},
		{"apiserver-etcd-client", KubeadmComponents(), file("/etc/kubernetes/pki/apiserver-etcd-client.crt"), "kube-apiserver", []string{"kube-apiserver"}},
		{"front-proxy-client", KubeadmComponents(), file("/etc/kubernetes/pki/front-proxy-client.crt"), "kube-apiserver", []string{"kube-apiserver"}},
		{"etcd server", KubeadmComponents(), file("/etc/kubernetes/pki/etcd/server.crt"), "etcd", []string{"etcd"}},
		{"etcd ca is not the cluster ca", KubeadmComponents(), file("/etc/kubernetes/pki/etcd/ca.crt"), "etcd", []string{"etcd", "kube-apiserver"}},
		{"cluster ca", KubeadmComponents(), file("/etc/kubernetes/pki/ca.crt"), "kube-apiserver", []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}},
		{"healthcheck client needs no restart", KubeadmComponents(), file("/etc/kubernetes/pki/etcd/healthcheck-client.crt"), "etcd", nil},
		{"a file named like a kubeconfig is no kubeconfig", KubeadmComponents(), file("/srv/kubelet.conf"), "", nil},
		{"kubelet.conf", KubeadmComponents(), Location{Kind: KindKubeconfig, Path: "/etc/kubernetes/kubelet.conf", User: "system:node:n"}, "kubelet", []string{"kubelet"}},
		{"scheduler.conf", KubeadmComponents(), Location{Kind: KindKubeconfig, Path: "/etc/kubernetes/scheduler.conf"}, "kube-scheduler", []string{"kube-scheduler"}},
		{"apiserver endpoint", KubeadmComponents(), Location{Kind: KindEndpoint, Endpoint: "127.0.0.1:6443"}, "kube-apiserver", []string{"kube-apiserver"}},
		{"ipv6 etcd endpoint", KubeadmComponents(), Location{Kind: KindEndpoint, Endpoint: "[::1]:2379"}, "etcd", []string{"etcd"}},
		{"unknown file", KubeadmComponents(), file("/opt/app/tls.crt"), "", nil},
		{"pki/apiserver.crt needs its directory", KubeadmComponents(), file("/apiserver.crt"), "", nil},
		{"configured secret rule", rules, Location{Kind: KindSecret, Namespace: "ingress", Secret: "web-tls"}, "ingress-nginx", []string{"ingress-nginx"}},
		{"configured rule for another namespace", rules, Location{Kind: KindSecret, Namespace: "default", Secret: "web-tls"}, "", nil},
		{"configured rules come first", rules, file("/etc/kubernetes/pki/apiserver.crt"), "my-apiserver", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := componentFor(tt.rules, tt.loc)
			if got.UsedBy != tt.usedBy || !slices.Equal(got.Restart, tt.restart) {
				t.Errorf("component %q restart %v, want %q restart %v", got.UsedBy, got.Restart, tt.usedBy, tt.restart)
			}
		})
	}
}

func TestLocationKeysAndSubjects(t *testing.T) {
	tests := []struct {
		loc          Location
		key, subject string
	}{
		{Location{Kind: KindFile, Node: "cp-1", Path: "/etc/kubernetes/pki/apiserver.crt"}, "cp-1:file:/etc/kubernetes/pki/apiserver.crt", "node/cp-1"},
		{Location{Kind: KindFile, Node: "cp-1", Path: "/etc/ssl/bundle.pem", Index: 1}, "cp-1:file:/etc/ssl/bundle.pem", "node/cp-1"},
		{Location{Kind: KindFile, Node: "cp-1", Path: "/etc/ssl/bundle.pem", Index: 3}, "cp-1:file:/etc/ssl/bundle.pem#3", "node/cp-1"},
		{Location{Kind: KindKubeconfig, Node: "cp-1", Path: "/etc/kubernetes/admin.conf", User: "kubernetes-admin"}, "cp-1:kubeconfig:/etc/kubernetes/admin.conf:kubernetes-admin", "node/cp-1"},
		{Location{Kind: KindSecret, Namespace: "ingress", Secret: "web-tls"}, "secret:ingress/web-tls", "cert/ingress/web-tls"},
		{Location{Kind: KindEndpoint, Node: "cp-1", Endpoint: "127.0.0.1:6443"}, "cp-1:endpoint:127.0.0.1:6443", "endpoint/127.0.0.1:6443"},
		{Location{Kind: KindEndpoint, Endpoint: "api.example.com:443"}, "endpoint:api.example.com:443", "endpoint/api.example.com:443"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := tt.loc.Key(); got != tt.key {
				t.Errorf("Key() = %q, want %q", got, tt.key)
			}
			if got := tt.loc.EventSubject(); got != tt.subject {
				t.Errorf("EventSubject() = %q, want %q", got, tt.subject)
			}
		})
	}
}

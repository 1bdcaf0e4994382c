package certrenew

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/selfheal/healer/action/agentparam"
)

// Config is the node half's configuration: the certificates this node's
// agent may renew.
type Config struct {
	// Certs are the renewable certificates. Nil means those of KubeadmPKI,
	// or none.
	Certs []Cert `json:"certs"`
	// KubeadmPKI, when set and Certs is nil, makes the certificates of
	// kubeadm's layout under this directory renewable (KubeadmCerts).
	KubeadmPKI string `json:"kubeadmPKI"`
	// MinCALeft refuses a renewal when the CA expires sooner than this.
	// Default 30 days (720h).
	MinCALeft time.Duration `json:"minCALeft"`
}

// Cert is one certificate the agent may renew, with what it needs to.
type Cert struct {
	// Name is what policies and events call it ("apiserver").
	Name string `json:"name"`
	// CertFile and KeyFile are the certificate and its private key; the
	// key is kept.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// CAFile and CAKeyFile are the issuing CA's certificate and key.
	CAFile    string `json:"caFile"`
	CAKeyFile string `json:"caKeyFile"`
	// Validity of the renewed certificate, capped by the CA's own expiry.
	// Default 365 days (8760h), as kubeadm.
	Validity time.Duration `json:"validity"`
	// Component is the restart component that serves the certificate
	// ("kube-apiserver"); empty means nothing to restart.
	Component string `json:"component"`
	// Endpoint is host:port where the component presents the certificate,
	// checked after the restart; empty skips the check.
	Endpoint string `json:"endpoint"`
}

// KubeadmCerts are the serving certificates of kubeadm's pki layout under
// dir (usually /etc/kubernetes/pki), each with the static pod that serves
// it and its local endpoint.
func KubeadmCerts(dir string) []Cert {
	p := func(s string) string { return filepath.Join(dir, s) }
	return []Cert{
		{Name: "apiserver", CertFile: p("apiserver.crt"), KeyFile: p("apiserver.key"), CAFile: p("ca.crt"), CAKeyFile: p("ca.key"),
			Component: "kube-apiserver", Endpoint: "127.0.0.1:6443"},
		{Name: "apiserver-kubelet-client", CertFile: p("apiserver-kubelet-client.crt"), KeyFile: p("apiserver-kubelet-client.key"),
			CAFile: p("ca.crt"), CAKeyFile: p("ca.key"), Component: "kube-apiserver"},
		{Name: "apiserver-etcd-client", CertFile: p("apiserver-etcd-client.crt"), KeyFile: p("apiserver-etcd-client.key"),
			CAFile: p("etcd/ca.crt"), CAKeyFile: p("etcd/ca.key"), Component: "kube-apiserver"},
		{Name: "front-proxy-client", CertFile: p("front-proxy-client.crt"), KeyFile: p("front-proxy-client.key"),
			CAFile: p("front-proxy-ca.crt"), CAKeyFile: p("front-proxy-ca.key"), Component: "kube-apiserver"},
		{Name: "etcd-server", CertFile: p("etcd/server.crt"), KeyFile: p("etcd/server.key"), CAFile: p("etcd/ca.crt"), CAKeyFile: p("etcd/ca.key"),
			Component: "etcd", Endpoint: "127.0.0.1:2379"},
		{Name: "etcd-peer", CertFile: p("etcd/peer.crt"), KeyFile: p("etcd/peer.key"), CAFile: p("etcd/ca.crt"), CAKeyFile: p("etcd/ca.key"),
			Component: "etcd"},
		{Name: "etcd-healthcheck-client", CertFile: p("etcd/healthcheck-client.crt"), KeyFile: p("etcd/healthcheck-client.key"),
			CAFile: p("etcd/ca.crt"), CAKeyFile: p("etcd/ca.key")},
	}
}

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.MinCALeft == 0 {
		c.MinCALeft = 30 * 24 * time.Hour
	}
	if c.Certs == nil && c.KubeadmPKI != "" {
		c.Certs = KubeadmCerts(c.KubeadmPKI)
	}
	for i := range c.Certs {
		if c.Certs[i].Validity == 0 {
			c.Certs[i].Validity = 365 * 24 * time.Hour
		}
	}
}

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	if c.MinCALeft <= 0 {
		errs = append(errs, fmt.Errorf("certrenew: minCALeft %s: must be positive", c.MinCALeft))
	}
	seen := map[string]bool{}
	for i, crt := range c.Certs {
		where := fmt.Sprintf("certrenew: certs[%d] (%s)", i, crt.Name)
		if err := agentparam.Name("name", crt.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if seen[crt.Name] {
			errs = append(errs, fmt.Errorf("%s: a second certificate with this name", where))
		}
		seen[crt.Name] = true
		for _, f := range []struct{ field, path string }{
			{"certFile", crt.CertFile}, {"keyFile", crt.KeyFile}, {"caFile", crt.CAFile}, {"caKeyFile", crt.CAKeyFile},
		} {
			if !filepath.IsAbs(f.path) {
				errs = append(errs, fmt.Errorf("%s: %s %q must be an absolute path", where, f.field, f.path))
			}
		}
		if crt.Validity < time.Hour {
			errs = append(errs, fmt.Errorf("%s: validity %s: must be at least 1h", where, crt.Validity))
		}
		if crt.Endpoint != "" {
			if _, _, err := net.SplitHostPort(crt.Endpoint); err != nil {
				errs = append(errs, fmt.Errorf("%s: endpoint %q: %w", where, crt.Endpoint, err))
			}
		}
		if crt.Component != "" {
			if err := agentparam.Name("component", crt.Component); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		}
	}
	return errors.Join(errs...)
}

package certexpiry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// scan is what one look at the sources found.
type scan struct {
	certs   []Observation
	unknown []string
	// failed are the reads that failed, by what was read ("file /x.crt");
	// read are those that worked, so a failure can be logged as over.
	failed map[string]error
	read   map[string]bool
}

func newScan() *scan { return &scan{failed: map[string]error{}, read: map[string]bool{}} }

func (s *scan) add(l Location, c *x509.Certificate) {
	s.certs = append(s.certs, Observation{Location: l, Cert: NewCert(c)})
}

// fail records a failed read of what; the firing locations whose keys
// start with prefix keep their state. An empty prefix keeps none.
func (s *scan) fail(what, prefix string, err error) {
	s.failed[what] = err
	if prefix != "" {
		s.unknown = append(s.unknown, prefix)
	}
}

func (s *scan) ok(what string) { s.read[what] = true }

// certExt reports whether a file in a directory is read, by its name's
// ending.
func certExt(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".crt", ".pem", ".cer", ".cert":
		return true
	}
	return false
}

// kubeadmKubeconfigs are the kubeconfigs kubeadm writes, by name.
func kubeadmKubeconfigs() []string {
	return []string{"admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"}
}

// fileEntry is a configured file, directory or glob; optional ones (from
// KubeadmDir) may be missing.
type fileEntry struct {
	path     string
	optional bool
}

// certFile is a file to read and whether it was named on its own (so a
// file without a certificate is a problem).
type certFile struct {
	path  string
	named bool
}

// scanFiles reads the certificates of the configured files, directories
// and globs.
func (d *Detector) scanFiles(s *scan) {
	var entries []fileEntry
	if d.cfg.KubeadmDir != "" {
		pki := filepath.Join(d.cfg.KubeadmDir, "pki")
		entries = append(entries, fileEntry{pki, true}, fileEntry{filepath.Join(pki, "etcd"), true})
	}
	for _, f := range d.cfg.Files {
		entries = append(entries, fileEntry{path: filepath.Clean(f)})
	}
	var files []certFile
	for _, e := range entries {
		if strings.ContainsAny(e.path, `*?[\`) {
			matches, err := filepath.Glob(e.path)
			if err != nil {
				s.fail("glob "+e.path, "", err)
				continue
			}
			for _, m := range matches {
				files = append(files, d.expand(s, fileEntry{path: m, optional: true}, false)...)
			}
			continue
		}
		files = append(files, d.expand(s, e, true)...)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.path] {
			continue
		}
		seen[f.path] = true
		d.readFile(s, f)
	}
}

// expand returns the files of e: e itself, or a directory's certificate
// files. named says whether a plain file was named on its own.
func (d *Detector) expand(s *scan, e fileEntry, named bool) []certFile {
	what := "file " + e.path
	fi, err := os.Stat(e.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !e.optional {
			s.fail(what, "", fmt.Errorf("certificate file %s: %w", e.path, err))
		}
		return nil
	case err != nil:
		s.fail(what, d.cfg.Node+":file:"+e.path, fmt.Errorf("certificate file %s: %w", e.path, err))
		return nil
	case !fi.IsDir():
		return []certFile{{path: e.path, named: named}}
	}
	what = "dir " + e.path
	des, err := os.ReadDir(e.path)
	if err != nil {
		s.fail(what, d.cfg.Node+":file:"+e.path+string(filepath.Separator), fmt.Errorf("certificate directory %s: %w", e.path, err))
		return nil
	}
	s.ok(what)
	var out []certFile
	for _, de := range des {
		p := filepath.Join(e.path, de.Name())
		if !certExt(de.Name()) {
			continue
		}
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			// A dangling link or a directory is no certificate file; a
			// file that vanished since is not one any more.
			continue
		}
		out = append(out, certFile{path: p})
	}
	return out
}

// readFile reads the certificates of one file.
func (d *Detector) readFile(s *scan, f certFile) {
	what := "file " + f.path
	key := d.cfg.Node + ":file:" + f.path
	data, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return // removed since the directory was read: gone
	case err != nil:
		s.fail(what, key, fmt.Errorf("read certificate file %s: %w", f.path, err))
		return
	}
	certs, err := ParsePEM(data)
	switch {
	case errors.Is(err, ErrNoCertificate) && !f.named:
		return // a key or parameters file in a directory
	case err != nil:
		s.fail(what, key, fmt.Errorf("certificate file %s: %w", f.path, err))
		return
	}
	s.ok(what)
	for i, c := range certs {
		l := Location{Kind: KindFile, Node: d.cfg.Node, Path: f.path}
		if len(certs) > 1 {
			l.Index = i + 1
		}
		s.add(l, c)
	}
}

// scanKubeconfigs reads the client certificates of the configured
// kubeconfigs' users.
func (d *Detector) scanKubeconfigs(s *scan) {
	var entries []fileEntry
	if d.cfg.KubeadmDir != "" {
		for _, n := range kubeadmKubeconfigs() {
			entries = append(entries, fileEntry{filepath.Join(d.cfg.KubeadmDir, n), true})
		}
	}
	for _, k := range d.cfg.Kubeconfigs {
		entries = append(entries, fileEntry{path: filepath.Clean(k)})
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if !seen[e.path] {
			seen[e.path] = true
			d.readKubeconfig(s, e)
		}
	}
}

func (d *Detector) readKubeconfig(s *scan, e fileEntry) {
	what := "kubeconfig " + e.path
	prefix := d.cfg.Node + ":kubeconfig:" + e.path + ":"
	data, err := os.ReadFile(e.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !e.optional {
			s.fail(what, "", fmt.Errorf("kubeconfig %s: %w", e.path, err))
		}
		return
	case err != nil:
		s.fail(what, prefix, fmt.Errorf("read kubeconfig %s: %w", e.path, err))
		return
	}
	kc, err := clientcmd.Load(data)
	if err != nil {
		// clientcmd's errors quote no credentials, only the position.
		s.fail(what, prefix, fmt.Errorf("parse kubeconfig %s: %w", e.path, err))
		return
	}
	s.ok(what)
	users := make([]string, 0, len(kc.AuthInfos))
	for u := range kc.AuthInfos {
		users = append(users, u)
	}
	slices.Sort(users)
	for _, u := range users {
		ai := kc.AuthInfos[u]
		l := Location{Kind: KindKubeconfig, Node: d.cfg.Node, Path: e.path, User: u}
		uwhat := what + " user " + u
		pem := ai.ClientCertificateData
		switch {
		case len(pem) > 0:
		case ai.ClientCertificate != "":
			l.CertPath = ai.ClientCertificate
			if !filepath.IsAbs(l.CertPath) {
				l.CertPath = filepath.Join(filepath.Dir(e.path), l.CertPath)
			}
			pem, err = os.ReadFile(l.CertPath) //nolint:gosec // the operator's kubeconfig names the file
			switch {
			case errors.Is(err, fs.ErrNotExist):
				// The user's certificate is gone; the component using it
				// fails, which its own checks report.
				s.fail(uwhat, "", fmt.Errorf("kubeconfig %s user %s: client certificate %s: %w", e.path, u, l.CertPath, err))
				continue
			case err != nil:
				s.fail(uwhat, l.Key(), fmt.Errorf("kubeconfig %s user %s: read client certificate %s: %w", e.path, u, l.CertPath, err))
				continue
			}
		default:
			continue // a token, exec plugin or no credentials: no certificate
		}
		certs, err := ParsePEM(pem)
		if err != nil {
			s.fail(uwhat, l.Key(), fmt.Errorf("kubeconfig %s user %s: client certificate: %w", e.path, u, err))
			continue
		}
		s.ok(uwhat)
		s.add(l, certs[0])
	}
}

// scanSecrets lists the TLS secrets and reads the leaf of each tls.crt.
func (d *Detector) scanSecrets(ctx context.Context, s *scan) {
	namespaces := d.cfg.Secrets.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		what, prefix := "secrets in namespace "+ns, "secret:"+ns+"/"
		if ns == metav1.NamespaceAll {
			what, prefix = "secrets in all namespaces", "secret:"
		}
		secrets, err := d.listTLSSecrets(ctx, ns)
		if err != nil {
			s.fail(what, prefix, fmt.Errorf("list %s: %w", what, err))
			continue
		}
		s.ok(what)
		for _, sec := range secrets {
			l := Location{Kind: KindSecret, Namespace: sec.Namespace, Secret: sec.Name,
				CertManagerCertificate: sec.Annotations["cert-manager.io/certificate-name"]}
			swhat := "secret " + sec.Namespace + "/" + sec.Name
			certs, err := ParsePEM(sec.Data[corev1.TLSCertKey])
			if err != nil {
				s.fail(swhat, l.Key(), fmt.Errorf("secret %s/%s: %s: %w", sec.Namespace, sec.Name, corev1.TLSCertKey, err))
				continue
			}
			s.ok(swhat)
			s.add(l, certs[0])
		}
	}
}

// listTLSSecrets returns the TLS secrets of namespace ns ("" for all), in
// pages of 500.
func (d *Detector) listTLSSecrets(ctx context.Context, ns string) ([]corev1.Secret, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, d.cfg.ListTimeout, fmt.Errorf("secrets not listed within %s", d.cfg.ListTimeout))
	defer cancel()
	var out []corev1.Secret
	opts := metav1.ListOptions{
		FieldSelector: "type=" + string(corev1.SecretTypeTLS),
		LabelSelector: d.cfg.Secrets.LabelSelector,
		Limit:         d.pageSize,
	}
	for {
		list, err := d.kube.CoreV1().Secrets(ns).List(ctx, opts)
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
			}
			return nil, err
		}
		for _, sec := range list.Items {
			// The field selector already does this; a client that ignores
			// it (a fake one) must not make other secrets count.
			if sec.Type == corev1.SecretTypeTLS {
				out = append(out, sec)
			}
		}
		if list.Continue == "" {
			return out, nil
		}
		opts.Continue = list.Continue
	}
}

// scanEndpoints reads the leaf certificate each endpoint presents.
func (d *Detector) scanEndpoints(ctx context.Context, s *scan) {
	for _, e := range d.cfg.Endpoints {
		l := Location{Kind: KindEndpoint, Node: d.cfg.Node, Endpoint: e.Address, ServerName: serverName(e)}
		what := "endpoint " + e.Address
		c, err := Presented(ctx, e, d.cfg.DialTimeout)
		if err != nil {
			s.fail(what, l.Key(), err)
			continue
		}
		s.ok(what)
		s.add(l, c)
	}
}

// serverName is the SNI sent to e: its ServerName, else its host unless
// that is an IP address.
func serverName(e Endpoint) string {
	if e.ServerName != "" {
		return e.ServerName
	}
	host, _, err := net.SplitHostPort(e.Address)
	if err != nil || net.ParseIP(host) != nil {
		return ""
	}
	return host
}

// Presented returns the leaf certificate that the endpoint e presents in
// a TLS handshake bounded by timeout. The handshake does not verify the
// chain, since the point is to read it whatever it is (expired, from a
// private CA, for another name); nothing is sent after the handshake, and
// the connection is closed at once. An endpoint that wants a client
// certificate (etcd) may fail the handshake after presenting its own: the
// certificate is still returned.
func Presented(ctx context.Context, e Endpoint, timeout time.Duration) (*x509.Certificate, error) {
	var leaf *x509.Certificate
	cfg := &tls.Config{
		// Only to read the presented chain: no data is ever sent on
		// this connection, so there is nothing to protect.
		InsecureSkipVerify: true, //nolint:gosec // reads the peer's certificate, sends nothing
		ServerName:         serverName(e),
		// Called as soon as the server's certificate is in, before the
		// server can refuse a client without a certificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate presented")
			}
			leaf = cs.PeerCertificates[0]
			return nil
		},
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("no TLS handshake within %s", timeout))
	defer cancel()
	dialer := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	conn, err := dialer.DialContext(ctx, "tcp", e.Address)
	if conn != nil {
		_ = conn.Close() // nothing was written; a close error changes nothing
	}
	if leaf != nil {
		return leaf, nil
	}
	if err == nil {
		err = errors.New("no certificate presented")
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return nil, fmt.Errorf("tls endpoint %s: %w", e.Address, err)
}

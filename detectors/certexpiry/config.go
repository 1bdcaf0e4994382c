package certexpiry

import (
	"errors"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Weekend settings: what happens to a band crossing that falls on a
// Saturday or a Sunday.
const (
	// WeekendFriday moves a crossing that falls on a Saturday or a Sunday
	// back to the start (00:00) of the Friday before, so the warning
	// reaches people at work rather than a pager on a weekend.
	WeekendFriday = "friday"
	// WeekendKeep leaves every crossing where the thresholds put it.
	WeekendKeep = "keep"
)

// Config says where to look for certificates and when their expiry is a
// problem. The node agent sets Node with KubeadmDir, Files, Kubeconfigs
// and local Endpoints; the server sets Secrets and Endpoints. At least one
// source is required.
type Config struct {
	// Node is the name of the node the detector runs on. Certificates in
	// files and kubeconfigs have the subject "node/<Node>", and every key
	// starts with it. Required with KubeadmDir, Files or Kubeconfigs.
	Node string `json:"node"`
	// KubeadmDir, when set, adds kubeadm's layout under it (normally
	// "/etc/kubernetes"): the directories pki and pki/etcd, and the
	// kubeconfigs admin.conf, super-admin.conf, kubelet.conf,
	// controller-manager.conf and scheduler.conf. Parts of the layout
	// that are missing (a worker has only kubelet.conf) are not a problem.
	KubeadmDir string `json:"kubeadmDir"`
	// Files are PEM certificate files to read: each entry is a file, a
	// directory (its files ending in .crt, .pem, .cer or .cert, not
	// recursively) or a glob (path/filepath.Match syntax). Paths must be
	// absolute. Every certificate in a file is reported, CAs included.
	Files []string `json:"files"`
	// Kubeconfigs are kubeconfig files whose users' client certificates
	// are reported: client-certificate-data, or the client-certificate
	// file (a relative path is relative to the kubeconfig). Paths must be
	// absolute.
	Kubeconfigs []string `json:"kubeconfigs"`
	// Secrets, when set, lists the cluster's TLS secrets (type
	// kubernetes.io/tls) and reports their tls.crt. It needs a Kubernetes
	// client (WithKubeClient).
	Secrets *Secrets `json:"secrets"`
	// Endpoints are live TLS endpoints whose presented leaf certificate is
	// reported, for example the apiserver "127.0.0.1:6443" and etcd
	// "127.0.0.1:2379".
	Endpoints []Endpoint `json:"endpoints"`
	// Thresholds are the bands: a certificate that gets within a
	// threshold of its expiry fires once for that band. Any order; they
	// are used from largest to smallest. Default 720h, 168h and 24h (30,
	// 7 and 1 days). A certificate already expired fires the band
	// "expired".
	Thresholds []time.Duration `json:"thresholds"`
	// Weekend is WeekendFriday (the default) or WeekendKeep: what happens
	// to a band crossing that falls on a weekend in TimeZone.
	Weekend string `json:"weekend"`
	// TimeZone is the IANA zone ("Europe/Berlin"), "UTC" or "Local" in
	// which weekends are told. Default "UTC".
	TimeZone string `json:"timeZone"`
	// Components say which component uses a certificate and which
	// components to restart once it is renewed. They are tried in order
	// before the built-in kubeadm table (KubeadmComponents); the first
	// that matches wins.
	Components []Component `json:"components"`
	// Interval is the time between two looks at every source. Default 1h.
	Interval time.Duration `json:"interval"`
	// Jitter, when positive, adds a random delay of up to Jitter to each
	// interval, so that many agents do not look at once.
	Jitter time.Duration `json:"jitter"`
	// DialTimeout bounds the TLS handshake with one endpoint. Default 10s.
	DialTimeout time.Duration `json:"dialTimeout"`
	// ListTimeout bounds listing the secrets of one namespace (or of all).
	// Default 1m.
	ListTimeout time.Duration `json:"listTimeout"`
	// PublishTimeout bounds one attempt to publish an event; failed
	// attempts are retried with backoff until the detector stops.
	// Default 5s.
	PublishTimeout time.Duration `json:"publishTimeout"`
}

// Secrets says which TLS secrets to read.
type Secrets struct {
	// Namespaces to list. Empty lists every namespace (one request).
	Namespaces []string `json:"namespaces"`
	// LabelSelector limits the secrets, for example "app=ingress".
	LabelSelector string `json:"labelSelector"`
}

// Endpoint is a TLS endpoint to handshake with.
type Endpoint struct {
	// Address is host:port. Required.
	Address string `json:"address"`
	// ServerName is sent as SNI. Default: the host, unless it is an IP
	// address.
	ServerName string `json:"serverName"`
}

// Component maps certificate locations to the component that uses them.
type Component struct {
	// Kind, when set, limits the rule to one kind of location: KindFile,
	// KindKubeconfig, KindSecret or KindEndpoint.
	Kind string `json:"kind"`
	// Match is a path.Match pattern. A pattern without "/" is matched
	// against the last element of the location's name, one with n
	// elements against its last n elements. The name is the path for
	// files and kubeconfigs, "<namespace>/<secret>" for secrets and
	// host:port for endpoints: "apiserver.crt", "etcd/*.crt",
	// "kube-system/*" and "*:6443" are patterns. Required.
	Match string `json:"match"`
	// UsedBy is the component that uses the certificate, for example
	// "kube-apiserver". Required.
	UsedBy string `json:"usedBy"`
	// Restart are the components to restart once the certificate is
	// renewed, so that they load it; empty when nothing needs a restart.
	Restart []string `json:"restart"`
}

// componentName is the form of a component name, as the restart
// remediator takes it.
var componentName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.Thresholds == nil {
		c.Thresholds = []time.Duration{30 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour}
	}
	if c.Weekend == "" {
		c.Weekend = WeekendFriday
	}
	if c.TimeZone == "" {
		c.TimeZone = "UTC"
	}
	if c.Interval == 0 {
		c.Interval = time.Hour
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.ListTimeout == 0 {
		c.ListTimeout = time.Minute
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
}

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	local := c.KubeadmDir != "" || len(c.Files) > 0 || len(c.Kubeconfigs) > 0
	if !local && c.Secrets == nil && len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("certexpiry: nothing to watch: give kubeadmDir, files, kubeconfigs, secrets or endpoints"))
	}
	if local && c.Node == "" {
		errs = append(errs, errors.New("certexpiry: node is required with kubeadmDir, files or kubeconfigs"))
	}
	if strings.ContainsAny(c.Node, " /:") {
		errs = append(errs, fmt.Errorf("certexpiry: node %q: must not hold spaces, '/' or ':'", c.Node))
	}
	if c.KubeadmDir != "" && !filepath.IsAbs(c.KubeadmDir) {
		errs = append(errs, fmt.Errorf("certexpiry: kubeadmDir %s: must be an absolute path", c.KubeadmDir))
	}
	for i, f := range c.Files {
		switch {
		case !filepath.IsAbs(f):
			errs = append(errs, fmt.Errorf("certexpiry: files[%d] %q: must be an absolute path", i, f))
		default:
			if _, err := filepath.Match(f, ""); err != nil {
				errs = append(errs, fmt.Errorf("certexpiry: files[%d] %s: %w", i, f, err))
			}
		}
	}
	for i, k := range c.Kubeconfigs {
		if !filepath.IsAbs(k) {
			errs = append(errs, fmt.Errorf("certexpiry: kubeconfigs[%d] %q: must be an absolute path", i, k))
		}
	}
	if s := c.Secrets; s != nil {
		for i, ns := range s.Namespaces {
			if ns == "" || strings.ContainsAny(ns, "/ ") {
				errs = append(errs, fmt.Errorf("certexpiry: secrets.namespaces[%d] %q: not a namespace name", i, ns))
			}
		}
	}
	seen := map[string]bool{}
	for i, e := range c.Endpoints {
		where := fmt.Sprintf("certexpiry: endpoints[%d] (%s)", i, e.Address)
		host, port, err := net.SplitHostPort(e.Address)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: address: %w", where, err))
		case host == "" || port == "":
			errs = append(errs, fmt.Errorf("%s: address: want host:port", where))
		}
		if seen[e.Address] {
			errs = append(errs, fmt.Errorf("%s: a second endpoint with this address", where))
		}
		seen[e.Address] = true
	}
	if len(c.Thresholds) == 0 {
		errs = append(errs, errors.New("certexpiry: thresholds: at least one is required"))
	}
	for i, t := range c.Thresholds {
		if t <= 0 {
			errs = append(errs, fmt.Errorf("certexpiry: thresholds[%d] %s: must be positive", i, t))
		}
		if slices.Index(c.Thresholds, t) != i {
			errs = append(errs, fmt.Errorf("certexpiry: thresholds[%d] %s: given twice", i, t))
		}
	}
	if c.Weekend != WeekendFriday && c.Weekend != WeekendKeep {
		errs = append(errs, fmt.Errorf("certexpiry: weekend %q: want %q or %q", c.Weekend, WeekendFriday, WeekendKeep))
	}
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("certexpiry: timeZone %q: %w", c.TimeZone, err))
	}
	for i, r := range c.Components {
		where := fmt.Sprintf("certexpiry: components[%d] (%s)", i, r.Match)
		switch r.Kind {
		case "", KindFile, KindKubeconfig, KindSecret, KindEndpoint:
		default:
			errs = append(errs, fmt.Errorf("%s: kind %q: want %s, %s, %s or %s", where, r.Kind, KindFile, KindKubeconfig, KindSecret, KindEndpoint))
		}
		if r.Match == "" {
			errs = append(errs, fmt.Errorf("%s: match is required", where))
		} else if _, err := path.Match(r.Match, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s: match: %w", where, err))
		}
		if !componentName.MatchString(r.UsedBy) {
			errs = append(errs, fmt.Errorf("%s: usedBy %q: want a component name such as kube-apiserver", where, r.UsedBy))
		}
		for _, name := range r.Restart {
			if !componentName.MatchString(name) {
				errs = append(errs, fmt.Errorf("%s: restart %q: want a component name such as kube-apiserver", where, name))
			}
		}
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("certexpiry: interval %s: must be positive", c.Interval))
	}
	if c.Jitter < 0 {
		errs = append(errs, fmt.Errorf("certexpiry: jitter %s: must not be negative", c.Jitter))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dialTimeout", c.DialTimeout}, {"listTimeout", c.ListTimeout}, {"publishTimeout", c.PublishTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("certexpiry: %s %s: must be positive", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// bands returns the bands the configuration describes; c must be valid.
func (c *Config) bands() Bands {
	loc, err := time.LoadLocation(c.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	return Bands{Thresholds: c.Thresholds, Weekend: c.Weekend, Location: loc}
}

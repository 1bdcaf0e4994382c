package etcdmember

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Config says which etcd cluster to watch and when a member counts as
// lost.
type Config struct {
	// ClusterName names the cluster in event keys and data, so that events
	// of two clusters never share a key. Letters, digits, '.', '_' and
	// '-'. Default "etcd".
	ClusterName string `json:"clusterName"`
	// Endpoints are client URLs of the cluster's members, for example
	// "https://10.0.0.11:2379". They are used to list the members and
	// their alarms; each member is then probed at the client URLs it
	// advertises, which must be reachable from healer with the same TLS
	// credentials. Required; all of one scheme, http or https.
	Endpoints []string `json:"endpoints"`
	// TLS, when set, connects with TLS; https endpoints without it use
	// the system roots and no client certificate.
	TLS *TLS `json:"tls"`
	// DialTimeout bounds each attempt to connect to a member. Default 2s.
	DialTimeout time.Duration `json:"dialTimeout"`
	// RequestTimeout bounds one request: the member list, the alarm list,
	// and each member's status and health read, as
	// `etcdctl endpoint health` bounds its read. A poll of a cluster with
	// a member down takes about this long. Default 3s.
	RequestTimeout time.Duration `json:"requestTimeout"`
	// Interval is the time between two polls of the cluster. Default 5s.
	Interval time.Duration `json:"interval"`
	// LostAfter is how long a member must stay unreachable before it
	// counts as lost and EtcdMemberLost fires; it is also how long the
	// cluster must stay without fault tolerance before EtcdQuorumAtRisk
	// fires. Default 1m; at least Interval, so that one failed poll is
	// never enough.
	LostAfter time.Duration `json:"lostAfter"`
	// HealthKey is the key read, linearizably, to check that a member
	// serves requests through the raft leader, like
	// `etcdctl endpoint health`. Default "health". A read denied by etcd's
	// authentication still proves the member healthy.
	HealthKey string `json:"healthKey"`
	// PublishTimeout bounds one attempt to publish an event; failed
	// attempts are retried with backoff until the detector stops.
	// Default 5s.
	PublishTimeout time.Duration `json:"publishTimeout"`
}

// TLS is the TLS client configuration for etcd, usually the
// healthcheck-client or apiserver-etcd-client certificate of a kubeadm
// control plane.
type TLS struct {
	// CAFile is a PEM bundle of the CAs that sign the members' serving
	// certificates (/etc/kubernetes/pki/etcd/ca.crt). Empty uses the
	// system roots.
	CAFile string `json:"caFile"`
	// CertFile and KeyFile are a PEM client certificate and key, for
	// etcd's client certificate authentication. Both or neither. They are
	// read again for each new connection, so a renewed certificate is
	// used without a restart.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ServerName overrides the name checked in the members' certificates.
	ServerName string `json:"serverName"`
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.ClusterName == "" {
		c.ClusterName = "etcd"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 3 * time.Second
	}
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.LostAfter == 0 {
		c.LostAfter = time.Minute
	}
	if c.HealthKey == "" {
		c.HealthKey = "health"
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
}

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	if !clusterName.MatchString(c.ClusterName) {
		errs = append(errs, fmt.Errorf("etcdmember: clusterName %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", c.ClusterName))
	}
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("etcdmember: endpoints: at least one client URL is required"))
	}
	schemes := map[string]bool{}
	seen := map[string]bool{}
	for i, ep := range c.Endpoints {
		scheme, err := checkEndpoint(ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("etcdmember: endpoints[%d] %q: %w", i, redact(ep), err))
			continue
		}
		if seen[ep] {
			errs = append(errs, fmt.Errorf("etcdmember: endpoints[%d] %q: given twice", i, ep))
		}
		seen[ep] = true
		schemes[scheme] = true
	}
	if len(schemes) > 1 {
		errs = append(errs, errors.New("etcdmember: endpoints: mix http and https; a cluster serves clients with TLS or without"))
	}
	if t := c.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			errs = append(errs, errors.New("etcdmember: tls: certFile and keyFile go together"))
		}
		if schemes["http"] {
			errs = append(errs, errors.New("etcdmember: tls is set but the endpoints are http: use https URLs"))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"dialTimeout", c.DialTimeout}, {"requestTimeout", c.RequestTimeout}, {"interval", c.Interval},
		{"lostAfter", c.LostAfter}, {"publishTimeout", c.PublishTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("etcdmember: %s %s: must be positive", d.name, d.v))
		}
	}
	if c.Interval > 0 && c.LostAfter > 0 && c.LostAfter < c.Interval {
		errs = append(errs, fmt.Errorf("etcdmember: lostAfter %s: must be at least interval %s, or one failed poll would make a member lost", c.LostAfter, c.Interval))
	}
	if c.HealthKey == "" {
		errs = append(errs, errors.New("etcdmember: healthKey is required"))
	}
	return errors.Join(errs...)
}

// checkEndpoint returns the scheme of a client URL, or why it is not one.
func checkEndpoint(ep string) (string, error) {
	u, err := url.Parse(ep)
	if err != nil {
		// The *url.Error quotes the URL, which may hold a password.
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		return "", fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" {
		return "", errors.New("want scheme://host:port")
	}
	if u.User != nil {
		return "", errors.New("credentials in the URL are not supported")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want no path, query or fragment")
	}
	return u.Scheme, nil
}

// redact returns ep with any password in it replaced, for errors.
func redact(ep string) string {
	u, err := url.Parse(ep)
	if err != nil {
		if strings.Contains(ep, "@") {
			return "(an unparsable URL with credentials)"
		}
		return ep
	}
	return u.Redacted()
}

package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/detectors/certexpiry"
	"github.com/selfheal/healer/detectors/logpipeline"
	"github.com/selfheal/healer/detectors/runtimepanic"
	"github.com/selfheal/healer/internal/telemetry"
	"github.com/selfheal/healer/internal/yamlconfig"
	"github.com/selfheal/healer/remediators/certrenew"
	etcdmember "github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/remediators/vip"
)

// Config is the whole configuration of `healer agent`: one YAML file
// (--config), overridden by HEALER_* environment variables and flags.
type Config struct {
	// Node is this node's name, as Kubernetes knows it. Required.
	Node string `json:"node"`
	// DataDir keeps the agent's state (restart history). Default
	// /var/lib/healer-agent.
	DataDir string `json:"dataDir"`
	NATS    NATS   `json:"nats"`
	// MaxConcurrent bounds the requests run at once. Default 8.
	MaxConcurrent int `json:"maxConcurrent"`
	// ReplyTTL is how long a finished request's reply is kept for retries
	// of the same action id. Default 1h.
	ReplyTTL time.Duration `json:"replyTTL"`

	// Restart lists the components this node may restart.
	Restart restart.Config `json:"restart"`
	// RuntimePanic follows the node daemons' logs for crashes, unless
	// Disabled. Its node is this agent's node.
	RuntimePanic RuntimePanicConfig `json:"runtimePanic"`
	// LogPipeline measures the lag of this node's log shippers when it
	// lists shippers. Its node is this agent's node.
	LogPipeline logpipeline.Config `json:"logPipeline"`
	// CertExpiry, when set, watches this node's certificates (files,
	// kubeadm's pki and kubeconfigs, local TLS endpoints). Its node is
	// this agent's node.
	CertExpiry *certexpiry.Config `json:"certExpiry"`
	// CertRenew, on masters, lists the certificates this node may renew
	// (certrenew.KubeadmCerts gives kubeadm's).
	CertRenew certrenew.Config `json:"certRenew"`
	// EtcdMember, on masters that run etcd as a static pod, lets
	// etcd.replace-member start a replacement member here by rewriting
	// etcd's manifest. Off when nil.
	EtcdMember *etcdmember.VerbsConfig `json:"etcdMember"`
	// VIP, on masters, lists the virtual IPs this node may carry; the
	// agent then keeps their leases and answers vip.acquire, vip.release
	// and vip.status. Its node is this agent's node.
	VIP *vip.Config `json:"vip"`
	// Tracing exports the agent's spans (each request, in the engine's
	// trace) over OTLP.
	Tracing telemetry.Config `json:"tracing"`
}

// RuntimePanicConfig is the runtime-panic detector's configuration with a
// switch.
type RuntimePanicConfig struct {
	Disabled            bool `json:"disabled"`
	runtimepanic.Config `json:",inline"`
}

// NATS says how the agent reaches NATS, as its node's own user.
type NATS struct {
	// URL of the NATS servers, comma separated. Default nats://127.0.0.1:4222.
	URL string `json:"url"`
	// CredsFile is a NATS credentials file (JWT and nkey seed).
	CredsFile string `json:"credsFile"`
	// NKeyFile is an nkey seed file.
	NKeyFile string `json:"nkeyFile"`
	// User and PasswordFile authenticate with a user and password.
	User         string `json:"user"`
	PasswordFile string `json:"passwordFile"`
	// CAFile verifies the server's certificate; CertFile and KeyFile are
	// the agent's client certificate, for servers that want one.
	CAFile   string `json:"caFile"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ReconnectWait is the pause between reconnect attempts. Default 250ms.
	ReconnectWait time.Duration `json:"reconnectWait"`
}

// LoadFile reads a YAML configuration; unknown keys are errors and
// durations are written as "30s" or "1h".
func (c *Config) LoadFile(path string) error { return yamlconfig.Load(path, c) }

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/healer-agent"
	}
	if c.NATS.URL == "" {
		c.NATS.URL = "nats://127.0.0.1:4222"
	}
	if c.NATS.ReconnectWait == 0 {
		c.NATS.ReconnectWait = 250 * time.Millisecond
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 8
	}
	if c.ReplyTTL == 0 {
		c.ReplyTTL = time.Hour
	}
	if c.Restart.StateFile == "" {
		c.Restart.StateFile = filepath.Join(c.DataDir, "restart-history.json")
	}
	c.Restart.ApplyDefaults()
	c.CertRenew.ApplyDefaults()
	if c.CertExpiry != nil {
		c.CertExpiry.Node = c.Node
		c.CertExpiry.ApplyDefaults()
	}
	c.RuntimePanic.Node = c.Node
	if c.RuntimePanic.HealthChecks == nil {
		// Watch the health of everything the agent can restart.
		for _, comp := range c.Restart.Components {
			c.RuntimePanic.HealthChecks = append(c.RuntimePanic.HealthChecks, runtimepanic.HealthCheck{
				Name: comp.Name, HTTP: comp.Health.HTTP, TCP: comp.Health.TCP, Unix: comp.Health.Unix,
			})
		}
	}
	c.RuntimePanic.ApplyDefaults()
	if len(c.LogPipeline.Shippers) > 0 {
		c.LogPipeline.Node = c.Node
		c.LogPipeline.ApplyDefaults()
	}
	if c.VIP != nil {
		c.VIP.Node = c.Node
		c.VIP.ApplyDefaults()
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if _, err := bus.NodeToken(c.Node); err != nil {
		errs = append(errs, fmt.Errorf("node: %w", err))
	}
	auth := 0
	for _, s := range []string{c.NATS.CredsFile, c.NATS.NKeyFile, c.NATS.User} {
		if s != "" {
			auth++
		}
	}
	if auth > 1 {
		errs = append(errs, errors.New("nats: use one of credsFile, nkeyFile and user"))
	}
	if (c.NATS.User == "") != (c.NATS.PasswordFile == "") {
		errs = append(errs, errors.New("nats: user and passwordFile go together"))
	}
	if (c.NATS.CertFile == "") != (c.NATS.KeyFile == "") {
		errs = append(errs, errors.New("nats: certFile and keyFile go together"))
	}
	for _, u := range strings.Split(c.NATS.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			errs = append(errs, fmt.Errorf("nats: url %q: want nats:// or tls://", u))
		}
	}
	if c.NATS.ReconnectWait <= 0 {
		errs = append(errs, errors.New("nats: reconnectWait must be positive"))
	}
	if c.MaxConcurrent < 1 {
		errs = append(errs, fmt.Errorf("maxConcurrent %d: must be at least 1", c.MaxConcurrent))
	}
	if c.ReplyTTL <= 0 {
		errs = append(errs, errors.New("replyTTL must be positive"))
	}
	if err := c.Restart.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.CertRenew.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.CertExpiry != nil {
		if c.CertExpiry.Secrets != nil {
			errs = append(errs, errors.New("certExpiry.secrets: TLS secrets are watched by serve; the agent has no Kubernetes access"))
		}
		if err := c.CertExpiry.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.RuntimePanic.Disabled {
		if err := c.RuntimePanic.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.LogPipeline.Kafka != nil {
		errs = append(errs, errors.New("logPipeline.kafka: Kafka lag is measured by serve; the agent measures its node's shippers"))
	}
	if len(c.LogPipeline.Shippers) > 0 {
		if err := c.LogPipeline.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.VIP != nil {
		if err := c.VIP.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("vip: %w", err))
		}
	}
	return errors.Join(errs...)
}

// options are the NATS connection options for this configuration.
func (c *Config) options() ([]nats.Option, error) {
	inbox, err := bus.AgentInbox(c.Node)
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name("healer-agent " + c.Node),
		nats.CustomInboxPrefix(inbox),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(c.NATS.ReconnectWait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
	}
	n := c.NATS
	auth, err := bus.ClientAuth{
		CredsFile: n.CredsFile, NKeyFile: n.NKeyFile, User: n.User, PasswordFile: n.PasswordFile,
		CAFile: n.CAFile, CertFile: n.CertFile, KeyFile: n.KeyFile,
	}.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	return opts, nil
}

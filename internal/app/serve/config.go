package serve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/chatops"
	"github.com/selfheal/healer/detectors/alertmanager"
	"github.com/selfheal/healer/detectors/certexpiry"
	"github.com/selfheal/healer/detectors/etcdmember"
	"github.com/selfheal/healer/detectors/logpipeline"
	"github.com/selfheal/healer/detectors/nodeproblem"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/telemetry"
	"github.com/selfheal/healer/internal/yamlconfig"
	"github.com/selfheal/healer/remediators"
	etcdrem "github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/remediators/vip"
)

// Config is the whole configuration of `healer serve`: one YAML file
// (--config), overridden by HEALER_* environment variables, overridden by
// flags.
type Config struct {
	// DataDir holds the embedded NATS store and generated tokens.
	DataDir string `json:"dataDir"`
	// Listen is the HTTP address.
	Listen string `json:"listen"`
	// NATSURL selects an external NATS server; empty runs one embedded.
	NATSURL string `json:"natsURL"`
	// NATSCredsFile is a NATS credentials file (JWT and nkey seed) for the
	// external server; NATSNKeyFile an nkey seed file alone; NATSUser with
	// NATSPasswordFile a user and the file holding its password. One of
	// the three at most.
	NATSCredsFile    string `json:"natsCredsFile"`
	NATSNKeyFile     string `json:"natsNKeyFile"`
	NATSUser         string `json:"natsUser"`
	NATSPasswordFile string `json:"natsPasswordFile"`
	// NATSCAFile is the CA the external server's certificate is verified
	// with (else the system's roots); NATSCertFile and NATSKeyFile a
	// client certificate, for servers that verify clients.
	NATSCAFile   string `json:"natsCAFile"`
	NATSCertFile string `json:"natsCertFile"`
	NATSKeyFile  string `json:"natsKeyFile"`
	// NATSListen is where the embedded server accepts clients (agents,
	// tools). It takes only serve and node agents with their own
	// passwords (`healer agent dev-credentials`), and only on a loopback
	// address: agents on other machines need a NATS cluster with users
	// and TLS (natsURL).
	NATSListen string `json:"natsListen"`
	// RedisURL selects Redis for rate limits; empty uses the in-process
	// limiter, which is correct for a single replica only.
	RedisURL string `json:"redisURL"`
	// RedisPasswordFile holds Redis's password, instead of putting it in
	// RedisURL.
	RedisPasswordFile string `json:"redisPasswordFile"`
	// DisabledRemediators are left out of this healer, whatever the
	// policies decide: their decisions are suppressed and audited as not
	// available ("node.drain" where the chart grants no eviction rights).
	DisabledRemediators []string `json:"disabledRemediators"`
	// Kubeconfig selects a cluster; empty means in-cluster when running in
	// a pod, else $KUBECONFIG, else Kubernetes features are off.
	Kubeconfig string `json:"kubeconfig"`
	// NoKubernetes turns Kubernetes off whatever the environment says
	// (`healer demo`, which acts on a local etcd cluster only).
	NoKubernetes bool `json:"noKubernetes"`
	// KubeQPS and KubeBurst bound healer's own request rate to the API
	// server (client-side; the server's priority and fairness still apply).
	KubeQPS   float32 `json:"kubeQPS"`
	KubeBurst int     `json:"kubeBurst"`
	// Policies is a directory of Rego files; empty uses the built-in ones.
	Policies string `json:"policies"`
	// ShadowPolicies is a directory of candidate Rego policies: each event
	// is decided by them too, never acted on, and every decision that
	// differs from the live one is audited (policy.shadow).
	ShadowPolicies string `json:"shadowPolicies"`
	// PolicyPollInterval is how often the policy directory is checked.
	PolicyPollInterval time.Duration `json:"policyPollInterval"`
	// WebhookTokenFile and APITokenFile hold the bearer tokens. Without
	// them (and without HEALER_WEBHOOK_TOKEN / HEALER_API_TOKEN) tokens are
	// generated into DataDir.
	WebhookTokenFile string `json:"webhookTokenFile"`
	APITokenFile     string `json:"apiTokenFile"`
	// Resync is how often the detectors re-assert the problems they still
	// see firing, so that one held back and then lost (a crash between
	// holding it and re-driving it) is looked at again. Default 1m.
	Resync time.Duration `json:"resync"`
	// ShutdownTimeout bounds the whole clean shutdown.
	ShutdownTimeout time.Duration `json:"shutdownTimeout"`

	Streams      bus.StreamsConfig   `json:"streams"`
	Alertmanager alertmanager.Config `json:"alertmanager"`
	// NodeProblem watches node-problem-detector's conditions and events
	// when Kubernetes is configured, unless Disabled.
	NodeProblem NodeProblemConfig `json:"nodeProblem"`
	// LogPipeline measures Kafka consumer-group lag when its kafka section
	// is set (shipper lag is measured by each node's agent).
	LogPipeline logpipeline.Config `json:"logPipeline"`
	Engine      engine.Config      `json:"engine"`
	// Etcd, when set, watches the control plane's etcd members (the
	// etcdmember detector).
	Etcd *etcdmember.Config `json:"etcd"`
	// EtcdReplace configures etcd.replace-member, which replaces lost
	// members of that cluster: how replacements are started (the masters'
	// agents by default) and how long they may take to catch up.
	EtcdReplace etcdrem.Config `json:"etcdReplace"`
	// CertExpiry, when set, watches the cluster's TLS secrets and remote
	// TLS endpoints (the apiserver, etcd) for certificates about to
	// expire. Files, kubeadm's pki and kubeconfigs are watched by each
	// node's agent instead. Secrets need Kubernetes and list on secrets.
	CertExpiry *certexpiry.Config `json:"certExpiry"`
	// VIP lists the virtual IPs healer may float and their candidate
	// masters; with none, vip.float and the VIP lease watcher are off.
	VIP vip.FloatConfig `json:"vip"`
	// AgentAcceptTimeout is how long a node agent has to accept a request
	// before it counts as unreachable. Default 5s.
	AgentAcceptTimeout time.Duration `json:"agentAcceptTimeout"`
	// Approvals says who may approve the actions a policy decision asks
	// approval for, through Slack, `healer approve` and the web page, and
	// how long a request waits. With no approvers and no Slack approver
	// groups such actions are suppressed.
	Approvals approval.Config `json:"approvals"`
	// Slack posts approval requests and notices, and serves Slack's
	// interactivity and slash-command requests, when a bot token is
	// configured (HEALER_SLACK_BOT_TOKEN or slack.botTokenFile).
	Slack chatops.Config `json:"slack"`
	// Tracing exports spans over OTLP/gRPC: a trace per alert, from the
	// webhook through JetStream to the engine, the remediator and the
	// node's agent. Trace ids are written into audit records either way.
	Tracing telemetry.Config `json:"tracing"`

	// Audit is the audit trail's signing key and checkpoints
	// (checkpoints.go).
	Audit AuditConfig `json:"audit"`

	// Version is the binary's version, for telemetry; not configurable.
	Version string `json:"-"`
}

// NodeProblemConfig is the node-problem-detector detector's configuration
// with a switch.
type NodeProblemConfig struct {
	Disabled           bool `json:"disabled"`
	nodeproblem.Config `json:",inline"`
}

// ApplyDefaults fills zero fields with the dev defaults of DESIGN.md.
func (c *Config) ApplyDefaults() {
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.NATSListen == "" {
		c.NATSListen = "127.0.0.1:4222"
	}
	if c.KubeQPS == 0 {
		c.KubeQPS = 100
	}
	if c.KubeBurst == 0 {
		c.KubeBurst = 200
	}
	if c.PolicyPollInterval == 0 {
		c.PolicyPollInterval = 2 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Resync == 0 {
		c.Resync = time.Minute
	}
	c.Audit.ApplyDefaults(c.DataDir)
	c.Streams.ApplyDefaults()
	c.Alertmanager.ApplyDefaults()
	c.NodeProblem.ApplyDefaults()
	if c.LogPipeline.Kafka != nil {
		c.LogPipeline.ApplyDefaults()
	}
	c.VIP.ApplyDefaults()
	if c.Etcd != nil {
		c.Etcd.ApplyDefaults()
	}
	c.EtcdReplace.ApplyDefaults()
	if c.CertExpiry != nil {
		c.CertExpiry.ApplyDefaults()
	}
	if c.AgentAcceptTimeout == 0 {
		c.AgentAcceptTimeout = 5 * time.Second
	}
	c.Engine.ApplyDefaults()
	c.Approvals.ApplyDefaults()
	c.Slack.ApplyDefaults()
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Resync < time.Second {
		errs = append(errs, fmt.Errorf("resync %s: must be at least 1s", c.Resync))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.NATSURL == "" {
		if err := loopbackOnly(c.NATSListen); err != nil {
			errs = append(errs, fmt.Errorf("natsListen %q: %w", c.NATSListen, err))
		}
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		errs = append(errs, errors.New("redisURL: must start with redis:// or rediss://"))
	}
	if c.RedisPasswordFile != "" && c.RedisURL == "" {
		errs = append(errs, errors.New("redisPasswordFile: set redisURL too (without Redis there is no password to use)"))
	}
	errs = append(errs, c.validateNATSAuth())
	for _, name := range c.DisabledRemediators {
		if !slices.ContainsFunc(remediators.Table(), func(e remediators.Entry) bool { return e.Name == name }) {
			errs = append(errs, fmt.Errorf("disabledRemediators: %q is not a remediator (`healer remediators list` names them)", name))
		}
	}
	if c.Policies != "" {
		if fi, err := os.Stat(c.Policies); err != nil {
			errs = append(errs, fmt.Errorf("policies: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("policies %s: not a directory", c.Policies))
		}
	}
	if c.ShadowPolicies != "" {
		if fi, err := os.Stat(c.ShadowPolicies); err != nil {
			errs = append(errs, fmt.Errorf("shadowPolicies: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("shadowPolicies %s: not a directory", c.ShadowPolicies))
		}
	}
	if c.PolicyPollInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("policyPollInterval %s: must be at least 100ms", c.PolicyPollInterval))
	}
	errs = append(errs, c.Audit.Validate(), c.Streams.Validate(), c.Alertmanager.Validate(), c.NodeProblem.Validate(), c.Engine.Validate())
	if c.LogPipeline.Kafka != nil || len(c.LogPipeline.Shippers) > 0 {
		if len(c.LogPipeline.Shippers) > 0 {
			errs = append(errs, errors.New("logPipeline.shippers: shippers are measured by healer agent on their node; serve measures Kafka only"))
		}
		errs = append(errs, c.LogPipeline.Validate())
	}
	if c.Etcd != nil {
		if err := c.Etcd.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("etcd: %w", err))
		}
		errs = append(errs, c.EtcdReplace.Validate())
	}
	if ce := c.CertExpiry; ce != nil {
		if ce.KubeadmDir != "" || len(ce.Files) > 0 || len(ce.Kubeconfigs) > 0 {
			errs = append(errs, errors.New("certExpiry: files, kubeadmDir and kubeconfigs are read by healer agent on their node; serve watches secrets and endpoints"))
		} else if err := ce.Validate(); err != nil {
			errs = append(errs, err)
		}
		if ce.Secrets != nil && c.NoKubernetes {
			errs = append(errs, errors.New("certExpiry.secrets: needs Kubernetes, which noKubernetes turns off"))
		}
	}
	if err := c.VIP.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("vip: %w", err))
	}
	if c.AgentAcceptTimeout <= 0 {
		errs = append(errs, errors.New("agentAcceptTimeout must be positive"))
	}
	errs = append(errs, c.Approvals.Validate(), c.Tracing.Validate())
	if c.SlackEnabled() {
		errs = append(errs, c.Slack.Validate())
		if len(c.Approvals.Approvers) == 0 && len(c.Approvals.SlackGroups) == 0 {
			errs = append(errs, errors.New("slack: no one may approve: list approvals.approvers (with their Slack user ids) or approvals.slackGroups"))
		}
	}
	return errors.Join(errs...)
}

// SlackEnabled reports whether a Slack bot token is configured.
func (c *Config) SlackEnabled() bool {
	return os.Getenv(EnvSlackBotToken) != "" || c.Slack.BotTokenFile != ""
}

// Environment variables holding the Slack app's credentials (their names,
// not credentials).
//
//nolint:gosec // G101: names of environment variables
const (
	EnvSlackBotToken      = "HEALER_SLACK_BOT_TOKEN"
	EnvSlackSigningSecret = "HEALER_SLACK_SIGNING_SECRET"
)

// LoadFile reads a YAML configuration file into c. Unknown fields are
// errors, so a typo does not silently fall back to a default.
func (c *Config) LoadFile(path string) error { return yamlconfig.Load(path, c) }

// WebhookTokenPath is where a generated webhook token is kept.
func (c *Config) WebhookTokenPath() string { return filepath.Join(c.DataDir, "webhook-token") }

// APITokenPath is where a generated API token is kept.
func (c *Config) APITokenPath() string { return filepath.Join(c.DataDir, "api-token") }

// AgentKeyPath is where the embedded NATS server's agent key is kept:
// each node agent's password derives from it.
func (c *Config) AgentKeyPath() string { return filepath.Join(c.DataDir, bus.AgentKeyFile) }

// validateNATSAuth reports conflicting or half-given NATS credentials.
func (c *Config) validateNATSAuth() error {
	var errs []error
	ways := 0
	for _, set := range []bool{c.NATSCredsFile != "", c.NATSNKeyFile != "", c.NATSUser != "" || c.NATSPasswordFile != ""} {
		if set {
			ways++
		}
	}
	if ways > 1 {
		errs = append(errs, errors.New("nats credentials: set one of natsCredsFile, natsNKeyFile, or natsUser with natsPasswordFile"))
	}
	if (c.NATSUser == "") != (c.NATSPasswordFile == "") {
		errs = append(errs, errors.New("natsUser and natsPasswordFile go together"))
	}
	if (c.NATSCertFile == "") != (c.NATSKeyFile == "") {
		errs = append(errs, errors.New("natsCertFile and natsKeyFile go together"))
	}
	if c.NATSURL == "" && (ways > 0 || c.NATSCAFile != "" || c.NATSCertFile != "") {
		errs = append(errs, errors.New("nats credentials and TLS files are for an external server: set natsURL too"))
	}
	return errors.Join(errs...)
}

// loopbackOnly refuses a listen address off loopback: the embedded NATS
// server has no TLS, so its passwords would cross the network in clear.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("the embedded NATS server listens on loopback only (it has no TLS); for agents on other machines run a NATS cluster with users and TLS and set natsURL")
}

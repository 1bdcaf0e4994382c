package etcdmember

import (
	"errors"
	"fmt"
	"time"
)

// Config is how the remediator replaces members. The cluster it talks to
// (endpoints, TLS) is the etcdmember detector's configuration.
type Config struct {
	// Provisioner is "agent" (a master's node agent rewrites the etcd
	// static-pod manifest) or "local" (a local process; tests and demos).
	// Default "agent".
	Provisioner string `json:"provisioner"`
	// Nodes maps a member name to the node whose agent hosts it, for the
	// agent provisioner. A member not listed is hosted on the node of the
	// same name (kubeadm names members after their node).
	Nodes map[string]string `json:"nodes"`
	// Manifest is the etcd static-pod manifest the agent rewrites. Default
	// /etc/kubernetes/manifests/etcd.yaml.
	Manifest string `json:"manifest"`
	// Local configures the local provisioner.
	Local LocalConfig `json:"local"`
	// CatchUpTimeout bounds the wait for the replacement to catch up with
	// the leader before it is promoted. Default 2m.
	CatchUpTimeout time.Duration `json:"catchUpTimeout"`
	// PollInterval is how often the replacement's progress is read.
	// Default 250ms.
	PollInterval time.Duration `json:"pollInterval"`
	// MaxLag is how many raft entries the replacement may lag behind the
	// leader when it is promoted; etcd refuses to promote a learner that
	// has less than 90% of the leader's log anyway. Default 100.
	MaxLag uint64 `json:"maxLag"`
}

// Provisioner kinds.
const (
	ProvisionerAgent = "agent"
	ProvisionerLocal = "local"
)

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.Provisioner == "" {
		c.Provisioner = ProvisionerAgent
	}
	if c.Manifest == "" {
		c.Manifest = "/etc/kubernetes/manifests/etcd.yaml"
	}
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = 2 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = 250 * time.Millisecond
	}
	if c.MaxLag == 0 {
		c.MaxLag = 100
	}
}

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	switch c.Provisioner {
	case ProvisionerAgent:
	case ProvisionerLocal:
		if err := c.Local.Validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("etcdReplace: provisioner %q: want %q or %q", c.Provisioner, ProvisionerAgent, ProvisionerLocal))
	}
	if c.CatchUpTimeout <= 0 || c.PollInterval <= 0 {
		errs = append(errs, errors.New("etcdReplace: catchUpTimeout and pollInterval must be positive"))
	}
	return errors.Join(errs...)
}

// LocalConfig is the local provisioner's: which command runs a member
// process and where each member keeps its data.
type LocalConfig struct {
	// Command runs one member as a process with its spec in the
	// environment (the healer binary: ["healer", "demo", "etcd-member"]).
	Command []string `json:"command"`
	// Members are the members this host can run, by name.
	Members map[string]LocalMember `json:"members"`
	// NoFsync turns off fsync in the members it starts (demos only).
	NoFsync bool `json:"noFsync"`
}

// LocalMember is where one member keeps its data and log.
type LocalMember struct {
	DataDir string `json:"dataDir"`
	LogFile string `json:"logFile"`
}

// Validate reports what is missing.
func (c *LocalConfig) Validate() error {
	var errs []error
	if len(c.Command) == 0 {
		errs = append(errs, errors.New("etcdReplace: local.command is required"))
	}
	if len(c.Members) == 0 {
		errs = append(errs, errors.New("etcdReplace: local.members: at least one member is required"))
	}
	for name, m := range c.Members {
		if m.DataDir == "" {
			errs = append(errs, fmt.Errorf("etcdReplace: local.members.%s: dataDir is required", name))
		}
	}
	return errors.Join(errs...)
}

package restart

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/selfheal/healer/action/agentparam"
)

// Kinds of component.
const (
	KindSystemd   = "systemd"
	KindStaticPod = "staticpod"
	KindProcess   = "process"
)

// Config is the node half's configuration: the components this node's
// agent may restart, and the flap protection.
type Config struct {
	// Components are the restartable components. Nil means the defaults:
	// kubelet, containerd and docker as systemd units.
	Components []Component `json:"components"`
	// Flap bounds how often one component may be restarted.
	Flap Flap `json:"flap"`
	// StateFile keeps the restart history across agent restarts, so flap
	// protection survives them. Empty keeps it in memory only.
	StateFile string `json:"stateFile"`
}

// Flap is the flap rule: at most MaxRestarts restarts of a component within
// Window; the next request is refused with action.ErrFlapping.
type Flap struct {
	// MaxRestarts defaults to 3.
	MaxRestarts int `json:"maxRestarts"`
	// Window defaults to 1h.
	Window time.Duration `json:"window"`
}

// Component is one thing the agent can restart.
type Component struct {
	// Name is what policies call it ("kubelet").
	Name string `json:"name"`
	// Kind is KindSystemd, KindStaticPod or KindProcess.
	Kind string `json:"kind"`
	// Unit is the systemd unit (KindSystemd), for example "kubelet.service".
	Unit string `json:"unit,omitempty"`
	// Manifest is the static pod's manifest file (KindStaticPod), for
	// example /etc/kubernetes/manifests/kube-scheduler.yaml.
	Manifest string `json:"manifest,omitempty"`
	// HoldDir is where a static pod's manifest waits while the pod is
	// stopped; it must be on the same file system (and, in a container,
	// the same mount) as the manifest. Default: .healer-held inside the
	// manifest directory, which the kubelet skips twice over (it neither
	// reads dot files nor descends into directories).
	HoldDir string `json:"holdDir,omitempty"`
	// DownWait bounds how long a static pod restart waits for the pod to
	// stop (its health check to fail) before putting the manifest back.
	// The kubelet looks at its manifest directory every 20s by default.
	// Default 45s.
	DownWait time.Duration `json:"downWait,omitempty"`
	// Command is the program and its arguments (KindProcess), run without
	// a shell.
	Command []string `json:"command,omitempty"`
	// Dir is the process's working directory.
	Dir string `json:"dir,omitempty"`
	// Env is extra environment for the process, as KEY=value.
	Env []string `json:"env,omitempty"`
	// LogFile receives the process's output (appended), so a detector can
	// follow it.
	LogFile string `json:"logFile,omitempty"`
	// StopGrace is how long a stopped process has between SIGTERM and
	// SIGKILL. Default 10s.
	StopGrace time.Duration `json:"stopGrace,omitempty"`
	// Health says how to tell the component is healthy.
	Health Health `json:"health"`
}

// Health is a component's health check. Exactly one of HTTP, TCP and Unix
// is set.
type Health struct {
	// HTTP is a URL that answers 2xx when healthy
	// ("http://127.0.0.1:10248/healthz").
	HTTP string `json:"http,omitempty"`
	// TCP is host:port that accepts connections when healthy.
	TCP string `json:"tcp,omitempty"`
	// Unix is a socket path that accepts connections when healthy
	// ("/run/containerd/containerd.sock").
	Unix string `json:"unix,omitempty"`
	// Timeout is how long a restarted component has to become healthy.
	// Default 60s.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Interval between probes. Default 200ms.
	Interval time.Duration `json:"interval,omitempty"`
}

// DefaultComponents are the node daemons restarted when no components are
// configured.
func DefaultComponents() []Component {
	return []Component{
		{Name: "kubelet", Kind: KindSystemd, Unit: "kubelet.service", Health: Health{HTTP: "http://127.0.0.1:10248/healthz"}},
		{Name: "containerd", Kind: KindSystemd, Unit: "containerd.service", Health: Health{Unix: "/run/containerd/containerd.sock"}},
		{Name: "docker", Kind: KindSystemd, Unit: "docker.service", Health: Health{Unix: "/var/run/docker.sock"}},
	}
}

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.Components == nil {
		c.Components = DefaultComponents()
	}
	if c.Flap.MaxRestarts == 0 {
		c.Flap.MaxRestarts = 3
	}
	if c.Flap.Window == 0 {
		c.Flap.Window = time.Hour
	}
	for i := range c.Components {
		p := &c.Components[i]
		if p.Kind == KindStaticPod && p.HoldDir == "" && p.Manifest != "" {
			p.HoldDir = filepath.Join(filepath.Dir(p.Manifest), ".healer-held")
		}
		if p.Kind == KindStaticPod && p.DownWait == 0 {
			p.DownWait = 45 * time.Second
		}
		if p.Kind == KindProcess && p.StopGrace == 0 {
			p.StopGrace = 10 * time.Second
		}
		if p.Health.Timeout == 0 {
			p.Health.Timeout = 60 * time.Second
		}
		if p.Health.Interval == 0 {
			p.Health.Interval = 200 * time.Millisecond
		}
	}
}

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	if c.Flap.MaxRestarts < 1 {
		errs = append(errs, fmt.Errorf("restart: flap.maxRestarts %d: must be at least 1", c.Flap.MaxRestarts))
	}
	if c.Flap.Window <= 0 {
		errs = append(errs, fmt.Errorf("restart: flap.window %s: must be positive", c.Flap.Window))
	}
	seen := map[string]bool{}
	for i, p := range c.Components {
		where := fmt.Sprintf("restart: components[%d] (%s)", i, p.Name)
		if err := agentparam.Name("name", p.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("%s: a second component with this name", where))
		}
		seen[p.Name] = true
		switch p.Kind {
		case KindSystemd:
			if err := agentparam.Unit("unit", p.Unit); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		case KindStaticPod:
			if !filepath.IsAbs(p.Manifest) || !filepath.IsAbs(p.HoldDir) {
				errs = append(errs, fmt.Errorf("%s: manifest and holdDir must be absolute paths", where))
			} else if filepath.Dir(filepath.Clean(p.Manifest)) == filepath.Clean(p.HoldDir) {
				errs = append(errs, fmt.Errorf("%s: holdDir must not be the manifest directory", where))
			}
			if p.DownWait <= 0 {
				errs = append(errs, fmt.Errorf("%s: downWait must be positive", where))
			}
		case KindProcess:
			if len(p.Command) == 0 || p.Command[0] == "" {
				errs = append(errs, fmt.Errorf("%s: command is required", where))
			}
			if p.StopGrace <= 0 {
				errs = append(errs, fmt.Errorf("%s: stopGrace must be positive", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: kind %q: want %s, %s or %s", where, p.Kind, KindSystemd, KindStaticPod, KindProcess))
		}
		if err := p.Health.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: health: %w", where, err))
		}
	}
	return errors.Join(errs...)
}

func (h *Health) validate() error {
	if err := h.target().Validate(); err != nil {
		return err
	}
	if h.Timeout <= 0 || h.Interval <= 0 {
		return errors.New("timeout and interval must be positive")
	}
	return nil
}

package runtimepanic

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Config says which logs to follow and when restarts make a crash loop.
type Config struct {
	// Node is the name of the node the detector runs on; events have the
	// subject "node/<Node>". Required.
	Node string `json:"node"`
	// Sources are the logs to follow. Nil means the defaults: the journal
	// of kubelet.service, containerd.service and docker.service.
	Sources []Source `json:"sources"`
	// HealthChecks are the components' health endpoints to watch (kubelet
	// healthz, the runtime's socket); a check failing for its FailFor
	// fires ComponentUnhealthy. Nil watches none (healer agent fills it
	// from its restartable components).
	HealthChecks []HealthCheck `json:"healthChecks"`
	// CrashLoop says how many restarts of a unit make a crash loop.
	CrashLoop CrashLoop `json:"crashLoop"`
	// JournalctlPath is the journalctl binary. Default "journalctl".
	JournalctlPath string `json:"journalctlPath"`
	// StackIdle is how long a crash report may go without a new line
	// before it is considered complete. Default 500ms: the Go runtime writes
	// a crash report in one burst, and detection waits this long after it.
	StackIdle time.Duration `json:"stackIdle"`
	// MaxStack is the number of stack lines kept per report. Default 20.
	MaxStack int `json:"maxStack"`
	// PublishTimeout bounds one attempt to publish an event; failed
	// attempts are retried until the detector stops. Default 5s.
	PublishTimeout time.Duration `json:"publishTimeout"`
}

// Source is one log to follow: a systemd unit's journal or a plain file.
// Exactly one of Unit and File is set.
type Source struct {
	// Name names the source in event keys and data, for example "kubelet".
	Name string `json:"name"`
	// Unit is a systemd unit whose journal is followed, for example
	// "kubelet.service".
	Unit string `json:"unit,omitempty"`
	// File is the path of a plain log file to tail.
	File string `json:"file,omitempty"`
	// FromStart makes a File source read the file from its beginning the
	// first time it is opened, rather than from its end.
	FromStart bool `json:"fromStart,omitempty"`
}

// CrashLoop is the crash-loop rule: Restarts restarts of a unit within
// Window.
type CrashLoop struct {
	// Restarts is the number of restarts that make a crash loop. Default 3.
	Restarts int `json:"restarts"`
	// Window is the period in which they must happen. Default 10m.
	Window time.Duration `json:"window"`
}

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.Sources == nil {
		c.Sources = []Source{
			{Name: "kubelet", Unit: "kubelet.service"},
			{Name: "containerd", Unit: "containerd.service"},
			{Name: "docker", Unit: "docker.service"},
		}
	}
	for i := range c.HealthChecks {
		c.HealthChecks[i].applyDefaults()
	}
	if c.CrashLoop.Restarts == 0 {
		c.CrashLoop.Restarts = 3
	}
	if c.CrashLoop.Window == 0 {
		c.CrashLoop.Window = 10 * time.Minute
	}
	if c.JournalctlPath == "" {
		c.JournalctlPath = "journalctl"
	}
	if c.StackIdle == 0 {
		c.StackIdle = 500 * time.Millisecond
	}
	if c.MaxStack == 0 {
		c.MaxStack = 20
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
}

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("runtimepanic: node is required"))
	}
	if len(c.Sources) == 0 && len(c.HealthChecks) == 0 {
		errs = append(errs, errors.New("runtimepanic: at least one source or health check is required"))
	}
	name := regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	seen := map[string]bool{}
	for i, s := range c.Sources {
		where := fmt.Sprintf("runtimepanic: sources[%d] (%s)", i, s.Name)
		switch {
		case s.Name == "":
			errs = append(errs, fmt.Errorf("%s: name is required", where))
		case !name.MatchString(s.Name):
			errs = append(errs, fmt.Errorf("%s: name may hold only letters, digits, '.', '_' and '-'", where))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("%s: a second source with this name", where))
		}
		seen[s.Name] = true
		if (s.Unit == "") == (s.File == "") {
			errs = append(errs, fmt.Errorf("%s: exactly one of unit and file is required", where))
		}
		if s.Unit != "" && s.FromStart {
			errs = append(errs, fmt.Errorf("%s: fromStart applies to files only", where))
		}
	}
	hcSeen := map[string]bool{}
	for i, hc := range c.HealthChecks {
		where := fmt.Sprintf("runtimepanic: healthChecks[%d] (%s)", i, hc.Name)
		if !name.MatchString(hc.Name) {
			errs = append(errs, fmt.Errorf("%s: name may hold only letters, digits, '.', '_' and '-'", where))
		}
		if hcSeen[hc.Name] {
			errs = append(errs, fmt.Errorf("%s: a second check with this name", where))
		}
		hcSeen[hc.Name] = true
		if err := hc.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if c.CrashLoop.Restarts < 1 {
		errs = append(errs, fmt.Errorf("runtimepanic: crashLoop.restarts %d: must be at least 1", c.CrashLoop.Restarts))
	}
	if c.CrashLoop.Window <= 0 {
		errs = append(errs, fmt.Errorf("runtimepanic: crashLoop.window %s: must be positive", c.CrashLoop.Window))
	}
	if c.JournalctlPath == "" {
		errs = append(errs, errors.New("runtimepanic: journalctlPath is required"))
	}
	if c.StackIdle <= 0 {
		errs = append(errs, fmt.Errorf("runtimepanic: stackIdle %s: must be positive", c.StackIdle))
	}
	if c.MaxStack < 1 {
		errs = append(errs, fmt.Errorf("runtimepanic: maxStack %d: must be at least 1", c.MaxStack))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("runtimepanic: publishTimeout %s: must be positive", c.PublishTimeout))
	}
	return errors.Join(errs...)
}

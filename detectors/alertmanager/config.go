package alertmanager

import (
	"errors"
	"fmt"
	"time"
)

// Config maps alerts to events and limits what the endpoint accepts.
type Config struct {
	// MaxBodyBytes bounds a webhook body; larger bodies get 413.
	MaxBodyBytes int64 `json:"maxBodyBytes"`
	// MaxAlerts bounds the alerts of one body; more get 413.
	MaxAlerts int `json:"maxAlerts"`
	// EventTypeLabels are tried in order; the first label an alert has
	// names the event type.
	EventTypeLabels []string `json:"eventTypeLabels"`
	// Targets are tried in order; the first label an alert has names the
	// target.
	Targets []TargetRule `json:"targets"`
	// PublishTimeout bounds the wait for JetStream's acks.
	PublishTimeout time.Duration `json:"publishTimeout"`
}

// TargetRule turns one alert label into an event subject.
type TargetRule struct {
	// Label is the alert label to read.
	Label string `json:"label"`
	// Kind prefixes the value: kind "node" and value "worker-1" give
	// "node/worker-1". An empty Kind means the label holds a whole subject
	// ("etcd/member-2").
	Kind string `json:"kind"`
	// StripPort drops a ":port" suffix ("10.0.0.5:9100" gives "10.0.0.5").
	StripPort bool `json:"stripPort"`
}

// ApplyDefaults fills zero fields: the event type comes from the
// healer_event label, else alertname; the target from healer_target (a
// whole subject), else node, instance (port stripped) or nodename as a node.
func (c *Config) ApplyDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.MaxAlerts == 0 {
		c.MaxAlerts = 1000
	}
	if len(c.EventTypeLabels) == 0 {
		c.EventTypeLabels = []string{"healer_event", "alertname"}
	}
	if len(c.Targets) == 0 {
		c.Targets = []TargetRule{
			{Label: "healer_target"},
			{Label: "node", Kind: "node"},
			{Label: "instance", Kind: "node", StripPort: true},
			{Label: "nodename", Kind: "node"},
		}
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
}

// Validate reports a configuration that could not map alerts.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("alertmanager: maxBodyBytes %d: must be at least 1024", c.MaxBodyBytes))
	}
	if c.MaxAlerts < 1 {
		errs = append(errs, fmt.Errorf("alertmanager: maxAlerts %d: must be at least 1", c.MaxAlerts))
	}
	if len(c.EventTypeLabels) == 0 {
		errs = append(errs, errors.New("alertmanager: eventTypeLabels: at least one label is required"))
	}
	for i, t := range c.Targets {
		if t.Label == "" {
			errs = append(errs, fmt.Errorf("alertmanager: targets[%d]: label is required", i))
		}
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("alertmanager: publishTimeout %s: must be positive", c.PublishTimeout))
	}
	return errors.Join(errs...)
}

package runtimepanic

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/probe"
)

// TypeUnhealthy is a component whose health check kept failing.
const TypeUnhealthy = "ComponentUnhealthy"

// HealthCheck is a component's health endpoint (kubelet's healthz, the
// container runtime's socket), probed every Interval. A check failing for
// FailFor fires a ComponentUnhealthy event; the first passing probe after
// that resolves it.
type HealthCheck struct {
	// Name is the component, as the restart remediator knows it ("kubelet");
	// it is the event's data.source.
	Name string `json:"name"`
	// HTTP, TCP and Unix: exactly one is the endpoint (see internal/probe).
	HTTP string `json:"http,omitempty"`
	TCP  string `json:"tcp,omitempty"`
	Unix string `json:"unix,omitempty"`
	// Interval between probes. Default 10s.
	Interval time.Duration `json:"interval,omitempty"`
	// FailFor is how long the check must keep failing before the event
	// fires. Default 30s: long enough for a restart by systemd or by
	// healer itself, which would otherwise race the event.
	FailFor time.Duration `json:"failFor,omitempty"`
	// Timeout bounds one probe. Default 2s.
	Timeout time.Duration `json:"timeout,omitempty"`
}

func (h *HealthCheck) target() probe.Target {
	return probe.Target{HTTP: h.HTTP, TCP: h.TCP, Unix: h.Unix}
}

func (h *HealthCheck) applyDefaults() {
	if h.Interval == 0 {
		h.Interval = 10 * time.Second
	}
	if h.FailFor == 0 {
		h.FailFor = 30 * time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Second
	}
}

func (h *HealthCheck) validate() error {
	if err := h.target().Validate(); err != nil {
		return err
	}
	if h.Interval <= 0 || h.FailFor < 0 || h.Timeout <= 0 {
		return fmt.Errorf("interval %s, failFor %s, timeout %s: interval and timeout must be positive, failFor not negative", h.Interval, h.FailFor, h.Timeout)
	}
	return nil
}

// healthData is the data of a ComponentUnhealthy event.
type healthData struct {
	Source       string    `json:"source"`
	Check        string    `json:"check"`
	Error        string    `json:"error,omitempty"`
	FailingSince time.Time `json:"failing_since"`
	FailFor      string    `json:"fail_for"`
}

// HealthEvent is the event for a health check's transition: firing when
// it has failed since since, resolved when it passes again. The firing and
// the resolved event of one outage share the key and differ in id.
func HealthEvent(node string, hc HealthCheck, status string, since, at time.Time, probeErr error) (*bus.Event, error) {
	d := healthData{Source: hc.Name, Check: hc.target().String(), FailingSince: since.UTC(), FailFor: hc.FailFor.String()}
	if probeErr != nil {
		d.Error = probeErr.Error()
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode health event for %s: %w", hc.Name, err)
	}
	h := sha256.New()
	for _, s := range []string{node, hc.Name, status, since.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return &bus.Event{
		SpecVersion: bus.SpecVersion, ID: "hc-" + hex.EncodeToString(h.Sum(nil)[:16]),
		Source: EventSource, Type: TypeUnhealthy, Subject: "node/" + node, Time: at.UTC(),
		DataContentType: "application/json", Status: status, Key: node + "/" + hc.Name + ":health", Data: raw,
	}, nil
}

// healthState follows one check from probe to probe.
type healthState struct {
	since time.Time // first failure of the current outage; zero when healthy
	fired bool
}

// observe takes one probe result and returns the transition to report:
// bus.StatusFiring, bus.StatusResolved, or "".
func (s *healthState) observe(hc *HealthCheck, now time.Time, err error) (status string, since time.Time) {
	if err == nil {
		since, fired := s.since, s.fired
		*s = healthState{}
		if fired {
			return bus.StatusResolved, since
		}
		return "", time.Time{}
	}
	if s.since.IsZero() {
		s.since = now
	}
	if !s.fired && now.Sub(s.since) >= hc.FailFor {
		s.fired = true
		return bus.StatusFiring, s.since
	}
	return "", time.Time{}
}

// watchHealth probes hc until ctx ends and reports its transitions.
func (d *Detector) watchHealth(ctx context.Context, hc HealthCheck, log *slog.Logger) {
	client := &http.Client{Timeout: hc.Timeout}
	var st healthState
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, hc.Timeout)
		err := hc.target().Probe(pctx, client)
		cancel()
		if ctx.Err() != nil {
			return
		}
		now := d.now()
		if status, since := st.observe(&hc, now, err); status != "" {
			ev, eerr := HealthEvent(d.cfg.Node, hc, status, since, now, err)
			if eerr != nil {
				log.ErrorContext(ctx, "health event not built", "err", eerr)
			} else {
				if status == bus.StatusFiring {
					log.WarnContext(ctx, "component unhealthy", "component", hc.Name, "since", since, "err", err, "event_id", ev.ID)
				} else {
					log.InfoContext(ctx, "component healthy again", "component", hc.Name, "event_id", ev.ID)
				}
				d.publish(ctx, log, ev)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

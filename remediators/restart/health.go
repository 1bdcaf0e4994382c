package restart

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/selfheal/healer/internal/probe"
)

// target is the check's endpoint.
func (h *Health) target() probe.Target { return probe.Target{HTTP: h.HTTP, TCP: h.TCP, Unix: h.Unix} }

// probe runs one health check and returns nil when the component is healthy.
func (h *Health) probe(ctx context.Context, hc *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, min(2*time.Second, h.Timeout))
	defer cancel()
	return h.target().Probe(ctx, hc)
}

// waitHealthy probes until the component is healthy or h.Timeout has
// passed, and returns how long it took.
func (h *Health) waitHealthy(ctx context.Context, hc *http.Client, start time.Time) (time.Duration, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	for {
		err := h.probe(ctx, hc)
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return time.Since(start), fmt.Errorf("stopped waiting for health after %s: %w (last probe: %w)", time.Since(start).Round(time.Millisecond), context.Cause(parent), err)
			}
			return time.Since(start), fmt.Errorf("not healthy %s after restart: %w", h.Timeout, err)
		case <-time.After(h.Interval):
		}
	}
}

// waitUnhealthy probes until the component stops answering or within has
// passed; it reports whether it went down.
func (h *Health) waitUnhealthy(ctx context.Context, hc *http.Client, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		if h.probe(ctx, hc) != nil {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(h.Interval):
		}
	}
}

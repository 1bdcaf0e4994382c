package restart

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/dbus"

	"github.com/selfheal/healer/action"
)

// unitManager is the part of systemd's D-Bus API a unit restart needs.
type unitManager interface {
	RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	Close()
}

// dialSystemd connects to systemd over the system bus.
func dialSystemd(ctx context.Context) (unitManager, error) {
	c, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w", err)
	}
	return c, nil
}

// systemdUnit restarts a unit through systemd's job queue and waits for the
// job to finish.
type systemdUnit struct {
	unit string
	dial func(context.Context) (unitManager, error)
}

func (s *systemdUnit) restart(ctx context.Context, progress action.Progress) error {
	conn, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan string, 1)
	job, err := conn.RestartUnitContext(ctx, s.unit, "replace", done)
	if err != nil {
		return fmt.Errorf("restart unit %s: %w", s.unit, err)
	}
	progress(ctx, "systemd job queued", map[string]any{"unit": s.unit, "job": job})
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("restart unit %s: systemd job %d ended %q", s.unit, job, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restart unit %s: waiting for systemd job %d: %w", s.unit, job, context.Cause(ctx))
	}
}

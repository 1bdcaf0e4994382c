package restart

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/selfheal/healer/action"
)

// staticPod restarts a static pod the way an operator does: move its
// manifest out of the kubelet's manifest directory, wait until the pod has
// stopped, move it back. The manifest is put back whatever happens.
type staticPod struct {
	c  Component
	hc *http.Client
}

func (s *staticPod) held() string { return filepath.Join(s.c.HoldDir, filepath.Base(s.c.Manifest)) }

// recover puts back a manifest an earlier agent left in the hold directory
// (it died halfway through a restart).
func (s *staticPod) recover() (bool, error) {
	if _, err := os.Stat(s.held()); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if _, err := os.Stat(s.c.Manifest); err == nil {
		return false, fmt.Errorf("static pod %s: both %s and %s exist; resolve by hand", s.c.Name, s.c.Manifest, s.held())
	}
	if err := os.Rename(s.held(), s.c.Manifest); err != nil {
		return false, fmt.Errorf("static pod %s: put back manifest: %w", s.c.Name, err)
	}
	return true, nil
}

func (s *staticPod) restart(ctx context.Context, progress action.Progress) (err error) {
	if _, err := s.recover(); err != nil {
		return fmt.Errorf("%w: %w", action.ErrUnsafe, err)
	}
	if _, err := os.Stat(s.c.Manifest); err != nil {
		return fmt.Errorf("%w: static pod %s: manifest: %w", action.ErrUnsafe, s.c.Name, err)
	}
	if err := os.MkdirAll(s.c.HoldDir, 0o700); err != nil {
		return fmt.Errorf("static pod %s: hold dir: %w", s.c.Name, err)
	}
	if err := os.Rename(s.c.Manifest, s.held()); err != nil {
		return fmt.Errorf("static pod %s: move manifest out: %w", s.c.Name, err)
	}
	defer func() {
		if rerr := os.Rename(s.held(), s.c.Manifest); rerr != nil {
			err = errors.Join(err, fmt.Errorf("static pod %s: put back manifest %s: %w", s.c.Name, s.c.Manifest, rerr))
			return
		}
		progress(ctx, "manifest put back", map[string]any{"manifest": s.c.Manifest})
	}()
	progress(ctx, "manifest moved out", map[string]any{"manifest": s.c.Manifest, "held": s.held()})
	if !s.c.Health.waitUnhealthy(ctx, s.hc, s.c.DownWait) {
		return fmt.Errorf("static pod %s did not stop within %s of its manifest being moved out; manifest put back", s.c.Name, s.c.DownWait)
	}
	progress(ctx, "pod stopped", map[string]any{"component": s.c.Name})
	return nil
}

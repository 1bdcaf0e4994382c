package restart

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// history is the restart history of every component, kept so flap
// protection and idempotency survive an agent restart.
type history struct {
	mu   sync.Mutex
	path string
	// Restarts maps a component to its restarts, oldest first.
	Restarts map[string][]restartRecord `json:"restarts"`
}

type restartRecord struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
}

func loadHistory(path string) (*history, error) {
	h := &history{path: path, Restarts: map[string][]restartRecord{}}
	if path == "" {
		return h, nil
	}
	b, err := os.ReadFile(path) //nolint:gosec // the path is the operator's configuration
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return nil, fmt.Errorf("restart history %s: %w", path, err)
	}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("restart history %s: %w", path, err)
	}
	if h.Restarts == nil {
		h.Restarts = map[string][]restartRecord{}
	}
	return h, nil
}

// recent returns the restarts of component within window before now, and
// whether one of them was action id.
func (h *history) recent(component, id string, window time.Duration, now time.Time) (n int, done bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.Restarts[component] {
		if r.ID == id {
			done = true
		}
		if now.Sub(r.Time) < window {
			n++
		}
	}
	return n, done
}

// add records a restart, forgets those older than window, and saves.
func (h *history) add(component, id string, window time.Duration, now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := h.Restarts[component][:0]
	for _, r := range h.Restarts[component] {
		if now.Sub(r.Time) < window {
			kept = append(kept, r)
		}
	}
	h.Restarts[component] = append(kept, restartRecord{ID: id, Time: now})
	if h.path == "" {
		return nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode restart history: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o700); err != nil {
		return fmt.Errorf("restart history: %w", err)
	}
	tmp := h.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("restart history: %w", err)
	}
	if err := os.Rename(tmp, h.path); err != nil {
		return fmt.Errorf("restart history: %w", err)
	}
	return nil
}

package policies

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"
)

// DefaultWatchInterval is how often a Watcher looks at its directory when
// no interval is given.
const DefaultWatchInterval = 2 * time.Second

// Watcher reloads a policy directory when its contents change. It polls:
// every interval it hashes the .rego files, and when the revision differs
// from the last one loaded it loads the directory again.
type Watcher struct {
	dir      string
	interval time.Duration
	log      *slog.Logger
}

// NewWatcher returns a Watcher of dir ("" for the embedded defaults, which
// never change) polling every interval (DefaultWatchInterval if zero or
// less).
func NewWatcher(dir string, interval time.Duration, log *slog.Logger) *Watcher {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	return &Watcher{dir: dir, interval: interval, log: log.With("policy_dir", cmp.Or(dir, EmbeddedName))}
}

// Run loads the directory at once and then whenever its revision changes,
// until ctx is done; it then returns nil. Each policy that loads is passed
// to onLoad. A revision that Load refuses (or a directory that cannot be
// read) is passed to onRefuse once, with the reason; the caller keeps using
// the last policy passed to onLoad. Callbacks run on Run's goroutine.
func (w *Watcher) Run(ctx context.Context, onLoad func(*Policy), onRefuse func(revision string, err error)) error {
	if onLoad == nil || onRefuse == nil {
		return errors.New("policy watcher: onLoad and onRefuse must both be set")
	}
	var loaded, refused string
	poll := func() {
		rev, err := Revision(w.dir)
		if err != nil {
			// The directory cannot be read: report each distinct problem once.
			if key := "unreadable: " + err.Error(); key != refused {
				refused = key
				w.log.Warn("policy directory unreadable, keeping the current policy", "err", err)
				onRefuse("", err)
			}
			return
		}
		switch rev {
		case loaded:
			refused = "" // back to the good revision: a new breakage is news again
			return
		case refused:
			return
		}
		p, err := Load(ctx, w.dir)
		if ctx.Err() != nil {
			return // shutting down, not the policy's fault
		}
		if err != nil {
			refused = rev
			w.log.Warn("policy refused, keeping the current policy", "revision", rev, "err", err)
			onRefuse(rev, err)
			return
		}
		// The files may have changed again between Revision and Load;
		// the policy's own revision is the one that counts.
		loaded, refused = p.Revision, ""
		w.log.Info("policy loaded", "revision", p.Revision, "files", p.Files, "tests_passed", p.Tests)
		onLoad(p)
	}

	poll()
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			poll()
		}
	}
}

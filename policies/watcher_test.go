package policies

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// watchEvent is what a Watcher callback reported.
type watchEvent struct {
	loaded   *Policy
	revision string // of a refused revision
	err      error
}

func TestWatcher(t *testing.T) {
	dir := writeDir(t, map[string]string{"healer.rego": goodPolicy, "healer_test.rego": goodTest})
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan watchEvent, 16)
	done := make(chan error, 1)
	w := NewWatcher(dir, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	holder := NewHolder(nil)
	go func() {
		done <- w.Run(ctx,
			func(p *Policy) { holder.Set(p); events <- watchEvent{loaded: p} },
			func(rev string, err error) { events <- watchEvent{revision: rev, err: err} },
		)
	}()
	next := func(t *testing.T) watchEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no reload or refusal within 10s")
			return watchEvent{}
		}
	}
	quiet := func(t *testing.T) {
		t.Helper()
		select {
		case ev := <-events:
			t.Fatalf("unexpected callback %+v", ev)
		case <-time.After(100 * time.Millisecond): // ten polls
		}
	}
	decide := func(t *testing.T) string {
		t.Helper()
		d, err := holder.Current().Decide(context.Background(), input(nodeEvent("A", bus.StatusFiring, "node/a")))
		if err != nil {
			t.Fatal(err)
		}
		return d.Reason
	}
	// write replaces a file atomically, so that no poll sees half of it.
	write := func(t *testing.T, name, content string) {
		t.Helper()
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	first := next(t)
	if first.loaded == nil {
		t.Fatalf("first callback %+v, want the initial load", first)
	}
	quiet(t)

	t.Run("broken syntax is refused once and the old policy stays", func(t *testing.T) {
		write(t, "healer.rego", "package healer\n\ndecision := {\n")
		ev := next(t)
		if ev.loaded != nil || ev.err == nil || !strings.Contains(ev.err.Error(), "healer.rego:") {
			t.Fatalf("callback %+v, want a refusal naming healer.rego", ev)
		}
		if rev, _ := Revision(dir); ev.revision != rev {
			t.Errorf("refused revision %s, want %s", ev.revision, rev)
		}
		quiet(t)
		if got := decide(t); got != "r" {
			t.Errorf("old policy decided %q, want %q", got, "r")
		}
	})

	t.Run("a policy failing its tests is refused", func(t *testing.T) {
		write(t, "healer.rego", strings.Replace(goodPolicy, "node.cordon", "node.reboot", 1))
		ev := next(t)
		if ev.loaded != nil || ev.err == nil || !strings.Contains(ev.err.Error(), "test_a") {
			t.Fatalf("callback %+v, want a refusal naming test_a", ev)
		}
		quiet(t)
	})

	t.Run("fixed policy loads", func(t *testing.T) {
		write(t, "healer.rego", strings.Replace(goodPolicy, `"reason": "r"`, `"reason": "fixed"`, 1))
		ev := next(t)
		if ev.loaded == nil {
			t.Fatalf("callback %+v, want a load", ev)
		}
		if ev.loaded.Revision == first.loaded.Revision {
			t.Error("new policy has the old revision")
		}
		if got := decide(t); got != "fixed" {
			t.Errorf("new policy decided %q, want %q", got, "fixed")
		}
		quiet(t)
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestWatcherUnreadableDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	refusals := make(chan error, 16)
	go func() {
		_ = NewWatcher(dir, 10*time.Millisecond, slog.New(slog.DiscardHandler)).Run(ctx,
			func(*Policy) { t.Error("loaded a missing directory") },
			func(_ string, err error) { refusals <- err },
		)
	}()
	select {
	case err := <-refusals:
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("refusal %v does not name %s", err, dir)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no refusal for a missing directory")
	}
	select {
	case err := <-refusals:
		t.Errorf("refused the same problem again: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestWatcherNeedsCallbacks(t *testing.T) {
	err := NewWatcher("", 0, slog.New(slog.DiscardHandler)).Run(context.Background(), nil, nil)
	if err == nil {
		t.Fatal("Run without callbacks succeeded")
	}
}

package runtimepanic

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// recordingPublisher keeps the events the detector published.
type recordingPublisher struct {
	mu     sync.Mutex
	events []*bus.Event
}

func (p *recordingPublisher) Publish(_ context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, events...)
	return bus.PublishResult{Stored: len(events)}, nil
}

func (p *recordingPublisher) snapshot() []*bus.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*bus.Event(nil), p.events...)
}

// waitEvents waits until pub holds n events.
func waitEvents(t *testing.T, pub *recordingPublisher, n int) []*bus.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if evs := pub.snapshot(); len(evs) >= n {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("got %d events, want %d", len(pub.snapshot()), n)
	return nil
}

// blockingReader returns no data until it is closed.
type blockingReader struct{ done chan struct{} }

func (b *blockingReader) Read([]byte) (int, error) { <-b.done; return 0, io.EOF }
func (b *blockingReader) Close() error             { close(b.done); return nil }

func decodeData(t *testing.T, e *bus.Event) eventData {
	t.Helper()
	var d eventData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// runJournal runs a detector on the recorded dockerd journal and returns
// what it published.
func runJournal(t *testing.T) []*bus.Event {
	t.Helper()
	recorded, err := os.ReadFile("testdata/dockerd-restart-loop.json")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	journal := func(_ context.Context, unit string) (io.ReadCloser, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if unit != "docker.service" || calls > 1 {
			return &blockingReader{done: make(chan struct{})}, nil
		}
		return io.NopCloser(bytes.NewReader(recorded)), nil
	}
	pub := &recordingPublisher{}
	d, err := New(Config{Node: "worker-3", Sources: []Source{{Name: "docker", Unit: "docker.service"}}},
		pub, slog.New(slog.DiscardHandler), WithJournal(journal))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	evs := waitEvents(t, pub, 2)
	time.Sleep(300 * time.Millisecond) // nothing more may come
	cancel()
	<-done
	return append(evs, pub.snapshot()[len(evs):]...)
}

func TestDetectorJournal(t *testing.T) {
	evs := runJournal(t)
	if len(evs) != 2 {
		t.Fatalf("got %d events, want a panic and one crash loop", len(evs))
	}
	p, loop := evs[0], evs[1]
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			t.Error(err)
		}
		if e.Source != "runtimepanic" || e.Subject != "node/worker-3" || e.Key != "worker-3/docker" || e.Status != bus.StatusFiring {
			t.Errorf("event %+v: wrong source, subject, key or status", e)
		}
	}
	pd := decodeData(t, p)
	if p.Type != TypePanic || pd.Kind != KindPanic || pd.Message != "assignment to entry in nil map" ||
		pd.Goroutine != "goroutine 1 [running]:" || len(pd.Stack) != 5 || pd.Unit != "docker.service" || pd.Source != "docker" {
		t.Errorf("panic event %s %+v", p.Type, pd)
	}
	if want := time.UnixMicro(1795317601000000).UTC(); !p.Time.Equal(want) {
		t.Errorf("panic time %s, want %s", p.Time, want)
	}
	ld := decodeData(t, loop)
	if loop.Type != TypeCrashLoop || ld.Kind != KindCrashLoop || ld.Restarts != 3 || ld.Window != "10m0s" {
		t.Errorf("crash loop event %s %+v", loop.Type, ld)
	}
	if want := time.UnixMicro(1795317609100000).UTC(); !loop.Time.Equal(want) {
		t.Errorf("crash loop time %s, want the third scheduled restart %s", loop.Time, want)
	}

	// Reading the same journal again gives the same ids.
	again := runJournal(t)
	for i := range evs {
		if again[i].ID != evs[i].ID {
			t.Errorf("event %d id %s on the second read, %s on the first", i, again[i].ID, evs[i].ID)
		}
	}
	if evs[0].ID == evs[1].ID {
		t.Error("the panic and the crash loop share an id")
	}
}

func TestDetectorFileFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "containerd.log")
	old := "panic: from before the detector started\ngoroutine 1 [running]:\nmain.main()\n"
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	d, err := New(Config{Node: "worker-1", Sources: []Source{{Name: "containerd", File: path}}},
		pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d.cfg.StackIdle = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	time.Sleep(400 * time.Millisecond) // let it open the file and go to its end

	appendFile := func(name, text string) {
		f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
	}
	// Written in two pieces, the second cut mid-line.
	sample := readTestdata(t, "containerd-nil-deref.log")
	appendFile(path, sample[:200])
	time.Sleep(300 * time.Millisecond)
	appendFile(path, sample[200:])
	waitEvents(t, pub, 1) // closed after StackIdle without lines

	// Rotate: the old file moves away, a new one takes its name.
	appendFile(path, "fatal error: concurrent map writes\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(path, "2026-11-22T03:40:00.5Z stderr F panic: after rotation\n")
	evs := waitEvents(t, pub, 3)
	cancel()
	<-done

	got := []string{}
	for _, e := range evs {
		got = append(got, decodeData(t, e).Message)
	}
	want := []string{"runtime error: invalid memory address or nil pointer dereference", "concurrent map writes", "after rotation"}
	if len(got) != len(want) {
		t.Fatalf("messages %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("messages %q, want %q", got, want)
		}
	}
	if d0 := decodeData(t, evs[0]); d0.File != path || len(d0.Stack) != 12 || d0.Signal != "SIGSEGV" {
		t.Errorf("first event data %+v", d0)
	}
	if evs[1].Type != TypeFatalError {
		t.Errorf("fatal error event type %s", evs[1].Type)
	}
	if want := time.Date(2026, 11, 22, 3, 40, 0, 500_000_000, time.UTC); !evs[2].Time.Equal(want) {
		t.Errorf("event time %s, want the line's own %s", evs[2].Time, want)
	}
}

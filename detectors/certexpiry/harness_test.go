package certexpiry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// recordingPublisher keeps the events the detector published; the first
// fail calls fail.
type recordingPublisher struct {
	mu     sync.Mutex
	fail   int
	calls  int
	events []*bus.Event
	taken  int
}

func (p *recordingPublisher) Publish(_ context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.calls <= p.fail {
		return bus.PublishResult{}, fmt.Errorf("%w: no ack", bus.ErrUnavailable)
	}
	p.events = append(p.events, events...)
	return bus.PublishResult{Stored: len(events)}, nil
}

// take returns the events published since the last take.
func (p *recordingPublisher) take() []*bus.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]*bus.Event(nil), p.events[p.taken:]...)
	p.taken = len(p.events)
	return out
}

// syncBuffer is a bytes.Buffer safe for the detector's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// records returns the log records with the message msg.
func (s *syncBuffer) records(msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(s.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// harness runs a detector whose looks happen when the test says, at the
// times it gives.
type harness struct {
	t      *testing.T
	d      *Detector
	pub    *recordingPublisher
	logs   *syncBuffer
	ticks  chan time.Time
	polled chan struct{}
	waits  chan time.Duration
	cancel context.CancelFunc
	done   chan error
}

// start runs a detector on cfg; its first look is at first.
func start(t *testing.T, cfg Config, first time.Time, opts ...Option) *harness {
	t.Helper()
	h := &harness{
		t: t, pub: &recordingPublisher{}, logs: &syncBuffer{}, ticks: make(chan time.Time),
		polled: make(chan struct{}), waits: make(chan time.Duration, 100), done: make(chan error, 1),
	}
	d, err := New(cfg, h.pub, slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts...)
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	d.now = func() time.Time { return first }
	d.after = func(wait time.Duration) <-chan time.Time {
		select {
		case h.waits <- wait:
		default:
		}
		return h.ticks
	}
	d.afterPoll = func() { h.polled <- struct{}{} }
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() { h.done <- d.Run(ctx) }()
	t.Cleanup(h.stop)
	h.wait()
	return h
}

func (h *harness) wait() {
	h.t.Helper()
	select {
	case <-h.polled:
	case <-time.After(60 * time.Second):
		h.t.Fatal("look did not finish")
	}
}

// at looks at time now and waits until the look is done.
func (h *harness) at(now time.Time) {
	h.t.Helper()
	h.ticks <- now
	h.wait()
}

func (h *harness) stop() {
	h.cancel()
	for {
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run() = %v", err)
			}
			h.done <- nil
			return
		case <-h.polled:
		}
	}
}

// byKey indexes events by key; a key given twice fails the test.
func byKey(t *testing.T, evs []*bus.Event) map[string]*bus.Event {
	t.Helper()
	m := map[string]*bus.Event{}
	for _, e := range evs {
		if _, dup := m[e.Key]; dup {
			t.Errorf("two events for key %s", e.Key)
		}
		m[e.Key] = e
	}
	return m
}

func keys(evs []*bus.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Status+" "+e.Type+" "+e.Key)
	}
	return out
}

func data(t *testing.T, e *bus.Event) EventData {
	t.Helper()
	var d EventData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// checkEvent checks the envelope of e.
func checkEvent(t *testing.T, e *bus.Event, typ, subject, status string, at time.Time) {
	t.Helper()
	if e == nil {
		t.Fatalf("no %s %s event for %s", status, typ, subject)
	}
	if err := e.Validate(); err != nil {
		t.Error(err)
	}
	if e.Source != EventSource || e.Type != typ || e.Subject != subject || e.Status != status || !e.Time.Equal(at) || e.DataContentType != "application/json" {
		t.Errorf("event %s %s %s %s at %s, want %s %s %s %s at %s",
			e.Source, e.Type, e.Subject, e.Status, e.Time, EventSource, typ, subject, status, at)
	}
}

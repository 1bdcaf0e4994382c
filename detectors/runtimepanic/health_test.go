package runtimepanic

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

func TestHealthStateTransitions(t *testing.T) {
	hc := HealthCheck{Name: "kubelet", TCP: "127.0.0.1:1", FailFor: 30 * time.Second}
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	down := errors.New("connection refused")
	steps := []struct {
		at     time.Duration
		err    error
		status string
	}{
		{0, nil, ""},
		{10 * time.Second, down, ""},               // failing starts
		{30 * time.Second, down, ""},               // 20s of failure: not yet
		{40 * time.Second, down, bus.StatusFiring}, // 30s: fires once
		{50 * time.Second, down, ""},
		{60 * time.Second, nil, bus.StatusResolved},
		{70 * time.Second, down, ""}, // a blip shorter than FailFor
		{80 * time.Second, nil, ""},
	}
	var st healthState
	for _, s := range steps {
		got, since := st.observe(&hc, t0.Add(s.at), s.err)
		if got != s.status {
			t.Fatalf("at +%s: transition %q, want %q", s.at, got, s.status)
		}
		if got != "" && !since.Equal(t0.Add(10*time.Second)) {
			t.Fatalf("at +%s: since %s, want the first failure", s.at, since)
		}
	}
}

// TestDetectorHealthCheck runs a real HTTP endpoint that goes down and
// comes back, and checks the events the detector publishes.
func TestDetectorHealthCheck(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	pub := &recordingPublisher{}
	d, err := New(Config{
		Node: "worker-1", Sources: []Source{}, // health checks only
		HealthChecks: []HealthCheck{{Name: "kubelet", HTTP: "http://" + ln.Addr().String() + "/healthz", Interval: 20 * time.Millisecond, FailFor: 100 * time.Millisecond}},
	}, pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	time.Sleep(150 * time.Millisecond)
	if n := len(pub.snapshot()); n != 0 {
		t.Fatalf("%d events while healthy", n)
	}
	healthy.Store(false)
	evs := waitEvents(t, pub, 1)
	e := evs[0]
	if e.Type != TypeUnhealthy || e.Status != bus.StatusFiring || e.Subject != "node/worker-1" || e.Key != "worker-1/kubelet:health" {
		t.Fatalf("firing event %+v", e)
	}
	if !strings.Contains(string(e.Data), `"source":"kubelet"`) || !strings.Contains(string(e.Data), "status 503") {
		t.Errorf("event data %s", e.Data)
	}
	healthy.Store(true)
	evs = waitEvents(t, pub, 2)
	if r := evs[1]; r.Status != bus.StatusResolved || r.Key != e.Key || r.ID == e.ID {
		t.Fatalf("resolved event %+v (firing %s)", r, e.ID)
	}
}

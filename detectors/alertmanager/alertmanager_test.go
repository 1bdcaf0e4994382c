package alertmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/alertmanager/notify/webhook"

	"github.com/selfheal/healer/bus"
)

func captured(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/kernel-deadlock-firing.json")
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
	return b
}

type webhookMessage struct{ Message webhook.Message }

// recorder is a Publisher that keeps what it was given, for tests of the
// detector's own logic (the bus itself is tested with a real server).
type recorder struct{ events []*bus.Event }

func (r *recorder) Publish(_ context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	r.events = append(r.events, events...)
	return bus.PublishResult{Stored: len(events)}, nil
}

func decode(t *testing.T, b []byte) *webhook.Message {
	t.Helper()
	var m webhook.Message
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func newDetector(t *testing.T, cfg Config, pub Publisher) *Detector {
	t.Helper()
	d, err := New(cfg, pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestEventsFromCapturedPayload(t *testing.T) {
	d := newDetector(t, Config{}, nil)
	evs, err := d.Events(decode(t, captured(t)))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	e := evs[0]
	if err := e.Validate(); err != nil {
		t.Fatalf("event invalid: %v", err)
	}
	if e.Type != "NodeKernelDeadlock" || e.Subject != "node/worker-1" || e.Status != bus.StatusFiring || e.Key != "a3c1f0d2b4e59687" || e.Source != Source {
		t.Errorf("event = %+v", e)
	}
	start, _ := time.Parse(time.RFC3339, "2026-11-22T03:12:04.512Z")
	if e.ID != EventID("a3c1f0d2b4e59687", start, "firing") {
		t.Errorf("id %s is not derived from fingerprint, startsAt and status", e.ID)
	}
	var data map[string]any
	if err := json.Unmarshal(e.Data, &data); err != nil {
		t.Fatal(err)
	}
	if data["receiver"] != "healer" || data["labels"].(map[string]any)["cluster"] != "prod-eu-1" {
		t.Errorf("data lost alert fields: %s", e.Data)
	}
}

func TestEventIDCollapsesRetriesOnly(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	id := EventID("fp", t0, "firing")
	for name, other := range map[string]string{
		"other fingerprint": EventID("fp2", t0, "firing"),
		"other start":       EventID("fp", t0.Add(time.Millisecond), "firing"),
		"resolved":          EventID("fp", t0, "resolved"),
	} {
		if other == id {
			t.Errorf("%s: same id %s", name, id)
		}
	}
	if again := EventID("fp", t0.In(time.FixedZone("CET", 3600)), "firing"); again != id {
		t.Errorf("same instant in another zone: %s != %s", again, id)
	}
}

func TestMapping(t *testing.T) {
	base := func(labels map[string]string) *webhook.Message {
		m := decode(t, captured(t))
		m.Alerts[0].Labels = labels
		m.Alerts[0].Fingerprint = ""
		return m
	}
	tests := []struct {
		name        string
		cfg         Config
		labels      map[string]string
		wantType    string
		wantSubject string
		wantErr     string
	}{
		{name: "alertname and node", labels: map[string]string{"alertname": "NodeNotReady", "node": "w1"}, wantType: "NodeNotReady", wantSubject: "node/w1"},
		{name: "healer_event wins over alertname", labels: map[string]string{"alertname": "KubeNodeNotReady", "healer_event": "NodeNotReady", "node": "w1"}, wantType: "NodeNotReady", wantSubject: "node/w1"},
		{name: "instance with port", labels: map[string]string{"alertname": "A", "instance": "10.0.0.5:9100"}, wantType: "A", wantSubject: "node/10.0.0.5"},
		{name: "nodename", labels: map[string]string{"alertname": "A", "nodename": "m-1"}, wantType: "A", wantSubject: "node/m-1"},
		{name: "node wins over instance", labels: map[string]string{"alertname": "A", "instance": "x:1", "node": "w2"}, wantType: "A", wantSubject: "node/w2"},
		{name: "healer_target is a whole subject", labels: map[string]string{"alertname": "EtcdMemberDown", "healer_target": "etcd/member-2", "instance": "x:1"}, wantType: "EtcdMemberDown", wantSubject: "etcd/member-2"},
		{name: "missing target is kept, not dropped", labels: map[string]string{"alertname": "A", "job": "x"}, wantType: "A", wantSubject: "alert/"},
		{name: "configured labels", cfg: Config{EventTypeLabels: []string{"fault"}, Targets: []TargetRule{{Label: "host", Kind: "vip"}}},
			labels: map[string]string{"fault": "VIPLost", "host": "10.10.0.100", "node": "ignored"}, wantType: "VIPLost", wantSubject: "vip/10.10.0.100"},
		{name: "no event type label", cfg: Config{EventTypeLabels: []string{"fault"}}, labels: map[string]string{"alertname": "A"}, wantErr: "none of the labels fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDetector(t, tt.cfg, nil)
			evs, err := d.Events(base(tt.labels))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e := evs[0]
			if e.Type != tt.wantType || !strings.HasPrefix(e.Subject, tt.wantSubject) {
				t.Errorf("type %q subject %q, want %q %q", e.Type, e.Subject, tt.wantType, tt.wantSubject)
			}
			if e.Key == "" {
				t.Error("no key: a fingerprint must be computed when Alertmanager sends none")
			}
		})
	}
}

// startBus runs a real embedded JetStream with healer's streams.
func startBus(t *testing.T) (*bus.Publisher, jetstream.Stream, func()) {
	t.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cfg := bus.StreamsConfig{}
	cfg.ApplyDefaults()
	st, err := bus.EnsureStreams(t.Context(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() }
	t.Cleanup(stop)
	return bus.NewPublisher(js, time.Second), st.Events, stop
}

func serve(t *testing.T, d *Detector, body []byte) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodPost, Path, bytes.NewReader(body)))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func msgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.WithoutCancel(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestServeHTTPStoresDurablyAndCollapsesRetries(t *testing.T) {
	pub, events, _ := startBus(t)
	d := newDetector(t, Config{}, pub)
	body := captured(t)
	code, resp := serve(t, d, body)
	if code != http.StatusOK || !strings.Contains(resp, `"stored":1`) {
		t.Fatalf("first post: %d %s", code, resp)
	}
	code, resp = serve(t, d, body)
	if code != http.StatusOK || !strings.Contains(resp, `"duplicates":1`) {
		t.Fatalf("retry: %d %s", code, resp)
	}
	if n := msgs(t, events); n != 1 {
		t.Fatalf("stream holds %d events after a retry, want 1", n)
	}
	m, err := events.GetLastMsgForSubject(t.Context(), bus.EventSubject(Source, "a3c1f0d2b4e59687"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.DecodeEvent(m.Data); err != nil {
		t.Fatalf("stored message is not a valid event: %v", err)
	}
}

func TestServeHTTPBadInput(t *testing.T) {
	pub, events, _ := startBus(t)
	d := newDetector(t, Config{MaxBodyBytes: 4096, MaxAlerts: 2}, pub)
	good := string(captured(t))
	alert := good[strings.Index(good, `{
      "status"`):strings.Index(good, `  ],
  "groupLabels"`)]
	threeAlerts := strings.Replace(good, alert, alert+","+strings.Replace(alert, "a3c1", "b3c1", 1)+","+strings.Replace(alert, "a3c1", "c3c1", 1), 1)
	tests := []struct {
		name string
		body string
		code int
		msg  string
	}{
		{"truncated json", good[:100], http.StatusBadRequest, "malformed"},
		{"trailing garbage", good + "{}", http.StatusBadRequest, "after top-level value"},
		{"version 3", strings.Replace(good, `"version": "4"`, `"version": "3"`, 1), http.StatusBadRequest, "version"},
		{"no alerts", `{"version":"4","alerts":[]}`, http.StatusBadRequest, "no alerts"},
		{"no startsAt", strings.Replace(good, `"startsAt": "2026-11-22T03:12:04.512Z"`, `"startsAt": "0001-01-01T00:00:00Z"`, 1), http.StatusBadRequest, "startsAt"},
		{"oversize body", strings.Replace(good, `"summary"`, `"padding": "`+strings.Repeat("x", 8192)+`", "summary"`, 1), http.StatusRequestEntityTooLarge, "larger than 4096"},
		{"too many alerts", threeAlerts, http.StatusRequestEntityTooLarge, "at most 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, resp := serve(t, d, []byte(tt.body))
			if code != tt.code || !strings.Contains(resp, tt.msg) {
				t.Fatalf("got %d %q, want %d containing %q", code, resp, tt.code, tt.msg)
			}
		})
	}
	if n := msgs(t, events); n != 0 {
		t.Fatalf("bad bodies stored %d events", n)
	}
}

func TestServeHTTPBusDownIs503(t *testing.T) {
	pub, _, stop := startBus(t)
	d := newDetector(t, Config{}, pub)
	stop()
	code, resp := serve(t, d, captured(t))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("bus down: %d %s, want 503 so Alertmanager retries", code, resp)
	}
}

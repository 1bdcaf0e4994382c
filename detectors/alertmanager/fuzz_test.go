package alertmanager

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/selfheal/healer/bus"
)

// FuzzWebhookBody feeds arbitrary bodies to the webhook. It must never
// panic, must answer 200 or a 4xx, and every event it would store must be
// valid and encode to JSON that decodes back to the same event.
func FuzzWebhookBody(f *testing.F) {
	f.Add(captured(f))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A","node":"n"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"resolved","labels":{"healer_target":"etcd/m-1","alertname":"B"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T00:01:00Z"}]}`))
	f.Add([]byte(`{"version":"4","alerts":[]}`))
	f.Add([]byte(`{`))
	pub := &recorder{}
	d, err := New(Config{MaxBodyBytes: 64 << 10, MaxAlerts: 50}, pub, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		pub.events = nil
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body)))
		switch {
		case rec.Code == http.StatusOK:
		case rec.Code >= 400 && rec.Code < 500:
			if len(pub.events) != 0 {
				t.Fatalf("status %d but %d events published", rec.Code, len(pub.events))
			}
			return
		default:
			t.Fatalf("status %d for a body the bus never saw", rec.Code)
		}
		for _, e := range pub.events {
			if err := e.Validate(); err != nil {
				t.Fatalf("published an invalid event: %v", err)
			}
			msg, err := bus.Message(e)
			if err != nil {
				t.Fatal(err)
			}
			back, err := bus.DecodeEvent(msg.Data)
			if err != nil {
				t.Fatalf("published event does not decode: %v\n%s", err, msg.Data)
			}
			if back.ID != e.ID || back.Subject != e.Subject || back.Status != e.Status {
				t.Fatalf("round trip changed the event: %+v vs %+v", back, e)
			}
		}
	})
}

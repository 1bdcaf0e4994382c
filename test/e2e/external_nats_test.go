package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/serve"
)

// TestExternalNATS: with --nats-url healer runs no server of its own and
// keeps its streams on the given one.
func TestExternalNATS(t *testing.T) {
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), ServerName: "external"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	h := startHealer(t, serve.Config{NATSURL: ns.ClientURL()})
	if got := h.srv.NATSURL(); got != ns.ClientURL() {
		t.Fatalf("connected to %s, want the external %s", got, ns.ClientURL())
	}
	if code, body := h.post(readTestdata(t, "kernel-deadlock-firing.json"), h.srv.WebhookToken); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "event and decision audited", func() (bool, string) {
		recs := h.records(url.Values{"target": {"node/worker-1"}})
		return strings.Join(kinds(recs), ",") == "event,decision", describe(recs)
	})
	js := jetStreamAt(t, ns.ClientURL())
	for _, name := range []string{bus.StreamEvents, bus.StreamAudit} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatalf("stream %s on the external server: %v", name, err)
		}
		info, _ := s.Info(t.Context())
		if info.State.Msgs == 0 {
			t.Errorf("stream %s is empty on the external server", name)
		}
	}
}

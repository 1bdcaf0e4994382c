package e2e

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/serve"
)

// The embedded NATS server of `healer serve` takes no strangers: a client
// without credentials, with a guessed password, or with another node's
// password is refused; a node's agent, let in, can neither write the
// audit stream, nor reach JetStream's API, nor speak or listen for
// another node.
func TestEmbeddedNATSTakesNoStrangers(t *testing.T) {
	h := startHealer(t, serve.Config{NoKubernetes: true})
	url := h.srv.NATSClientURL()
	w1, err := h.srv.AgentPassword("worker-1")
	if err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string][]nats.Option{
		"no credentials":          nil,
		"serve's user, guessed":   {nats.UserInfo(bus.ServeUser, "guess")},
		"a node, guessed":         {nats.UserInfo("worker-1", "guess")},
		"another node's password": {nats.UserInfo("worker-2", w1)},
		"a token":                 {nats.Token(w1)},
	} {
		nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(0), nats.Timeout(2*time.Second))...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
			continue
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization violation", name, err)
		}
	}

	// worker-1's agent is let in, with its node's permissions only.
	var mu sync.Mutex
	var violations []string
	nc, err := nats.Connect(url, nats.UserInfo("worker-1", w1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		defer mu.Unlock()
		violations = append(violations, err.Error())
	}))
	if err != nil {
		t.Fatalf("worker-1's agent: %v", err)
	}
	t.Cleanup(nc.Close)
	js := jetStreamAt(t, url, h.srv.NATSOptions()...)
	before := auditMsgs(t, js)

	forged := []byte(`{"seq":1,"kind":"verified","target":"node/worker-9","actor":"healer/engine"}`)
	for _, subj := range []string{
		bus.SubjectAudit,
		"$JS.API.STREAM.DELETE." + bus.StreamAudit,
		"$JS.API.STREAM.INFO." + bus.StreamAudit,
		"healer.agent.worker-2.events",
		bus.SubjectEvents + ".alertmanager",
	} {
		if err := nc.Publish(subj, forged); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nc.Subscribe("healer.agent.worker-2.act", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("$JS.API.INFO", nil, time.Second); err == nil {
		t.Error("the agent reached JetStream's API")
	}
	_ = nc.Flush()
	waitFor(t, 5*time.Second, "a permissions violation for each", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(violations) >= 7, strings.Join(violations, "\n")
	})
	mu.Lock()
	for _, v := range violations {
		if !strings.Contains(v, "Permissions Violation") {
			t.Errorf("unexpected error %q", v)
		}
	}
	mu.Unlock()
	if after := auditMsgs(t, js); after != before {
		t.Errorf("the audit stream went from %d to %d records after the agent's attempts", before, after)
	}
}

func auditMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), bus.StreamAudit)
	if err != nil {
		t.Fatalf("audit stream: %v", err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

package e2e

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/selfheal/healer/chatops"
	"github.com/selfheal/healer/chatops/chatopstest"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/app/serve"
)

// Every endpoint but health and metrics refuses a request without its
// token (or, for Slack's, without Slack's signature), whatever the method;
// a token for one door does not open another; no answer allows other
// origins (no CORS); oversize bodies are refused.
func TestEveryEndpointNeedsItsToken(t *testing.T) {
	fake := chatopstest.Start(t, nil)
	cfg := serve.Config{NoKubernetes: true}
	cfg.Approvals = approval.Config{Approvers: []approval.Approver{{Name: "alice", Slack: "UALICE", TokenFile: approverTokenFile(t, "alice")}}}
	cfg.Slack = chatops.Config{
		BotTokenFile: writeFile(t, "slack-token", "xoxb-sec"), SigningSecretFile: writeFile(t, "slack-secret", slackSecret),
		Channel: "COPS", APIURL: fake.APIURL(),
	}
	h := startHealer(t, cfg)
	base := h.srv.URL()
	do := func(method, path, token string, body []byte, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, base+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		_ = resp.Body.Close()
		return resp
	}
	guarded := []struct{ method, path string }{
		{"POST", "/webhook/alertmanager"},
		{"GET", "/api/v1/audit"}, {"GET", "/api/v1/pauses"}, {"POST", "/api/v1/pauses"}, {"DELETE", "/api/v1/pauses/pause-1"},
		{"GET", "/api/v1/approvals"}, {"GET", "/api/v1/approvals/apr-0123456789"}, {"POST", "/api/v1/approvals/apr-0123456789"},
		{"GET", "/"}, {"GET", "/records/1"}, {"GET", "/verify"}, {"GET", "/live"}, {"GET", "/assets/style.css"}, {"GET", "/assets/live.js"},
		{"GET", "/runbooks/node.drain.md"}, {"POST", "/approvals/apr-0123456789"}, {"POST", "/logout"},
		{"POST", chatops.InteractionsPath}, {"POST", chatops.CommandsPath},
	}
	for _, g := range guarded {
		for name, tok := range map[string]string{"no token": "", "a wrong token": "not-a-token"} {
			if resp := do(g.method, g.path, tok, nil, nil); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d, want 401", g.method, g.path, name, resp.StatusCode)
			}
		}
	}
	// One door's token does not open another.
	if resp := do("GET", "/api/v1/audit", h.srv.WebhookToken, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the audit API with the webhook token: %d", resp.StatusCode)
	}
	if resp := do("POST", "/webhook/alertmanager", h.srv.APIToken, []byte(`{}`), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the webhook with the API token: %d", resp.StatusCode)
	}
	for _, open := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp := do("GET", open, "", nil, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200 without a token", open, resp.StatusCode)
		}
	}

	// No CORS: neither a preflight nor a request from another origin is
	// answered with Access-Control-Allow-*.
	origin := map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
	for _, r := range []struct{ method, path, token string }{
		{"OPTIONS", "/api/v1/audit", ""}, {"OPTIONS", "/webhook/alertmanager", ""},
		{"GET", "/api/v1/audit", h.srv.APIToken}, {"GET", "/metrics", ""},
	} {
		resp := do(r.method, r.path, r.token, nil, origin)
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Errorf("%s %s from another origin answered with %s", r.method, r.path, k)
			}
		}
	}

	// Oversize bodies are refused, not read.
	big := bytes.Repeat([]byte("a"), 5<<20)
	if resp := do("POST", "/webhook/alertmanager", h.srv.WebhookToken, big, nil); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a 5 MiB webhook: %d, want 413", resp.StatusCode)
	}
	if resp := do("POST", chatops.InteractionsPath, "", big, nil); resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a 5 MiB Slack request: %d, want 413 or 401", resp.StatusCode)
	}
	if resp := do("POST", "/api/v1/pauses", h.srv.APIToken, append([]byte(`{"reason":"`), append(big, []byte(`","by":"a"}`)...)...), nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a 5 MiB pause: %d, want 400", resp.StatusCode)
	}
	h.noSecretsLogged("xoxb-sec", slackSecret, approverToken("alice"), h.srv.APIToken, h.srv.WebhookToken)
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// env is one healer under test and what it talks to.
type env struct {
	t      testing.TB
	srv    *serve.Server
	cancel context.CancelFunc
	logs   *logBuffer // everything the server logged
}

// startHealer runs `healer serve` in-process with cfg (data dir, listen
// address and tokens filled in when empty).
func startHealer(t *testing.T, cfg serve.Config) *env { return startHealerTB(t, cfg) }

// startHealerTB is startHealer for benchmarks too.
func startHealerTB(t testing.TB, cfg serve.Config) *env {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.NATSListen == "" && cfg.NATSURL == "" {
		cfg.NATSListen = "127.0.0.1:-1"
	}
	if cfg.WebhookTokenFile == "" {
		cfg.WebhookTokenFile = writeFile(t, "webhook-token", "wh-"+t.Name()+"-0123456789abcdef0123456789abcdef")
	}
	if cfg.APITokenFile == "" {
		cfg.APITokenFile = writeFile(t, "api-token", "api-"+t.Name()+"-0123456789abcdef0123456789abcdef")
	}
	ctx, cancel := context.WithCancel(t.Context())
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelWarn // a benchmark's log should not cost time
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: level}))
	srv, err := serve.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("start healer: %v", err)
	}
	e := &env{t: t, srv: srv, cancel: cancel, logs: logs}
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	e.cancel()
	if err := e.srv.Wait(); err != nil {
		e.t.Errorf("healer stopped with error: %v", err)
	}
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuffer keeps a server's log, for tests that look for what must never
// be logged (and fault tests that count what was).
type logBuffer struct{ testenv.LogBuffer }

// noSecretsLogged fails the test if the server logged any of secrets.
func (e *env) noSecretsLogged(secrets ...string) {
	e.t.Helper()
	logs := e.logs.String()
	if len(logs) == 0 {
		e.t.Fatal("no log captured")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("a secret (%.4s…) is in the log", s)
		}
	}
}

// testWriter sends the server's log to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// post sends a webhook body with a token and returns status and body.
func (e *env) post(body []byte, token string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodPost, e.srv.URL()+"/webhook/alertmanager", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("post webhook: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// records reads the audit trail through the API.
func (e *env) records(filter url.Values) []audit.Record {
	e.t.Helper()
	if filter == nil {
		filter = url.Values{}
	}
	if filter.Get("limit") == "" {
		filter.Set("limit", "10000")
	}
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.srv.URL()+"/api/v1/audit?"+filter.Encode(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.srv.APIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("get audit: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("get audit: %s: %s", resp.Status, b)
	}
	var recs []audit.Record
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		e.t.Fatalf("decode audit: %v", err)
	}
	return recs
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func kinds(recs []audit.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Kind)
	}
	return out
}

func reason(r audit.Record) string {
	var d struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(r.Details, &d)
	return d.Reason
}

// alertFor rewrites the captured payload for another node and fingerprint.
func alertFor(payload []byte, node, fingerprint string) []byte {
	s := strings.ReplaceAll(string(payload), "worker-1", node)
	return []byte(strings.ReplaceAll(s, "a3c1f0d2b4e59687", fingerprint))
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func describe(recs []audit.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "\n  %d %s %s %s %s", r.Seq, r.Kind, r.Target, r.Remediator, r.Details)
	}
	return b.String()
}

// jetStreamAt is a test's own JetStream client of the NATS at url, closed
// when t ends.
func jetStreamAt(t testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.Name("e2e test"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// agentNATS is how node's agent reaches e's embedded NATS: as its node's
// own user, with the password serve derives for it.
func (e *env) agentNATS(t testing.TB, node string) agent.NATS {
	t.Helper()
	pw, err := e.srv.AgentPassword(node)
	if err != nil {
		t.Fatal(err)
	}
	return agent.NATS{URL: e.srv.NATSClientURL(), User: node, PasswordFile: writeFile(t, node+"-nats-password", pw)}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

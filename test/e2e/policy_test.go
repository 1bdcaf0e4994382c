package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/internal/app/serve"
)

// TestPolicyReloadAndRefusal: a policy directory is reloaded on change; a
// change that fails to compile or fails its own tests is refused and
// audited, and the last good policy keeps deciding.
func TestPolicyReloadAndRefusal(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"healer.rego", "healer_test.rego"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "policies", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := startHealer(t, serve.Config{Policies: dir, PolicyPollInterval: 100 * time.Millisecond})
	loaded := h.records(url.Values{"kind": {"policy.loaded"}})
	if len(loaded) != 1 {
		t.Fatalf("policy.loaded records at start: %d%s", len(loaded), describe(loaded))
	}
	good := loaded[0].PolicyRevision

	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A syntax error.
	write("broken.rego", "package healer\n\ndecision := {\n")
	waitFor(t, 5*time.Second, "policy.refused for a syntax error", func() (bool, string) {
		recs := h.records(url.Values{"kind": {"policy.refused"}})
		return len(recs) == 1, describe(recs)
	})
	// A policy that compiles but fails its own test.
	write("broken.rego", "package healer\n\nimport rego.v1\n\ntest_always_fails if { false }\n")
	waitFor(t, 5*time.Second, "policy.refused for a failing test", func() (bool, string) {
		recs := h.records(url.Values{"kind": {"policy.refused"}})
		return len(recs) == 2 && strings.Contains(string(recs[1].Details), "test_always_fails"), describe(recs)
	})

	// Decisions still come from the last good policy.
	if code, body := h.post(readTestdata(t, "kernel-deadlock-firing.json"), h.srv.WebhookToken); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "decision by the good policy", func() (bool, string) {
		recs := h.records(url.Values{"kind": {"decision"}})
		return len(recs) == 1 && recs[0].PolicyRevision == good, describe(recs)
	})

	// Fixed: loaded, audited with the new revision.
	if err := os.Remove(filepath.Join(dir, "broken.rego")); err != nil {
		t.Fatal(err)
	}
	write("extra.rego", "package healer\n\nimport rego.v1\n\n# A harmless addition.\nextra_note := \"reviewed\"\n")
	waitFor(t, 5*time.Second, "policy.loaded for the fixed policy", func() (bool, string) {
		recs := h.records(url.Values{"kind": {"policy.loaded"}})
		return len(recs) == 2 && recs[1].PolicyRevision != good, describe(recs)
	})
}

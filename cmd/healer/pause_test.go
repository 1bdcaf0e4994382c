package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/app/serve"
)

// healer pause set, list and clear against a real serve. A pause is
// recorded as set by the owner of the token (api for the shared API
// token, whatever --by says); the kill switch is cleared only with an
// approver's own token.
func TestPauseCLI(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte("api-token-for-test-0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	whFile := filepath.Join(dir, "wh-token")
	if err := os.WriteFile(whFile, []byte("webhook-token-for-test-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	aliceFile := filepath.Join(dir, "alice-token")
	if err := os.WriteFile(aliceFile, []byte("alice-own-token-0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	srv, err := serve.Start(ctx, serve.Config{
		DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", NATSListen: "127.0.0.1:-1", NoKubernetes: true,
		APITokenFile: tokenFile, WebhookTokenFile: whFile,
		Approvals: approval.Config{Approvers: []approval.Approver{{Name: "alice", TokenFile: aliceFile}}},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = srv.Wait() }()
	as := func(token string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(t.Context(), append(args, "--server", srv.URL(), "--token-file", token), &out, &errb)
		return code, out.String(), errb.String()
	}
	cli := func(args ...string) (int, string, string) { return as(tokenFile, args...) }
	code, out, errs := cli("pause", "set", "--remediator", "node.drain", "--target", "node/worker-*", "--for", "2h", "--reason", "kernel upgrade", "--by", "alice")
	if code != 0 {
		t.Fatalf("pause set: %d %s%s", code, out, errs)
	}
	m := regexp.MustCompile(`^(pause-[0-9a-f]+): paused node.drain on node/worker-\* until `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pause set printed %q", out)
	}
	if code, out, _ := cli("pause", "list"); code != 0 || !strings.Contains(out, m[1]) || !strings.Contains(out, "kernel upgrade") || !regexp.MustCompile(`\bapi\b`).MatchString(out) || strings.Contains(out, "alice") {
		t.Fatalf("pause list: %d %q", code, out)
	}
	if code, _, errs := cli("pause", "set", "--by", "alice"); code != 1 || !strings.Contains(errs, "reason is required") {
		t.Fatalf("pause set without a reason: %d %q", code, errs)
	}
	if code, out, errs := cli("pause", "clear", m[1], "--by", "bob"); code != 0 || !strings.Contains(out, "cleared") {
		t.Fatalf("pause clear: %d %q %q", code, out, errs)
	}
	if code, _, errs := cli("pause", "clear", m[1], "--by", "bob"); code != 1 || !strings.Contains(errs, "no such pause") {
		t.Fatalf("pause clear again: %d %q", code, errs)
	}
	if code, out, _ := cli("pause", "list"); code != 0 || !strings.Contains(out, "no pauses") {
		t.Fatalf("pause list after clear: %d %q", code, out)
	}

	// The kill switch: anyone with the API token may stop everything; only
	// an approver may start it again.
	code, out, errs = cli("pause", "set", "--reason", "incident", "--by", "mallory")
	kill := regexp.MustCompile(`^(pause-[0-9a-f]+): `).FindStringSubmatch(out)
	if code != 0 || kill == nil {
		t.Fatalf("kill switch: %d %q %q", code, out, errs)
	}
	if code, _, errs := cli("pause", "clear", kill[1]); code != 1 || !strings.Contains(errs, "needs an approver's own token") {
		t.Fatalf("kill switch cleared with the API token: %d %q", code, errs)
	}
	if code, out, errs := as(aliceFile, "pause", "clear", kill[1]); code != 0 || !strings.Contains(out, "cleared") {
		t.Fatalf("kill switch cleared by alice: %d %q %q", code, out, errs)
	}
	recs, err := srv.Trail().Query(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var actors []string
	for _, r := range recs {
		if strings.HasPrefix(string(r.Kind), "pause.") {
			actors = append(actors, string(r.Kind)+"/"+r.Actor)
		}
	}
	if got := strings.Join(actors, " "); got != "pause.set/api pause.cleared/api pause.set/api pause.cleared/api:alice" {
		t.Fatalf("pause records: %s", got)
	}
}

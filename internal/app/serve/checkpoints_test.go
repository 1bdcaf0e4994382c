package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/bus/bustest"
)

// auditRun is one `healer serve` run on a test NATS server.
type auditRun struct {
	srv    *Server
	cancel context.CancelFunc
	logs   *bytes.Buffer
}

// startServe starts serve on the test's NATS server with dataDir.
func startServe(t *testing.T, ns *bustest.Server, dataDir string, accept bool) (*auditRun, error) {
	t.Helper()
	tokens := t.TempDir()
	for name, v := range map[string]string{"wh": "wh-token-" + t.Name(), "api": "api-token-" + t.Name()} {
		if err := os.WriteFile(filepath.Join(tokens, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		DataDir: dataDir, Listen: "127.0.0.1:0", NATSURL: ns.NS.ClientURL(), NoKubernetes: true,
		WebhookTokenFile: filepath.Join(tokens, "wh"), APITokenFile: filepath.Join(tokens, "api"),
	}
	cfg.Audit.AcceptNewTrail = accept
	logs := &bytes.Buffer{}
	ctx, cancel := context.WithCancel(t.Context())
	srv, err := Start(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		cancel()
		return nil, err
	}
	r := &auditRun{srv: srv, cancel: cancel, logs: logs}
	t.Cleanup(r.stop)
	return r, nil
}

func (r *auditRun) stop() {
	r.cancel()
	_ = r.srv.Wait()
}

func (r *auditRun) get(t *testing.T, path string, token bool) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.srv.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+r.srv.APIToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeRefusesARecreatedAuditTrail(t *testing.T) {
	ns := bustest.Start(t)
	dataDir := t.TempDir()
	first, err := startServe(t, ns, dataDir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("checkpoints are served with the API token only, without the secret", func(t *testing.T) {
		if code, _ := first.get(t, audit.CheckpointsPath, false); code != http.StatusUnauthorized {
			t.Fatalf("without a token: HTTP %d, want 401", code)
		}
		code, body := first.get(t, audit.CheckpointsPath, true)
		var ans audit.CheckpointsAnswer
		if code != http.StatusOK || json.Unmarshal([]byte(body), &ans) != nil || len(ans.Checkpoints) == 0 {
			t.Fatalf("HTTP %d %s, want the checkpoints", code, body)
		}
		key, err := os.ReadFile(filepath.Join(dataDir, "audit-signing.key"))
		if err != nil {
			t.Fatal(err)
		}
		secret := strings.Split(string(key), "\n")[1]
		if strings.Contains(body, secret) || strings.Contains(first.logs.String(), secret) {
			t.Fatal("the signing key shows in the API answer or the log")
		}
		if _, metrics := first.get(t, "/metrics", false); !strings.Contains(metrics, "healer_audit_foreign_records") {
			t.Fatal("no healer_audit_foreign_records metric")
		}
	})
	first.stop()

	// Between the two runs the audit stream is deleted; serve would
	// recreate it empty.
	if err := ns.JS.DeleteStream(t.Context(), bus.StreamAudit); err != nil {
		t.Fatal(err)
	}
	t.Run("the next start is refused", func(t *testing.T) {
		_, err := startServe(t, ns, dataDir, false)
		if !errors.Is(err, audit.ErrTrailDisagrees) || !strings.Contains(err.Error(), "the trail is empty") {
			t.Fatalf("start on a deleted audit stream: %v, want ErrTrailDisagrees", err)
		}
	})
	t.Run("accepting the new trail starts, audited", func(t *testing.T) {
		run, err := startServe(t, ns, dataDir, true)
		if err != nil {
			t.Fatalf("start with the accept flag: %v", err)
		}
		recs, err := run.srv.Trail().Query(t.Context(), audit.Filter{Kind: audit.KindAuditAccepted})
		if err != nil || len(recs) != 1 || !strings.Contains(recs[0].Actor, "--accept-new-audit-trail") {
			t.Fatalf("audit.accepted records %+v (%v), want one naming the flag", recs, err)
		}
		run.stop()
		again, err := startServe(t, ns, dataDir, false)
		if err != nil {
			t.Fatalf("start after accepting: %v", err)
		}
		again.stop()
	})
}

func TestAuditConfigDefaults(t *testing.T) {
	var c Config
	c.DataDir = "/var/lib/healer"
	c.ApplyDefaults()
	if c.Audit.SigningKeyFile != "/var/lib/healer/audit-signing.key" || c.Audit.CheckpointRecords != 1000 || c.Audit.CheckpointInterval != time.Minute {
		t.Fatalf("defaults %+v", c.Audit)
	}
	c.Audit.CheckpointInterval = time.Millisecond
	if err := c.Audit.Validate(); err == nil {
		t.Fatal("a 1ms checkpoint interval is accepted")
	}
}

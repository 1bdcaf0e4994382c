package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/selfheal/healer/chatops"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// TestNoSecretStoredOrServed: approvers vote through every channel (the
// CLI, the web page, Slack), and then nothing healer stores, serves or
// logs holds a configured secret: not the stored requests, not the
// approvals API (to the API token or an approver's), not `healer
// approvals --json`, not the audit trail, not the log, not any file of
// the data dir.
func TestNoSecretStoredOrServed(t *testing.T) {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	const redisPassword = "redis-pw-secret-Lk27v0123456789abcdef"
	rd := testenv.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	if err := rc.ConfigSet(t.Context(), "requirepass", redisPassword).Err(); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	var dataDir string
	h := startApprovalHealerWith(t, true, 5, func(c *serve.Config) {
		c.RedisURL, c.RedisPasswordFile = rd.URL, writeFile(t, "redis-password", redisPassword)
		c.DataDir = t.TempDir()
		dataDir = c.DataDir
	}, "worker-1", "db-1")
	agentPassword, err := h.srv.AgentPassword("worker-1")
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"API token": h.srv.APIToken, "webhook token": h.srv.WebhookToken,
		"alice's token": approverToken("alice"), "bob's token": approverToken("bob"), "carol's token": approverToken("carol"),
		"Slack signing secret": slackSecret, "Slack bot token": "xoxb-e2e", "Redis password": redisPassword,
		"worker-1's NATS password": agentPassword,
	}

	firing := readTestdata(t, "kernel-deadlock-firing.json")
	for node, fp := range map[string]string{"worker-1": "f000000000000001", "db-1": "f000000000000002"} {
		if code, body := h.post(alertFor(firing, node, fp), h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
	}
	byTarget := map[string]approval.Request{}
	waitFor(t, 15*time.Second, "both requests stored", func() (bool, string) {
		for _, r := range h.approvals(h.srv.APIToken) {
			byTarget[r.Target] = r
		}
		return len(byTarget) == 2, ""
	})

	// worker-1 needs two: alice through the CLI, bob through the web page.
	w1 := byTarget["node/worker-1"]
	cmd := exec.CommandContext(t.Context(), bin, "approve", w1.ID, "--server", h.srv.URL(), "--token-file", approverTokenFile(t, "alice"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("healer approve as alice: %v\n%s", err, out)
	}
	h.webVote(w1, approverToken("bob"))
	// db-1 needs one: carol's click in Slack.
	db1 := byTarget["node/db-1"]
	if code := h.click("UCAROL", chatops.ActionApprove, db1.ID+":"+db1.Digest); code != http.StatusOK {
		t.Fatalf("carol's click: %d", code)
	}
	waitFor(t, 15*time.Second, "both nodes cordoned", func() (bool, string) {
		return h.cordoned("worker-1") && h.cordoned("db-1"), describe(h.records(nil))
	})

	// Everything healer stores, serves and logs.
	seen := map[string][]byte{}
	for _, tok := range []string{h.srv.APIToken, approverToken("alice")} {
		b, _ := json.Marshal(h.approvals(tok))
		seen["GET /api/v1/approvals"] = append(seen["GET /api/v1/approvals"], b...)
		for _, r := range []approval.Request{w1, db1} {
			seen["GET /api/v1/approvals/"+r.ID] = append(seen["GET /api/v1/approvals/"+r.ID], h.apiGet(approvalPath(r.ID), tok)...)
		}
	}
	for _, r := range h.approvals(h.srv.APIToken) {
		if len(r.Votes) == 0 {
			t.Errorf("request %s has no votes: the test voted through nothing", r.ID)
		}
	}
	cmd = exec.CommandContext(t.Context(), bin, "approvals", "--json", "--server", h.srv.URL(), "--token-file", writeFile(t, "api-cli", h.srv.APIToken))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("healer approvals --json: %v\n%s", err, out)
	}
	seen["healer approvals --json"] = out
	seen["GET /api/v1/audit"] = h.apiGet("/api/v1/audit?limit=1000", h.srv.APIToken)
	seen["the log"] = []byte(h.logs.String())
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		seen["data dir file "+strings.TrimPrefix(path, dataDir)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(seen["GET /api/v1/audit"], []byte("cli:alice")) || !bytes.Contains(seen["GET /api/v1/audit"], []byte("web:bob")) {
		t.Fatalf("the trail does not name the voters: %s", seen["GET /api/v1/audit"])
	}
	for where, b := range seen {
		for name, secret := range secrets {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the %s", where, name)
			}
		}
	}
}

// approvalPath is the API path of one approval request.
func approvalPath(id string) string { return serve.ApprovalsPath + "/" + id }

// approvals lists the approval requests through the API with token.
func (e *approvalEnv) approvals(token string) []approval.Request {
	e.t.Helper()
	var out []approval.Request
	if err := json.Unmarshal(e.apiGet(serve.ApprovalsPath, token), &out); err != nil {
		e.t.Fatalf("approvals: %v", err)
	}
	return out
}

// apiGet returns the body of a GET of path with token.
func (e *approvalEnv) apiGet(path, token string) []byte {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.srv.URL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// webVote approves r on the audit page with an approver's own token, the
// way the page's form posts it.
func (e *approvalEnv) webVote(r approval.Request, token string) {
	e.t.Helper()
	page := string(e.apiGet("/", e.srv.APIToken))
	i := strings.Index(page, `name="csrf" value="`)
	if i < 0 {
		e.t.Fatal("no form token on the page")
	}
	csrf := page[i+len(`name="csrf" value="`):]
	csrf = csrf[:strings.IndexByte(csrf, '"')]
	form := url.Values{"vote": {"approve"}, "token": {token}, "digest": {r.Digest}, "csrf": {csrf}}
	req, _ := http.NewRequestWithContext(e.t.Context(), http.MethodPost, e.srv.URL()+"/approvals/"+r.ID, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+e.srv.APIToken)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("web vote: %d", resp.StatusCode)
	}
}

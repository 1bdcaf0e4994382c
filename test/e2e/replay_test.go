package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/policies"
	"github.com/selfheal/healer/test/testenv"
)

// candidatePolicy leaves canary nodes alone and asks two approvals for a
// cordon elsewhere.
const candidatePolicy = `package healer

import rego.v1

decision := {"remediator": "node.cordon", "params": {"reason": input.event.type}, "approval": "two",
	"reason": "kernel deadlock: cordon, with two approvals", "rule": "cordon_with_approval"} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
	not startswith(input.event.subject, "node/canary-")
}
`

// A candidate policy runs in shadow beside the built-in one: each event
// it would decide otherwise is audited, and nothing acts on it. Then
// `healer replay` replays the recorded events through it and through the
// built-in policies.
func TestShadowPoliciesAndReplay(t *testing.T) {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "candidate.rego"), []byte(candidatePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	kube := testenv.StartKube(t)
	testenv.CreateNodes(t.Context(), t, kube.Client, "worker-1", "worker-2", "canary-1", "db-1", "db-2", "db-3", "db-4", "db-5", "db-6", "db-7")
	cfg := serve.Config{ShadowPolicies: dir, Kubeconfig: kube.KubeconfigPath}
	cfg.Engine.Budget.MinNodes, cfg.Engine.Budget.ZoneMinNodes = 5, 5
	h := startHealer(t, cfg)
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	for i, node := range []string{"worker-1", "canary-1", "worker-2"} {
		if code, body := h.post(alertFor(firing, node, "b00000000000000"+string(rune('1'+i))), h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
	}
	waitFor(t, 10*time.Second, "three decisions", func() (bool, string) {
		recs := h.records(url.Values{"kind": {"decision"}})
		return len(recs) == 3, describe(recs)
	})
	shadow := h.records(url.Values{"kind": {"policy.shadow"}})
	got := map[string]string{}
	for _, r := range shadow {
		var d struct {
			Change string `json:"change"`
		}
		_ = json.Unmarshal(r.Details, &d)
		got[r.Target] = d.Change
	}
	want := map[string]string{"node/worker-1": policies.ChangeDifferent, "node/canary-1": policies.ChangeLess, "node/worker-2": policies.ChangeDifferent}
	if len(got) != 3 || got["node/worker-1"] != want["node/worker-1"] || got["node/canary-1"] != want["node/canary-1"] {
		t.Fatalf("shadow records: %v, want %v\n%s", got, want, describe(shadow))
	}
	// The shadow asked for approval; the live decision did not, and no
	// approval was asked for.
	if recs := h.records(url.Values{"kind": {"approval"}}); len(recs) != 0 {
		t.Fatalf("the shadow policy's approval was acted on: %s", describe(recs))
	}

	tokenFile := writeFile(t, "replay-token", h.srv.APIToken)
	replay := func(args ...string) (string, int) {
		cmd := exec.CommandContext(t.Context(), bin, append([]string{"replay", "--server", h.srv.URL(), "--token-file", tokenFile}, args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := replay("--policies", dir, "--since", "1h", "--fail-on-change")
	if code != 3 {
		t.Fatalf("replay with changes: exit %d, want 3\n%s", code, out)
	}
	for _, want := range []string{
		"3 events since", "0 the same, 0 would act more, 1 would act less, 2 would act differently",
		"node/canary-1", "nothing: no policy rule matched", "(approval two)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, out)
		}
	}
	out, code = replay("--policies", dir, "--since", "1h", "--json")
	var res struct {
		Events  []policies.Replayed    `json:"events"`
		Summary policies.ReplaySummary `json:"summary"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Summary.Less != 1 || len(res.Events) != 3 {
		t.Fatalf("replay --json: exit %d\n%s", code, out)
	}
	// The built-in policies decide as they did.
	out, code = replay("--policies", "../../policies", "--since", "1h", "--fail-on-change", "--changed")
	if code != 0 || !strings.Contains(out, "3 the same") || !strings.Contains(out, "no events to show") {
		t.Fatalf("replay with the live policies: exit %d\n%s", code, out)
	}
	if out, code := replay("--since", "1h"); code != 2 || !strings.Contains(out, "--policies is required") {
		t.Fatalf("replay without --policies: exit %d\n%s", code, out)
	}
}

package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// pauseAPI calls the pauses API with the API token.
func (e *env) pauseAPI(method, path string, body any) (int, []byte) {
	e.t.Helper()
	return e.pauseAPIAs(e.srv.APIToken, method, path, body)
}

// pauseAPIAs calls the pauses API with token.
func (e *env) pauseAPIAs(token, method, path string, body any) (int, []byte) {
	e.t.Helper()
	var buf bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&buf).Encode(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL()+path, &buf)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

// A pause scoped to worker-1 suppresses its cordon with the pause's reason
// and leaves worker-3 alone; the kill switch holds everything; cleared, the
// next alert acts. Setting and clearing are audited with the token's owner
// (whatever "by" claims); the kill switch is cleared only with an
// approver's token; the API needs a token and refuses bad pauses.
func TestPauseHoldsRemediationsBack(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKube(t)
	testenv.CreateNodes(ctx, t, kube.Client, "worker-1", "worker-2", "worker-3", "worker-4", "worker-5",
		"worker-6", "worker-7", "worker-8", "worker-9", "worker-10")
	// A budget of 5 nodes, so only pauses hold cordons back here.
	h := startHealer(t, serve.Config{Kubeconfig: kube.KubeconfigPath, Engine: engine.Config{Budget: guard.BudgetConfig{MinNodes: 5}},
		Approvals: approval.Config{Approvers: []approval.Approver{
			{Name: "alice", TokenFile: approverTokenFile(t, "alice")}, {Name: "carol", TokenFile: approverTokenFile(t, "carol")},
		}}})
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	cordoned := func(node string) bool {
		n, err := kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Spec.Unschedulable
	}

	// Without the token: 401.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL()+serve.PausesPath, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("pauses without a token: %v %v, want 401", resp, err)
	}
	for _, bad := range []map[string]any{
		{"by": "alice"}, // no reason
		{"reason": "r", "by": "a", "for": "soon"},
		{"reason": "r", "by": "a", "remediator": "node.reboot"}, // no such remediator
		{"reason": "r", "by": "a", "colour": "red"},             // unknown field
	} {
		if code, body := h.pauseAPI(http.MethodPost, serve.PausesPath, bad); code != http.StatusBadRequest {
			t.Errorf("POST %v = %d %s, want 400", bad, code, body)
		}
	}

	code, body := h.pauseAPIAs(approverToken("alice"), http.MethodPost, serve.PausesPath, map[string]any{"target": "node/worker-1", "for": "1h", "reason": "firmware update", "by": "mallory"})
	if code != http.StatusCreated {
		t.Fatalf("set pause: %d %s", code, body)
	}
	var p guard.Pause
	if err := json.Unmarshal(body, &p); err != nil || p.ID == "" || time.Until(p.Until) < 59*time.Minute {
		t.Fatalf("pause %s (%v)", body, err)
	}
	if code, body := h.post(firing, h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	var recs []audit.Record
	waitFor(t, 5*time.Second, "worker-1's cordon suppressed by the pause", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/worker-1"}, "kind": {"suppressed"}})
		return len(recs) == 1, describe(recs)
	})
	if r := reason(recs[0]); !strings.Contains(r, "firmware update") || !strings.Contains(r, "by alice") || strings.Contains(r, "mallory") || !strings.Contains(r, p.ID) {
		t.Fatalf("suppressed reason %q: want the pause's reason, who and id", r)
	}
	if cordoned("worker-1") {
		t.Fatal("worker-1 was cordoned while paused")
	}
	// Another node is not in the pause's scope.
	if code, body := h.post(alertFor(firing, "worker-3", "c000000000000003"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "worker-3 cordoned", func() (bool, string) { return cordoned("worker-3"), "schedulable" })

	// The kill switch holds every remediator, on every target.
	code, body = h.pauseAPI(http.MethodPost, serve.PausesPath, map[string]any{"reason": "incident 4711", "by": "bob"})
	if code != http.StatusCreated {
		t.Fatalf("kill switch: %d %s", code, body)
	}
	var kill guard.Pause
	_ = json.Unmarshal(body, &kill)
	if code, body := h.post(alertFor(firing, "worker-5", "c000000000000005"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "worker-5 held by the kill switch", func() (bool, string) {
		recs = h.records(url.Values{"target": {"node/worker-5"}, "kind": {"suppressed"}})
		return len(recs) == 1 && strings.Contains(reason(recs[0]), "kill switch"), describe(recs)
	})

	// The shared API token set the kill switch, but cannot clear it.
	if code, body := h.pauseAPI(http.MethodDelete, serve.PausesPath+"/"+kill.ID, nil); code != http.StatusForbidden {
		t.Fatalf("kill switch cleared with the API token: %d %s, want 403", code, body)
	}
	// Cleared by carol, healer acts again.
	for _, id := range []string{kill.ID, p.ID} {
		if code, body := h.pauseAPIAs(approverToken("carol"), http.MethodDelete, serve.PausesPath+"/"+id, nil); code != http.StatusOK {
			t.Fatalf("clear %s: %d %s", id, code, body)
		}
	}
	if code, _ := h.pauseAPIAs(approverToken("carol"), http.MethodDelete, serve.PausesPath+"/"+p.ID, nil); code != http.StatusNotFound {
		t.Fatalf("clearing twice: %d, want 404", code)
	}
	if code, body := h.post(alertFor(firing, "worker-7", "c000000000000007"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "worker-7 cordoned after the pauses were cleared", func() (bool, string) { return cordoned("worker-7"), "schedulable" })

	set := h.records(url.Values{"kind": {"pause.set"}})
	cleared := h.records(url.Values{"kind": {"pause.cleared"}})
	if len(set) != 2 || len(cleared) != 2 || set[0].Actor != "api:alice" || set[1].Actor != "api" || cleared[0].Actor != "api:carol" {
		t.Fatalf("pause records: set %s cleared %s", describe(set), describe(cleared))
	}
	if res := audit.VerifyRecords(h.records(url.Values{"after": {"0"}})); !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
}

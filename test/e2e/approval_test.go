package e2e

import (
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/chatops"
	"github.com/selfheal/healer/chatops/chatopstest"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// approvalPolicy cordons a deadlocked node once people approve: two of
// them for workers, one for the rest.
const approvalPolicy = `package healer

import rego.v1

decision := {"remediator": "node.cordon", "params": {"reason": "KernelDeadlock"},
	"approval": approval, "reason": "kernel deadlock: cordon", "rule": "cordon_deadlocked"} if {
	input.event.type == "NodeKernelDeadlock"
	input.event.status == "firing"
}

approval := "two" if startswith(input.event.subject, "node/worker-") else := "one"
`

const slackSecret = "e2e-signing-secret-0123456789abcdef"

type approvalEnv struct {
	*env
	kube  *testenv.Kube
	slack *chatopstest.Slack
}

// startApprovalHealer runs healer with approvalPolicy and approvers alice,
// bob and carol, and, with withSlack, the Slack app on a test Slack. Five
// nodes may be out of service at once.
func startApprovalHealer(t *testing.T, withSlack bool, nodes ...string) *approvalEnv {
	return startApprovalHealerBudget(t, withSlack, 5, nodes...)
}

func startApprovalHealerBudget(t *testing.T, withSlack bool, budget int, nodes ...string) *approvalEnv {
	t.Helper()
	return startApprovalHealerWith(t, withSlack, budget, func(*serve.Config) {}, nodes...)
}

// startApprovalHealerWith is startApprovalHealerBudget with the
// configuration changed by mutate before serve starts.
func startApprovalHealerWith(t *testing.T, withSlack bool, budget int, mutate func(*serve.Config), nodes ...string) *approvalEnv {
	t.Helper()
	kube := testenv.StartKube(t)
	testenv.CreateNodes(t.Context(), t, kube.Client, append([]string{"m1", "m2", "m3", "m4", "m5", "m6", "m7"}, nodes...)...)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "approval.rego"), []byte(approvalPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := serve.Config{Kubeconfig: kube.KubeconfigPath, Policies: dir}
	cfg.Engine.Budget.MinNodes, cfg.Engine.Budget.ZoneMinNodes = budget, budget
	cfg.Approvals = approval.Config{Approvers: []approval.Approver{
		{Name: "alice", Slack: "UALICE", TokenFile: approverTokenFile(t, "alice")},
		{Name: "bob", Slack: "UBOB", TokenFile: approverTokenFile(t, "bob")},
		{Name: "carol", Slack: "UCAROL", TokenFile: approverTokenFile(t, "carol")},
	}}
	ae := &approvalEnv{kube: kube}
	if withSlack {
		ae.slack = chatopstest.Start(t, nil)
		cfg.Slack = chatops.Config{
			BotTokenFile: writeFile(t, "slack-token", "xoxb-e2e"), SigningSecretFile: writeFile(t, "slack-secret", slackSecret),
			Channel: "COPS", APIURL: ae.slack.APIURL(), ExternalURL: "https://healer.example.org",
		}
	}
	mutate(&cfg)
	ae.env = startHealer(t, cfg)
	return ae
}

// approverToken is the personal token of an approver in these tests.
func approverToken(name string) string { return "e2e-approver-token-of-" + name + "-0123456789abcdef" }

func approverTokenFile(t *testing.T, name string) string {
	t.Helper()
	return writeFile(t, name+"-token", approverToken(name))
}

func (e *approvalEnv) cordoned(node string) bool {
	e.t.Helper()
	n, err := e.kube.Client.CoreV1().Nodes().Get(e.t.Context(), node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return n.Spec.Unschedulable
}

// click presses a button of an approval message as user, signed as Slack
// signs it.
func (e *approvalEnv) click(user, actionID, value string) int {
	e.t.Helper()
	body := chatopstest.Click(user, "COPS", actionID, value)
	req, _ := http.NewRequestWithContext(e.t.Context(), http.MethodPost, e.srv.URL()+chatops.InteractionsPath, strings.NewReader(body))
	chatopstest.Sign(req, body, time.Now(), slackSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// posted waits for the approval message about target and returns its
// buttons' value.
func (e *approvalEnv) posted(target string) string {
	e.t.Helper()
	var value string
	waitFor(e.t.(*testing.T), 10*time.Second, "the approval message for "+target, func() (bool, string) {
		for _, m := range e.slack.Posted() {
			if strings.Contains(m.Get("text"), target) {
				value = chatopstest.ButtonValue(m.Get("blocks"), chatops.ActionApprove)
			}
		}
		return value != "", "not posted"
	})
	return value
}

// An alert whose cordon needs two approvals is posted to Slack; a second
// click by the same person and the requester's click do not count; the
// second approver's click lets the cordon happen, and the message follows
// the action to verified. A denial suppresses. Every step is audited.
func TestSlackApprovalsGateACordon(t *testing.T) {
	h := startApprovalHealer(t, true, "worker-1", "worker-2")
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	// carol asked for this one (an annotation on the alert).
	asked := strings.Replace(string(firing), `"summary": "Kernel deadlock on worker-1"`, `"summary": "Kernel deadlock on worker-1", "requested_by": "carol"`, 1)
	if code, body := h.post([]byte(asked), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	value := h.posted("node/worker-1")
	blocks := h.slack.Posted()[0].Get("blocks")
	for _, want := range []string{"cordon_deadlocked", "kernel deadlock: cordon", "https://healer.example.org/runbooks/node.cordon.md", "Blast radius", "Requested by carol"} {
		if !strings.Contains(blocks, want) {
			t.Errorf("approval message lacks %q", want)
		}
	}
	if code := h.click("UALICE", chatops.ActionApprove, value); code != http.StatusOK {
		t.Fatalf("alice's click: %d", code)
	}
	time.Sleep(1100 * time.Millisecond) // Slack's timestamp is in seconds; a new one, so these are not replays
	h.click("UALICE", chatops.ActionApprove, value)
	h.click("UCAROL", chatops.ActionApprove, value)
	waitFor(t, 5*time.Second, "two refusals", func() (bool, string) { return len(h.slack.Ephemeral()) == 2, "" })
	if h.cordoned("worker-1") {
		t.Fatal("worker-1 cordoned before the second approval")
	}
	if eph := h.slack.Ephemeral(); !strings.Contains(eph[0].Get("text"), "already approved") || !strings.Contains(eph[1].Get("text"), "requester") {
		t.Fatalf("refusals: %v", eph)
	}
	h.click("UBOB", chatops.ActionApprove, value)
	waitFor(t, 10*time.Second, "worker-1 cordoned", func() (bool, string) { return h.cordoned("worker-1"), "schedulable" })
	waitFor(t, 10*time.Second, "the message to show the action verified", func() (bool, string) {
		u := h.slack.Updated()
		if len(u) == 0 {
			return false, "not updated"
		}
		last := u[len(u)-1].Get("blocks")
		return strings.Contains(last, "Approved by alice and bob") && strings.Contains(last, "verified"), last
	})

	recs := h.records(url.Values{"target": {"node/worker-1"}})
	var chain []string
	for _, r := range recs {
		chain = append(chain, string(r.Kind)+"/"+r.Actor)
	}
	want := []string{"event/healer/engine", "decision/healer/engine", "approval/healer/engine", "approval/slack:alice",
		"approval/slack:bob", "approval/healer/engine", "action.started/healer/engine", "action.finished/healer/engine", "verified/healer/engine"}
	if !testenv.IsSubsequence(chain, want) {
		t.Fatalf("records of worker-1:\n%s\nwant in order %v", strings.Join(chain, "\n"), want)
	}

	// Denied: nothing is done, and the suppressed record says who denied.
	if code, body := h.post(alertFor(firing, "worker-2", "d000000000000002"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	value = h.posted("node/worker-2")
	h.click("UCAROL", chatops.ActionDeny, value)
	var sup []audit.Record
	waitFor(t, 10*time.Second, "worker-2's cordon suppressed", func() (bool, string) {
		sup = h.records(url.Values{"target": {"node/worker-2"}, "kind": {"suppressed"}})
		return len(sup) == 1, describe(sup)
	})
	if r := reason(sup[0]); !strings.Contains(r, "denied by carol") {
		t.Fatalf("suppressed because %q", r)
	}
	if h.cordoned("worker-2") {
		t.Fatal("worker-2 cordoned although denied")
	}
	res, err := h.srv.Trail().Verify(t.Context())
	if err != nil || !res.OK {
		t.Fatalf("audit chain: %+v %v", res, err)
	}
	h.noSecretsLogged("xoxb-e2e", slackSecret, approverToken("alice"), h.srv.APIToken, h.srv.WebhookToken)
}

// Without Slack, `healer approvals` lists the request and `healer approve`
// approves it with the approver's own token; the shared API token and a
// made-up token cannot vote.
func TestCLIApproval(t *testing.T) {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	h := startApprovalHealer(t, false, "db-1")
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	if code, body := h.post(alertFor(firing, "db-1", "e000000000000001"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	apiToken := writeFile(t, "cli-token", h.srv.APIToken)
	cli := func(tokenFile string, args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), bin, append(args, "--server", h.srv.URL(), "--token-file", tokenFile)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var id string
	waitFor(t, 10*time.Second, "the request listed", func() (bool, string) {
		out, _ := cli(apiToken, "approvals")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "node/db-1") && strings.Contains(line, "pending") {
				id = strings.Fields(line)[0]
			}
		}
		return id != "", out
	})
	bob := writeFile(t, "bob-cli-token", approverToken("bob"))
	if out, err := cli(apiToken, "approve", id); err == nil || !strings.Contains(out, "approver's own token") {
		t.Fatalf("approve with the shared API token: %v\n%s", err, out)
	}
	if out, err := cli(writeFile(t, "mallory-token", "mallory-guessed-a-token"), "approve", id); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("approve with a made-up token: %v\n%s", err, out)
	}
	if out, err := cli(bob, "approve", id, "--digest", "0000"); err == nil || !strings.Contains(out, "the action changed") {
		t.Fatalf("approve with a stale digest: %v\n%s", err, out)
	}
	if h.cordoned("db-1") {
		t.Fatal("db-1 cordoned before approval")
	}
	out, err := cli(bob, "approve", id, "--reason", "checked the console")
	if err != nil || !strings.Contains(out, "counted: approved by bob") || !strings.Contains(out, "node.cordon on node/db-1") {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "db-1 cordoned", func() (bool, string) { return h.cordoned("db-1"), describe(h.records(nil)) })
	if out, err := cli(writeFile(t, "alice-cli-token", approverToken("alice")), "deny", id); err == nil || !strings.Contains(out, "already decided") {
		t.Fatalf("deny after approval: %v\n%s", err, out)
	}
	h.noSecretsLogged(approverToken("alice"), approverToken("bob"), "mallory-guessed-a-token", h.srv.APIToken)
	votes := h.records(url.Values{"target": {"node/db-1"}, "kind": {"approval"}})
	if len(votes) != 3 || votes[1].Actor != "cli:bob" || !strings.Contains(string(votes[1].Details), "checked the console") {
		t.Fatalf("approval records: %s", describe(votes))
	}
}

// When the blast-radius budget runs out, the channel hears it once, with
// the runbook.
func TestSlackNoticeWhenBudgetExhausted(t *testing.T) {
	h := startApprovalHealerBudget(t, true, 1, "db-1", "db-2", "db-3")
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	if code, body := h.post(alertFor(firing, "db-1", "a100000000000001"), h.srv.WebhookToken); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	h.click("UALICE", chatops.ActionApprove, h.posted("node/db-1"))
	waitFor(t, 10*time.Second, "db-1 cordoned", func() (bool, string) { return h.cordoned("db-1"), "schedulable" })
	for i, node := range []string{"db-2", "db-3"} {
		if code, body := h.post(alertFor(firing, node, "a10000000000000"+string(rune('2'+i))), h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
	}
	waitFor(t, 10*time.Second, "db-2 and db-3 held by the budget", func() (bool, string) {
		recs := h.records(url.Values{"kind": {"suppressed"}})
		return len(recs) == 2, describe(recs)
	})
	var notices []string
	waitFor(t, 5*time.Second, "the notice", func() (bool, string) {
		notices = nil
		for _, m := range h.slack.Posted() {
			if strings.Contains(m.Get("text"), "budget exhausted") {
				notices = append(notices, m.Get("blocks"))
			}
		}
		return len(notices) == 1, strings.Join(notices, "\n")
	})
	if !strings.Contains(notices[0], "https://healer.example.org/runbooks/node.cordon.md") {
		t.Fatalf("notice without the runbook: %s", notices[0])
	}
	time.Sleep(200 * time.Millisecond) // a second notice would have been posted by now
	n := 0
	for _, m := range h.slack.Posted() {
		if strings.Contains(m.Get("text"), "budget exhausted") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d budget notices, want 1 (repeats are held back)", n)
	}
}

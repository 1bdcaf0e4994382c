package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/selfheal/healer/test/testenv"
)

// browser starts headless Chromium (Debian's chromium, which .ci/run
// installs) for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (apt-get install chromium; .ci/run does): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
	alloc, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

// On-call opens the audit page in a browser: signs in, approves the
// pending cordon with the page's buttons, sees the action's records arrive
// live, filters, opens a record and finds the event's whole chain, its
// chain status and runbook. A screenshot of the record is kept.
func TestAuditPageInChromium(t *testing.T) {
	h := startApprovalHealer(t, false, "db-1")
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	if code, body := h.post(alertFor(firing, "db-1", "f000000000000001"), h.srv.WebhookToken); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	ctx := browser(t)
	base := h.srv.URL()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	do("sign in with a wrong token",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(`input[name=token]`),
		chromedp.SendKeys(`input[name=token]`, "not-the-token"),
		chromedp.Submit(`input[name=token]`),
		chromedp.WaitVisible(`p.error`))
	if msg := text(`p.error`); !strings.Contains(msg, "not the API token") {
		t.Fatalf("wrong token: %q", msg)
	}

	do("sign in",
		chromedp.SendKeys(`input[name=token]`, h.srv.APIToken),
		chromedp.Submit(`input[name=token]`),
		chromedp.WaitVisible(`#approvals`),
		chromedp.WaitVisible(`div.approval`))
	pending := text(`div.approval`)
	for _, want := range []string{"node.cordon", "node/db-1", "cordon_deadlocked", "needs 1, has 0"} {
		if !strings.Contains(pending, want) {
			t.Errorf("pending approval lacks %q: %s", want, pending)
		}
	}
	if h.cordoned("db-1") {
		t.Fatal("db-1 cordoned before approval")
	}

	// Approve as alice; the page comes back with the outcome, and the
	// action's records arrive without a reload.
	do("approve",
		chromedp.SendKeys(`div.approval input[name=token]`, approverToken("alice")),
		chromedp.Click(`div.approval button.approve`),
		chromedp.WaitVisible(`#flash`))
	if flash := text(`#flash`); !strings.Contains(flash, "approval by alice counted") {
		t.Fatalf("after approving: %q", flash)
	}
	waitFor(t, 10*time.Second, "db-1 cordoned", func() (bool, string) { return h.cordoned("db-1"), "schedulable" })
	do("live records", chromedp.WaitVisible(`#records tr.verified.new`))
	liveRows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#records tr.new').length`))
	if err != nil || liveRows < 1 { // verified at least; earlier ones may have come with the page
		t.Fatalf("%d records arrived live (%v), want the action's", liveRows, err)
	}

	// Filter by target and kind.
	do("filter",
		chromedp.SetValue(`#filters input[name=target]`, "node/db-1"),
		chromedp.SetValue(`#filters select[name=kind]`, "verified"),
		chromedp.Click(`#filters button`),
		// The filtered page, rendered by the server with the filter's values.
		chromedp.WaitVisible(`#filters input[name=target][value="node/db-1"]`))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#records tr')).map(tr => tr.children[2].textContent + ' ' + tr.children[3].textContent)`))
	if err != nil || len(rows) != 1 || rows[0] != "verified node/db-1" {
		t.Fatalf("filtered rows = %q (%v), want the one verified record of node/db-1", rows, err)
	}

	// Open the record: the whole chain of its event, its status, its runbook.
	do("open record", chromedp.Click(`#records tr.verified a`), chromedp.WaitVisible(`#chain-status`))
	status, chain := text(`#chain-status`), text(`#chain`)
	rb, err := chromedp.Run(ctx, chromedp.AttributeValue(`#runbook`, "href"))
	if err != nil {
		t.Fatal(err)
	}
	runbook := rb.Value
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is a PNG
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "Chain intact") {
		t.Errorf("chain status: %q", status)
	}
	if !strings.Contains(text(`#fields`), "node/db-1") || !strings.Contains(text(`#details`), "{") {
		t.Errorf("record fields or details missing")
	}
	order := []string{"event", "decision", "approval", "approval", "approval", "action.started", "action.finished", "verified"}
	var kinds []string
	for _, line := range strings.Split(chain, "\n") {
		if f := strings.Fields(line); len(f) > 3 {
			kinds = append(kinds, f[3])
		}
	}
	if !testenv.IsSubsequence(kinds, order) {
		t.Errorf("the event's chain shows %v, want in order %v:\n%s", kinds, order, chain)
	}
	if runbook != "/runbooks/node.cordon.md" {
		t.Errorf("runbook link %q", runbook)
	}
	if len(shot) < 1000 {
		t.Fatalf("screenshot of %d bytes", len(shot))
	}
	out := filepath.Join(t.ArtifactDir(), "audit-record.png")
	if err := os.WriteFile(out, shot, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", out)

	do("runbook", chromedp.Navigate(base+runbook), chromedp.WaitVisible(`pre.runbook`))
	if rbText := text(`pre.runbook`); !strings.Contains(rbText, "cordon") {
		t.Fatalf("runbook page: %.200s", rbText)
	}
}

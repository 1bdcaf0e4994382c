package chatops

import (
	"strings"
	"testing"

	"github.com/selfheal/healer/chatops/chatopstest"
)

// FuzzInteractionPayload feeds arbitrary bodies to the interaction
// parser: it never panics, and a click it returns always came from one of
// healer's two buttons with a user.
func FuzzInteractionPayload(f *testing.F) {
	f.Add(chatopstest.Click("UALICE", "C1", ActionApprove, "apr-0123456789:"+strings.Repeat("a", 64)))
	f.Add(chatopstest.Click("UBOB", "C1", ActionDeny, "apr-0123456789"))
	f.Add(chatopstest.Click("", "", "other_action", ":::"))
	f.Add(`payload={"type":"view_submission"}`)
	f.Add(`payload={"type":"block_actions","actions":[null,{"action_id":"healer_approve"}]}`)
	f.Add(`payload=%7B`)
	f.Add("")
	f.Fuzz(func(t *testing.T, body string) {
		clicks, err := parseClicks([]byte(body))
		if err != nil && len(clicks) > 0 {
			t.Fatalf("clicks %v with error %v", clicks, err)
		}
		for _, c := range clicks {
			if strings.Contains(c.id, ":") {
				t.Fatalf("id %q keeps the separator", c.id)
			}
		}
	})
}

// FuzzSlashScope feeds arbitrary /healer pause arguments to the scope
// parser: it never panics, and what it accepts is a valid pause scope.
func FuzzSlashScope(f *testing.F) {
	for _, s := range []string{"", "node.drain node/worker-* for 2h : kernel upgrade", "for", "for -1h", "[", "node/a node/b", ": only a reason", "node.drain node.cordon"} {
		f.Add(s)
	}
	known := func(n string) bool { return n == "node.drain" || n == "node.cordon" }
	f.Fuzz(func(t *testing.T, text string) {
		sc, err := parseScope(strings.Fields(text), known)
		if err != nil {
			return
		}
		if sc.remediator != "" && !known(sc.remediator) {
			t.Fatalf("unknown remediator %q accepted", sc.remediator)
		}
		if sc.dur < 0 {
			t.Fatalf("negative duration %s", sc.dur)
		}
	})
}

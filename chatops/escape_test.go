package chatops

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine"
)

// evil is alert text that would ping the channel, forge a link, start an
// entity and close a code span if healer passed it on as written.
const evil = "<!channel> <https://evil.example|approve here> & `x` <@U123>"

// Its escaped forms: as text, and inside a code span.
const (
	evilText = "&lt;!channel&gt; &lt;https://evil.example|approve here&gt; &amp; `x` &lt;@U123&gt;"
	evilCode = "&lt;!channel&gt; &lt;https://evil.example|approve here&gt; &amp; ˋxˋ &lt;@U123&gt;"
)

// slackText is every string of a message as Slack reads it: the text
// field, and the strings inside its blocks (posted as JSON, whose encoder
// writes < > & as \u003c \u003e \u0026, so they are decoded first).
func slackText(t *testing.T, v url.Values) string {
	t.Helper()
	out := []string{v.Get("text")}
	if b := v.Get("blocks"); b != "" {
		var blocks any
		if err := json.Unmarshal([]byte(b), &blocks); err != nil {
			t.Fatalf("blocks: %v: %s", err, b)
		}
		var walk func(any)
		walk = func(x any) {
			switch x := x.(type) {
			case string:
				out = append(out, x)
			case []any:
				for _, e := range x {
					walk(e)
				}
			case map[string]any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(blocks)
	}
	return strings.Join(out, "\n")
}

// assertOnlyHealersMarkup fails when text has markup healer did not write:
// every < opens one of healer's own dates or links, and every & is one of
// the three entities.
func assertOnlyHealersMarkup(t *testing.T, what, text string) {
	t.Helper()
	for _, raw := range []string{"<!channel>", "<https://evil", "<@U123>"} {
		if strings.Contains(text, raw) {
			t.Errorf("%s has %q as written:\n%s", what, raw, text)
		}
	}
	for i := strings.Index(text, "<"); i >= 0; i = next(text, i, "<") {
		rest := text[i:]
		if !strings.HasPrefix(rest, "<!date^") && !strings.HasPrefix(rest, "<https://healer.example.org/") && !strings.HasPrefix(rest, "<@UALICE>") {
			t.Errorf("%s: markup healer did not write at %q", what, rest[:min(len(rest), 40)])
		}
	}
	bare := strings.NewReplacer("&amp;", "", "&lt;", "", "&gt;", "").Replace(text)
	if i := strings.Index(bare, "&"); i >= 0 {
		t.Errorf("%s: a bare & at %q", what, bare[i:min(len(bare), i+40)])
	}
}

func next(s string, i int, sub string) int {
	j := strings.Index(s[i+1:], sub)
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

func TestAlertTextIsEscaped(t *testing.T) {
	a := newApp(t)
	ar := drainRequest(1)
	ar.Target = "node/" + evil
	ar.Reason = evil
	ar.Rule = evil
	ar.Params = map[string]any{"grace": evil}
	ar.Budget = evil
	ar.Requester = evil
	ar.Runbook = "runbooks/node.drain.md>|<!channel"
	_, req := a.ask(t, ar)

	posted := a.fake.Posted()
	if len(posted) != 1 {
		t.Fatalf("posted %v", posted)
	}
	msg := slackText(t, posted[0])
	assertOnlyHealersMarkup(t, "approval request", msg)
	for _, want := range []string{
		"*Target*\n`node/" + evilCode + "`", // the span is not closed early
		"*Why*: rule `" + evilCode + "`: " + evilText,
		"*Blast radius*\n" + evilText,
		"*Params*\n`{\"grace\":\"" + evilCode + "\"}`",
		"Requested by " + evilText + ", who cannot approve it.",
		"<https://healer.example.org/runbooks/node.drain.md%3E%7C%3C!channel|Runbook>",
		"healer asks approval (" + req.ID + "): node.drain on node/" + evilText,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("request lacks %q:\n%s", want, msg)
		}
	}

	// A deny reason typed in Slack is shown on the message and in the
	// answer, and the step audited next on the message.
	answer := a.run(t, "UBOB", "deny "+req.ID+" "+evil)
	assertOnlyHealersMarkup(t, "answer to deny", answer.Text)
	if !strings.Contains(answer.Text, "denied by bob: "+evilText) {
		t.Errorf("answer to deny: %q", answer.Text)
	}
	if _, err := a.trail.Append(t.Context(), audit.Record{Kind: audit.KindSuppressed, EventID: ar.EventID, Target: ar.Target,
		Remediator: ar.Remediator, Actor: "healer/engine", Details: audit.Details("reason", evil)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the step on the message", func() bool {
		u := a.fake.Updated()
		return len(u) > 0 && strings.Contains(slackText(t, u[len(u)-1]), "not done: ")
	})
	for i, u := range a.fake.Updated() {
		assertOnlyHealersMarkup(t, fmt.Sprintf("update %d", i), slackText(t, u))
	}
	last := slackText(t, a.fake.Updated()[len(a.fake.Updated())-1])
	for _, want := range []string{"*Denied by bob: " + evilText + "*", "not done: " + evilText} {
		if !strings.Contains(last, want) {
			t.Errorf("updated message lacks %q:\n%s", want, last)
		}
	}

	// A notice.
	a.slack.Notify(t.Context(), engine.Notice{Kind: engine.NoticeBudgetExhausted, Remediator: "node.drain", Target: "node/" + evil, Text: evil})
	eventually(t, "the notice", func() bool { return len(a.fake.Posted()) == 2 })
	notice := slackText(t, a.fake.Posted()[1])
	assertOnlyHealersMarkup(t, "notice", notice)
	if !strings.Contains(notice, evilText+"\nTarget: `node/"+evilCode+"`") {
		t.Errorf("notice:\n%s", notice)
	}

	// Refusals and answers that echo what was sent.
	a.send(t, InteractionsPath, click("UALICE", ActionApprove, evil+":"+req.Digest), time.Now(), signingSecret)
	eventually(t, "the refusal", func() bool { return len(a.fake.Ephemeral()) == 1 })
	assertOnlyHealersMarkup(t, "refusal", a.fake.Ephemeral()[0].Get("text"))
	for _, text := range []string{evil, "approve " + evil, "pause node/" + evil, "pause node/<!channel>* : " + evil, "status", "resume node/<!here>*"} {
		assertOnlyHealersMarkup(t, "/healer "+text, a.run(t, "UALICE", text).Text)
	}
}

func TestAlertTextIsCapped(t *testing.T) {
	a := newApp(t)
	ar := drainRequest(1)
	ar.Target = "node/" + strings.Repeat("<", 5000)
	ar.Reason = strings.Repeat("&", 10000)
	ar.Budget = strings.Repeat("b", 10000)
	a.ask(t, ar)
	var blocks []struct {
		Type   string `json:"type"`
		Text   *struct{ Text string }
		Fields []struct{ Text string }
	}
	if err := json.Unmarshal([]byte(a.fake.Posted()[0].Get("blocks")), &blocks); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		// Slack's limits: a header 150 characters, a section 3,000, a
		// section field 2,000.
		limit := map[string]int{"header": 150, "section": 3000}[b.Type]
		if b.Text != nil && limit > 0 && utf8.RuneCountInString(b.Text.Text) > limit {
			t.Errorf("%s block of %d characters, Slack takes %d", b.Type, utf8.RuneCountInString(b.Text.Text), limit)
		}
		for _, f := range b.Fields {
			if n := utf8.RuneCountInString(f.Text); n > 2000 {
				t.Errorf("section field of %d characters, Slack takes 2000", n)
			}
		}
	}
}

func TestEsc(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain text as written", "node/worker-3", 300, "node/worker-3"},
		{"the three control characters", "a<b>c&d", 300, "a&lt;b&gt;c&amp;d"},
		{"a mention", "<!channel>", 300, "&lt;!channel&gt;"},
		{"entities are escaped again", "&lt;", 300, "&amp;lt;"},
		{"cut with an ellipsis", "abcdef", 4, "abc…"},
		{"fits exactly", "abcd", 4, "abcd"},
		{"an entity is not cut in half", "ab<cd", 6, "ab…"},
		{"counted in characters, not bytes", "ééééé", 3, "éé…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := esc(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("esc(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if n := utf8.RuneCountInString(got); n > tc.max {
				t.Errorf("esc(%q, %d) is %d characters long", tc.in, tc.max, n)
			}
		})
	}
	if got, want := code("a`b\nc<", 300), "`aˋb c&lt;`"; got != want {
		t.Errorf("code = %q, want %q", got, want)
	}
}

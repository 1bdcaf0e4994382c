package chatops

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/slack-go/slack"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus/bustest"
	"github.com/selfheal/healer/chatops/chatopstest"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/engine/guard"
)

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memPauses stores pauses in the real pause bucket, without audit.
type memPauses struct{ ps *guard.Pauses }

func (m memPauses) SetPause(ctx context.Context, p *guard.Pause, _ string) error {
	return m.ps.Set(ctx, p)
}
func (m memPauses) ClearPause(ctx context.Context, id, _ string) (guard.Pause, error) {
	return m.ps.Clear(ctx, id)
}
func (m memPauses) List() []guard.Pause { return m.ps.List() }
func (m memPauses) Known(remediator string) bool {
	return remediator == "node.drain" || remediator == "node.cordon"
}

type app struct {
	slack  *Slack
	fake   *chatopstest.Slack
	broker *approval.Broker
	trail  *audit.Trail
	pauses *guard.Pauses
	kv     jetstream.KeyValue
	web    *httptest.Server
}

func newApp(t *testing.T) *app {
	t.Helper()
	srv := bustest.Start(t)
	srv.Streams(t)
	log := slog.New(slog.DiscardHandler)
	trail := audit.NewTrail(srv.JS, log)
	kv, err := approval.EnsureBucket(t.Context(), srv.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	broker, err := approval.NewBroker(approval.Config{
		Approvers:   []approval.Approver{{Name: "alice", Slack: "UALICE"}, {Name: "bob", Slack: "UBOB"}},
		SlackGroups: []string{"SONCALL"},
	}, kv, trail, log)
	if err != nil {
		t.Fatal(err)
	}
	replay, err := EnsureReplayBucket(t.Context(), srv.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	pkv, err := guard.EnsurePauseBucket(t.Context(), srv.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	pauses := guard.NewPauses(pkv, log)
	ctx, cancel := context.WithCancel(t.Context())
	go pauses.Run(ctx)
	if err := pauses.WaitSynced(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	fake := chatopstest.Start(t, map[string][]string{"SONCALL": {"UDAVE", "UERIN"}})
	s, err := New(Config{Channel: "CHEALER", APIURL: fake.APIURL(), ExternalURL: "https://healer.example.org"},
		Secrets{BotToken: "xoxb-test", SigningSecret: signingSecret},
		Deps{Broker: broker, Pauses: memPauses{pauses}, Trail: trail, Replay: replay, Log: log,
			Status: func(context.Context) []string { return []string{"*Breakers*: all closed"} }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+InteractionsPath, s.ServeInteractions)
	mux.HandleFunc("POST "+CommandsPath, s.ServeCommands)
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)
	return &app{slack: s, fake: fake, broker: broker, trail: trail, pauses: pauses, kv: kv, web: web}
}

// send posts body to path as Slack would, signed at ts with secret.
func (a *app) send(t *testing.T, path, body string, ts time.Time, secret string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.web.URL+path, strings.NewReader(body))
	chatopstest.Sign(req, body, ts, secret)
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// run runs "/healer text" as user and returns healer's answer.
func (a *app) run(t *testing.T, user, text string) slack.Msg {
	t.Helper()
	code, body := a.send(t, CommandsPath, command(user, text), time.Now(), signingSecret)
	if code != http.StatusOK {
		t.Fatalf("/healer %s: %d %s", text, code, body)
	}
	var m slack.Msg
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("/healer %s: %v: %s", text, err, body)
	}
	return m
}

func click(user, actionID, value string) string {
	return chatopstest.Click(user, "CHEALER", actionID, value)
}

func command(user, text string) string { return chatopstest.Command(user, "CHEALER", text) }

type answer struct {
	a   engine.Approval
	err error
}

// ask runs the engine's side of an approval and waits until it is posted.
func (a *app) ask(t *testing.T, ar engine.ApprovalRequest) (<-chan answer, approval.Request) {
	t.Helper()
	ch := make(chan answer, 1)
	go func() {
		ans, err := a.broker.Approve(t.Context(), ar)
		ch <- answer{ans, err}
	}()
	var req approval.Request
	eventually(t, "the request's message", func() bool {
		r, err := a.broker.Get(t.Context(), approval.ID(ar.Key))
		req = r
		return err == nil && r.Message != nil
	})
	return ch, req
}

func drainRequest(need int) engine.ApprovalRequest {
	return engine.ApprovalRequest{
		Key: "act.k1", EventID: "ev-1", Target: "node/worker-3", Remediator: "node.drain", Approvals: need,
		Reason: "kernel deadlock for 10m", Rule: "drain_deadlocked", Params: map[string]any{"grace": "60s"},
		Runbook: "runbooks/node.drain.md", Budget: "1 of 40 nodes out of service or in flight (this one included), 4 allowed",
		Requester: "UERIN",
	}
}

func TestTwoApprovalsFromSlackButtons(t *testing.T) {
	a := newApp(t)
	ch, req := a.ask(t, drainRequest(2))

	posted := a.fake.Posted()
	if len(posted) != 1 || posted[0].Get("channel") != "CHEALER" {
		t.Fatalf("posted %v", posted)
	}
	blocks := posted[0].Get("blocks")
	for _, want := range []string{
		"node.drain", "node/worker-3", "drain_deadlocked", "kernel deadlock for 10m", `{\"grace\":\"60s\"}`,
		"1 of 40 nodes", "https://healer.example.org/runbooks/node.drain.md", "2 approvals from different people",
		ActionApprove, ActionDeny, req.ID + ":" + req.Digest, "Requested by UERIN",
	} {
		if !strings.Contains(blocks, want) {
			t.Errorf("message lacks %q:\n%s", want, blocks)
		}
	}
	value := req.ID + ":" + req.Digest
	now := time.Now()

	if code, body := a.send(t, InteractionsPath, click("UALICE", ActionApprove, value), now, signingSecret); code != http.StatusOK {
		t.Fatalf("alice's click: %d %s", code, body)
	}
	// alice again (a new request, so not a replay), the requester, and a
	// stranger do not count; each is told why.
	a.send(t, InteractionsPath, click("UALICE", ActionApprove, value), now.Add(time.Second), signingSecret)
	a.send(t, InteractionsPath, click("UERIN", ActionApprove, value), now.Add(2*time.Second), signingSecret)
	a.send(t, InteractionsPath, click("UMALLORY", ActionApprove, value), now.Add(3*time.Second), signingSecret)
	// A button of another version of the action does not count.
	a.send(t, InteractionsPath, click("UBOB", ActionApprove, req.ID+":"+strings.Repeat("0", 64)), now.Add(4*time.Second), signingSecret)
	// A member of the approver group who is not a configured approver
	// cannot be the second of two people: they might be alice again.
	a.send(t, InteractionsPath, click("UDAVE", ActionApprove, value), now.Add(5*time.Second), signingSecret)
	eventually(t, "five refusals", func() bool { return len(a.fake.Ephemeral()) == 5 })
	updated, eph := a.fake.Updated(), a.fake.Ephemeral()
	for i, want := range []string{"already approved by this person", "requester", "not a configured approver", "changed since it was shown", "where two people must agree"} {
		if got := eph[i].Get("text"); !strings.Contains(got, want) || eph[i].Get("user") == "" {
			t.Errorf("refusal %d = %q (user %q), want %q", i, got, eph[i].Get("user"), want)
		}
	}
	if len(updated) != 1 || !strings.Contains(updated[0].Get("blocks"), "1 of 2: approved by alice") {
		t.Fatalf("after alice's approval the message shows %v", updated)
	}
	select {
	case got := <-ch:
		t.Fatalf("answered with one approval: %+v", got)
	default:
	}

	// bob is the second person.
	a.send(t, InteractionsPath, click("UBOB", ActionApprove, value), now.Add(6*time.Second), signingSecret)
	var got answer
	select {
	case got = <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after two approvals")
	}
	if got.err != nil || !got.a.Approved || strings.Join(got.a.By, ",") != "alice,bob" {
		t.Fatalf("answer = %+v", got)
	}
	eventually(t, "the message showing the outcome", func() bool {
		u := a.fake.Updated()
		return len(u) >= 2 && strings.Contains(u[len(u)-1].Get("blocks"), "Approved by alice and bob")
	})
	updated = a.fake.Updated()
	if strings.Contains(updated[len(updated)-1].Get("blocks"), ActionApprove) {
		t.Fatal("buttons still shown after the decision")
	}

	// The action's steps, as the engine audits them, appear on the message.
	for _, rec := range []audit.Record{
		{Kind: audit.KindActionStarted, EventID: "ev-1", Target: "node/worker-3", Remediator: "node.drain", Actor: "healer/engine"},
		{Kind: audit.KindActionProgress, EventID: "ev-1", Target: "node/worker-3", Remediator: "node.drain", Actor: "healer/engine", Details: audit.Details("step", "evicting", "message", "3 of 7 pods evicted")},
		{Kind: audit.KindVerified, EventID: "ev-1", Target: "node/worker-3", Remediator: "node.drain", Actor: "healer/engine"},
	} {
		if _, err := a.trail.Append(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the steps on the message", func() bool {
		u := a.fake.Updated()
		last := u[len(u)-1].Get("blocks")
		return strings.Contains(last, "started") && strings.Contains(last, "evicting: 3 of 7 pods evicted") && strings.Contains(last, "verified")
	})

	// Every vote is in the trail with its person.
	recs, err := a.trail.Query(t.Context(), audit.Filter{Kind: audit.KindApproval, EventID: "ev-1"})
	if err != nil {
		t.Fatal(err)
	}
	var actors []string
	for _, r := range recs {
		actors = append(actors, r.Actor)
	}
	if strings.Join(actors, " ") != "healer/engine slack:alice slack:bob" {
		t.Fatalf("approval records by %v", actors)
	}
}

func TestDenyFromSlack(t *testing.T) {
	a := newApp(t)
	ch, req := a.ask(t, drainRequest(1))
	a.send(t, InteractionsPath, click("UBOB", ActionDeny, req.ID+":"+req.Digest), time.Now(), signingSecret)
	got := <-ch
	if got.err != nil || got.a.Approved || got.a.Reason != "denied by bob" {
		t.Fatalf("answer = %+v", got)
	}
	eventually(t, "the message showing the denial", func() bool {
		u := a.fake.Updated()
		return len(u) > 0 && strings.Contains(u[len(u)-1].Get("blocks"), "Denied by bob")
	})
}

func TestExpiredApprovalMessage(t *testing.T) {
	a := newApp(t)
	ch, req := a.ask(t, drainRequest(1))
	// Expiry is at least a minute in a configuration: move the stored
	// request's expiry to the past, as time passing would.
	req.Expires = time.Now().Add(-time.Second)
	b, _ := json.Marshal(req)
	if _, err := a.kv.Put(t.Context(), req.ID, b); err != nil {
		t.Fatal(err)
	}
	got := <-ch
	if got.err != nil || got.a.Approved || !strings.Contains(got.a.Reason, "expired") {
		t.Fatalf("answer = %+v", got)
	}
	eventually(t, "the message showing the expiry", func() bool {
		u := a.fake.Updated()
		return len(u) > 0 && strings.Contains(u[len(u)-1].Get("blocks"), "Expired at")
	})
	// A vote after the expiry is refused, and the voter told.
	a.send(t, InteractionsPath, click("UALICE", ActionApprove, req.ID+":"+req.Digest), time.Now(), signingSecret)
	eventually(t, "the refusal", func() bool {
		e := a.fake.Ephemeral()
		return len(e) == 1 && strings.Contains(e[0].Get("text"), "already decided")
	})
}

func TestRequestsNotFromSlackAreRefused(t *testing.T) {
	a := newApp(t)
	_, req := a.ask(t, drainRequest(1))
	body := click("UALICE", ActionApprove, req.ID+":"+req.Digest)
	now := time.Now()

	if code, _ := a.send(t, InteractionsPath, body, now, "not-the-secret"); code != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d", code)
	}
	if code, msg := a.send(t, InteractionsPath, body, now.Add(-6*time.Minute), signingSecret); code != http.StatusUnauthorized || !strings.Contains(msg, "too old") {
		t.Errorf("stale timestamp: %d %s", code, msg)
	}
	unsigned, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.web.URL+InteractionsPath, strings.NewReader(body))
	if code, _ := do(t, unsigned); code != http.StatusUnauthorized {
		t.Errorf("unsigned: %d", code)
	}
	// A body changed after signing.
	tampered, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.web.URL+InteractionsPath, strings.NewReader(click("UBOB", ActionApprove, req.ID+":"+req.Digest)))
	chatopstest.Sign(tampered, body, now, signingSecret)
	if code, _ := do(t, tampered); code != http.StatusUnauthorized {
		t.Errorf("tampered body: %d", code)
	}
	if r, _ := a.broker.Get(t.Context(), req.ID); len(r.Votes) != 0 {
		t.Fatalf("a refused request voted: %+v", r.Votes)
	}

	// The genuine request counts once; sent again it is a replay.
	if code, _ := a.send(t, InteractionsPath, body, now, signingSecret); code != http.StatusOK {
		t.Fatalf("genuine request: %d", code)
	}
	if code, msg := a.send(t, InteractionsPath, body, now, signingSecret); code != http.StatusUnauthorized || !strings.Contains(msg, "replay") {
		t.Errorf("replay: %d %s", code, msg)
	}
	// The same request with its signature in upper case still verifies
	// (hex), and is still a replay.
	recased, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.web.URL+InteractionsPath, strings.NewReader(body))
	chatopstest.Sign(recased, body, now, signingSecret)
	recased.Header.Set("X-Slack-Signature", "v0="+strings.ToUpper(strings.TrimPrefix(recased.Header.Get("X-Slack-Signature"), "v0=")))
	if code, msg := do(t, recased); code != http.StatusUnauthorized || !strings.Contains(msg, "replay") {
		t.Errorf("replay with a re-cased signature: %d %s", code, msg)
	}
	if code, _ := a.send(t, CommandsPath, command("UALICE", "status"), now.Add(-10*time.Minute), signingSecret); code != http.StatusUnauthorized {
		t.Errorf("stale slash command: %d", code)
	}
}

func TestSlashCommands(t *testing.T) {
	a := newApp(t)
	run := func(user, text string) slack.Msg { t.Helper(); return a.run(t, user, text) }

	if m := run("UALICE", "pause node.drain node/worker-* for 2h : kernel upgrade"); m.ResponseType != slack.ResponseTypeInChannel || !strings.Contains(m.Text, "paused node.drain on node/worker-*") {
		t.Fatalf("pause: %+v", m)
	}
	// Stored in the bucket; this replica's view follows the watch.
	var ps []guard.Pause
	eventually(t, "the pause seen", func() bool { ps = a.pauses.List(); return len(ps) > 0 })
	if len(ps) != 1 || ps[0].Remediator != "node.drain" || ps[0].Target != "node/worker-*" || ps[0].Reason != "kernel upgrade" ||
		time.Until(ps[0].Until) < 119*time.Minute || !strings.Contains(ps[0].By, "UALICE") {
		t.Fatalf("pauses = %+v", ps)
	}
	if m := run("UMALLORY", "pause"); !strings.Contains(m.Text, "Only approvers") {
		t.Fatalf("pause by a stranger: %+v", m)
	}
	if m := run("UALICE", "pause node.reboot"); !strings.Contains(m.Text, "neither a remediator nor a target") {
		t.Fatalf("pause of an unknown remediator: %+v", m)
	}

	ch, req := a.ask(t, drainRequest(1))
	m := run("UBOB", "status")
	for _, want := range []string{req.ID, "node.drain on node/worker-*", "kernel upgrade", "Breakers"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("status lacks %q: %s", want, m.Text)
		}
	}
	if m := run("UBOB", "approve "+req.ID+" 00000000"); !strings.Contains(m.Text, "changed since") {
		t.Fatalf("approve with another action's digest: %+v", m)
	}
	if m := run("UERIN", "approve "+req.ID+" "+req.Digest[:12]); !strings.Contains(m.Text, "requester") {
		t.Fatalf("self-approval by command: %+v", m)
	}
	if m := run("UBOB", "approve "+req.ID+" "+req.Digest[:12]); !strings.Contains(m.Text, "approved by bob") {
		t.Fatalf("approve: %+v", m)
	}
	if got := <-ch; !got.a.Approved {
		t.Fatalf("answer = %+v", got)
	}

	// "approve ID" alone approves the only version ever posted; once the
	// action has changed, it must name the digest.
	other := drainRequest(1)
	other.Key, other.EventID = "act.k2", "ev-2"
	ch2, r2 := a.ask(t, other)
	if m := run("UBOB", "approve "+r2.ID+" because it is stuck"); !strings.Contains(m.Text, "approved by bob") {
		t.Fatalf("approve without a digest: %+v", m)
	}
	<-ch2
	third := drainRequest(1)
	third.Key, third.EventID = "act.k3", "ev-3"
	ctx3, stop3 := context.WithCancel(t.Context())
	ask3 := func(params map[string]any) approval.Request {
		t.Helper()
		third.Params = params
		go func() { _, _ = a.broker.Approve(ctx3, third) }()
		var r approval.Request
		eventually(t, "the request stored", func() bool {
			got, err := a.broker.Get(t.Context(), approval.ID(third.Key))
			r = got
			return err == nil && got.Params["grace"] == params["grace"]
		})
		return r
	}
	ask3(map[string]any{"grace": "60s"})
	r3 := ask3(map[string]any{"grace": "5m"})
	stop3()
	if r3.Replaced != 1 {
		t.Fatalf("replaced request = %+v", r3)
	}
	if m := run("UBOB", "approve "+r3.ID); !strings.Contains(m.Text, "changed since it was first posted") {
		t.Fatalf("approve a changed action without its digest: %+v", m)
	}

	if m := run("UALICE", "resume node.drain node/worker-*"); m.ResponseType != slack.ResponseTypeInChannel || !strings.Contains(m.Text, "resumed") {
		t.Fatalf("resume: %+v", m)
	}
	eventually(t, "the pause cleared", func() bool { return len(a.pauses.List()) == 0 })
	if m := run("UALICE", "resume"); !strings.Contains(m.Text, "No pause") {
		t.Fatalf("resume with nothing paused: %+v", m)
	}
	if m := run("UALICE", "reboot everything"); !strings.Contains(m.Text, "Unknown command") {
		t.Fatalf("unknown command: %+v", m)
	}
}

func TestNoticesAreThrottled(t *testing.T) {
	a := newApp(t)
	for range 3 {
		a.slack.Notify(t.Context(), engine.Notice{Kind: engine.NoticeBreakerOpen, Remediator: "node.drain", Text: "3 failures in a row", Runbook: "runbooks/node.drain.md"})
	}
	a.slack.Notify(t.Context(), engine.Notice{Kind: engine.NoticeBudgetExhausted, Remediator: "node.drain", Target: "node/worker-9", Text: "blast-radius budget exhausted: 4 of 40 nodes out of service"})
	eventually(t, "two notices", func() bool { return len(a.fake.Posted()) == 2 })
	time.Sleep(100 * time.Millisecond)
	posted := a.fake.Posted()
	all := posted[0].Get("blocks") + posted[1].Get("blocks")
	for _, want := range []string{"Circuit breaker open: node.drain", "runbooks/node.drain.md", "budget exhausted", "node/worker-9"} {
		if !strings.Contains(all, want) {
			t.Errorf("notices lack %q: %s", want, all)
		}
	}
	if len(posted) != 2 {
		t.Fatalf("%d notices posted, want 2 (the breaker once)", len(posted))
	}
}

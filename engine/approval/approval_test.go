package approval

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus/bustest"
	"github.com/selfheal/healer/engine"
)

type fixture struct {
	srv   *bustest.Server
	trail *audit.Trail
	cfg   Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixtureServer(t)
	f.cfg = Config{
		Approvers: []Approver{
			{Name: "alice", Slack: "UALICE", TokenFile: tokenFile(t, "alice")},
			{Name: "bob", TokenFile: tokenFile(t, "bob")},
			{Name: "carol", Slack: "UCAROL", TokenFile: tokenFile(t, "carol")},
		},
		SlackGroups: []string{"SONCALL"},
	}
	return f
}

// tok is the personal token of an approver in the tests.
func tok(name string) string { return "token-of-" + name + "-0123456789abcdef0123456789abcdef" }

func tokenFile(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(tok(name)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func newFixtureServer(tb testing.TB) *fixture {
	tb.Helper()
	srv := bustest.Start(tb)
	srv.Streams(tb)
	return &fixture{srv: srv, trail: audit.NewTrail(srv.JS, slog.New(slog.DiscardHandler))}
}

// broker returns a broker on the shared bucket: each call is another
// replica.
func (f *fixture) broker(t testing.TB) *Broker {
	t.Helper()
	kv, err := EnsureBucket(t.Context(), f.srv.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBroker(f.cfg, kv, f.trail, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b.SetGroupChecker(func(_ context.Context, group, user string) (bool, error) {
		return group == "SONCALL" && (user == "UDAVE" || user == "UBOB"), nil
	})
	return b
}

func request(need int) engine.ApprovalRequest {
	return engine.ApprovalRequest{
		Key: "act.0123", ActionID: "act-1", EventID: "ev-1", Target: "node/worker-1", Remediator: "node.drain",
		Approvals: need, Reason: "kernel deadlock", Rule: "drain_deadlocked", Params: map[string]any{"grace": "30s"},
	}
}

// ballot is a vote as a channel receives it: a Slack user id, or the
// token a CLI or web request carries.
type ballot struct {
	Via, User      string
	Approve        bool
	Digest, Reason string
}

// decide resolves the voter the way each channel does at its door, then
// votes.
func decide(ctx context.Context, b *Broker, id string, bl ballot) (Request, error) {
	var v Voter
	var err error
	if bl.Via == ViaSlack {
		v, err = b.SlackVoter(ctx, bl.User)
	} else {
		v, err = b.TokenVoter(bl.Via, bl.User)
	}
	if err != nil {
		return Request{}, err
	}
	return b.Decide(ctx, id, Ballot{Voter: v, Approve: bl.Approve, Digest: bl.Digest, Reason: bl.Reason})
}

type answer struct {
	a   engine.Approval
	err error
}

// approveAsync runs Approve in the background, as the engine does, and
// waits until the request is stored.
func approveAsync(t testing.TB, ctx context.Context, b *Broker, ar engine.ApprovalRequest) (<-chan answer, Request) {
	t.Helper()
	ch := make(chan answer, 1)
	go func() {
		a, err := b.Approve(ctx, ar)
		ch <- answer{a, err}
	}()
	id := ID(ar.Key)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := b.Get(ctx, id)
		if err == nil && r.Digest == Digest(ar.EventID, ar.Target, ar.Remediator, ar.Params, max(ar.Approvals, 1)) {
			return ch, r
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s not stored: %v", id, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wait(t *testing.T, ch <-chan answer) engine.Approval {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatalf("Approve: %v", a.err)
		}
		return a.a
	case <-time.After(10 * time.Second):
		t.Fatal("Approve did not return")
	}
	return engine.Approval{}
}

func TestTwoApproversAcrossReplicasAndChannels(t *testing.T) {
	f := newFixture(t)
	engineSide, slackSide := f.broker(t), f.broker(t)
	ch, req := approveAsync(t, t.Context(), engineSide, request(2))
	if req.State != StatePending || req.Need != 2 || req.ID[:4] != "apr-" {
		t.Fatalf("stored request = %+v", req)
	}

	if _, err := decide(t.Context(), slackSide, req.ID, ballot{Via: ViaSlack, User: "UALICE", Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	// alice again, on another channel, is still one person.
	if _, err := decide(t.Context(), slackSide, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); !errors.Is(err, ErrAlreadyVoted) {
		t.Fatalf("second vote by alice: %v, want ErrAlreadyVoted", err)
	}
	select {
	case a := <-ch:
		t.Fatalf("answered after one of two approvals: %+v", a)
	case <-time.After(100 * time.Millisecond):
	}
	// A member of the approver group who is not a configured approver
	// cannot be the second person: they might be alice again.
	if _, err := decide(t.Context(), slackSide, req.ID, ballot{Via: ViaSlack, User: "UDAVE", Approve: true, Digest: req.Digest}); !errors.Is(err, ErrUnverifiedIdentity) {
		t.Fatalf("group member as second approver: %v, want ErrUnverifiedIdentity", err)
	}
	r, err := decide(t.Context(), slackSide, req.ID, ballot{Via: ViaSlack, User: "UCAROL", Approve: true, Digest: req.Digest})
	if err != nil {
		t.Fatal(err)
	}
	if r.State != StateApproved {
		t.Fatalf("state after two approvals = %s", r.State)
	}
	a := wait(t, ch)
	if !a.Approved || !slices.Equal(a.By, []string{"alice", "carol"}) {
		t.Fatalf("answer = %+v", a)
	}

	recs, err := f.trail.Query(t.Context(), audit.Filter{Kind: audit.KindApproval, EventID: "ev-1"})
	if err != nil {
		t.Fatal(err)
	}
	var actors []string
	for _, rec := range recs {
		actors = append(actors, rec.Actor)
	}
	if !slices.Equal(actors, []string{"healer/engine", "slack:alice", "slack:carol"}) {
		t.Fatalf("approval records by %v", actors)
	}
	var d map[string]any
	_ = json.Unmarshal(recs[2].Details, &d)
	if d["vote"] != "approve" || d["person"] != "carol" || d["slack_user"] != "UCAROL" || d["state"] != StateApproved || d["approval_id"] != req.ID {
		t.Fatalf("vote record details = %v", d)
	}
}

// One human is one identity: bob has only a token, and is also in the
// approver group on Slack. His Slack vote cannot be told from another
// person's, so it cannot be the second approval of his own.
func TestTokenOnlyApproverInGroupCannotApproveTwice(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	ch, req := approveAsync(t, t.Context(), b, request(2))
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("bob"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaSlack, User: "UBOB", Approve: true, Digest: req.Digest}); !errors.Is(err, ErrUnverifiedIdentity) {
		t.Fatalf("bob again through Slack: %v, want ErrUnverifiedIdentity", err)
	}
	if r, _ := b.Get(t.Context(), req.ID); r.State != StatePending || len(r.Approvals()) != 1 {
		t.Fatalf("request after bob's two votes: %s, %d approvals", r.State, len(r.Approvals()))
	}
	select {
	case a := <-ch:
		t.Fatalf("answered: %+v", a)
	case <-time.After(100 * time.Millisecond):
	}

	// Where one person may decide alone and nobody asked, a group member
	// may approve.
	ch1, one := approveAsync(t, t.Context(), b, engine.ApprovalRequest{
		Key: "act.one", ActionID: "act-2", EventID: "ev-2", Target: "node/worker-2", Remediator: "node.cordon", Approvals: 1,
	})
	if _, err := decide(t.Context(), b, one.ID, ballot{Via: ViaSlack, User: "UDAVE", Approve: true, Digest: one.Digest}); err != nil {
		t.Fatal(err)
	}
	if a := wait(t, ch1); !a.Approved || !slices.Equal(a.By, []string{"slack:UDAVE"}) {
		t.Fatalf("answer = %+v", a)
	}
}

func TestRefusedVotes(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	ar := request(1)
	ar.Requester = "bob"
	ch, req := approveAsync(t, t.Context(), b, ar)

	for name, tc := range map[string]struct {
		ballot ballot
		want   error
	}{
		"unknown CLI token":  {ballot{Via: ViaCLI, User: "mallory", Approve: true, Digest: req.Digest}, ErrNotApprover},
		"a name, no token":   {ballot{Via: ViaCLI, User: "alice", Approve: true, Digest: req.Digest}, ErrNotApprover},
		"unknown Slack user": {ballot{Via: ViaSlack, User: "UMALLORY", Approve: true, Digest: req.Digest}, ErrNotApprover},
		"name as Slack id":   {ballot{Via: ViaSlack, User: "alice", Approve: true, Digest: req.Digest}, ErrNotApprover},
		"no user":            {ballot{Via: ViaWeb, Approve: true, Digest: req.Digest}, ErrNotApprover},
		"requester":          {ballot{Via: ViaWeb, User: tok("bob"), Approve: true, Digest: req.Digest}, ErrSelfApproval},
		"other action":       {ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: Digest("ev-1", "node/worker-2", "node.drain", nil, 1)}, ErrDigestMismatch},
	} {
		if _, err := decide(t.Context(), b, req.ID, tc.ballot); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, err := decide(t.Context(), b, "apr-0000000000", ballot{Via: ViaCLI, User: tok("alice"), Approve: true}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := decide(t.Context(), b, "../etc", ballot{Via: ViaCLI, User: tok("alice"), Approve: true}); !errors.Is(err, ErrNotFound) {
		t.Errorf("malformed id: %v", err)
	}
	if r, _ := b.Get(t.Context(), req.ID); r.State != StatePending || len(r.Votes) != 0 {
		t.Fatalf("refused votes changed the request: %+v", r)
	}

	// A denial ends it; later votes are refused.
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("carol"), Approve: false, Digest: req.Digest, Reason: "not during the release"}); err != nil {
		t.Fatal(err)
	}
	a := wait(t, ch)
	if a.Approved || a.Reason != "denied by carol: not during the release" {
		t.Fatalf("answer = %+v", a)
	}
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); !errors.Is(err, ErrClosed) {
		t.Fatalf("vote after denial: %v, want ErrClosed", err)
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	b.cfg.Expiry = 300 * time.Millisecond
	ch, req := approveAsync(t, t.Context(), b, request(2))
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	a := wait(t, ch)
	if a.Approved || !strings.Contains(a.Reason, "expired") {
		t.Fatalf("answer = %+v", a)
	}
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("bob"), Approve: true, Digest: req.Digest}); !errors.Is(err, ErrClosed) {
		t.Fatalf("vote after expiry: %v, want ErrClosed", err)
	}
	recs, _ := f.trail.Query(t.Context(), audit.Filter{Kind: audit.KindApproval})
	if last := recs[len(recs)-1]; !strings.Contains(string(last.Details), `"expired":true`) {
		t.Fatalf("last approval record = %s", last.Details)
	}
}

// A vote that arrives after the expiry, before the waiting engine noticed,
// is refused and expires the request.
func TestLateVoteExpires(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	ch, req := approveAsync(t, t.Context(), b, request(1))
	other := f.broker(t)
	other.now = func() time.Time { return time.Now().Add(time.Hour) }
	if _, err := decide(t.Context(), other, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); !errors.Is(err, ErrExpired) {
		t.Fatalf("late vote: %v, want ErrExpired", err)
	}
	if a := wait(t, ch); a.Approved {
		t.Fatalf("approved by a late vote: %+v", a)
	}
}

// A redelivered event waits on the votes already given; a changed action
// starts from none.
func TestRedeliveryKeepsVotesOfTheSameAction(t *testing.T) {
	f := newFixture(t)
	first := f.broker(t)
	ctx, stop := context.WithCancel(t.Context())
	ch, req := approveAsync(t, ctx, first, request(2))
	if _, err := decide(t.Context(), first, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	stop() // the engine stops while waiting
	if a := <-ch; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("Approve after its context ended: %+v", a)
	}

	second := f.broker(t)
	ch, again := approveAsync(t, t.Context(), second, request(2))
	if again.ID != req.ID || len(again.Votes) != 1 {
		t.Fatalf("redelivered request = %+v", again)
	}
	if _, err := decide(t.Context(), second, req.ID, ballot{Via: ViaCLI, User: tok("bob"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	if a := wait(t, ch); !a.Approved || len(a.By) != 2 {
		t.Fatalf("answer = %+v", a)
	}

	changed := request(2)
	changed.Key = "act.other"
	ch2, r1 := approveAsync(t, t.Context(), second, changed)
	if _, err := decide(t.Context(), second, r1.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: r1.Digest}); err != nil {
		t.Fatal(err)
	}
	changed.Params = map[string]any{"grace": "5m"}
	ctx3, stop3 := context.WithCancel(t.Context())
	defer stop3()
	_, r2 := approveAsync(t, ctx3, second, changed)
	if r2.ID != r1.ID || r2.Digest == r1.Digest || len(r2.Votes) != 0 || r2.State != StatePending {
		t.Fatalf("request for changed params = %+v", r2)
	}
	if _, err := decide(t.Context(), second, r1.ID, ballot{Via: ViaCLI, User: tok("bob"), Approve: true, Digest: r1.Digest}); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("vote for the old params: %v, want ErrDigestMismatch", err)
	}
	// The waiter on the replaced request does not take votes on the new
	// action for its own: it fails, and its event is retried.
	select {
	case a := <-ch2:
		if a.err == nil || !strings.Contains(a.err.Error(), "replaced") {
			t.Fatalf("waiter on the replaced request: %+v", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter on the replaced request still waiting")
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"short expiry":   {Expiry: time.Second},
		"no name":        {Approvers: []Approver{{Slack: "U1"}}},
		"twice":          {Approvers: []Approver{{Name: "a"}, {Name: "a"}}},
		"slack twice":    {Approvers: []Approver{{Name: "a", Slack: "U1"}, {Name: "b", Slack: "U1"}}},
		"reserved names": {Approvers: []Approver{{Name: "slack:U1"}}},
		"cannot vote":    {Approvers: []Approver{{Name: "a"}}},
	} {
		c.ApplyDefaults()
		if c.Validate() == nil {
			t.Errorf("%s: valid", name)
		}
	}
	ok := Config{Approvers: []Approver{{Name: "a", Slack: "U1"}, {Name: "b", TokenFile: "/etc/healer/b-token"}}}
	ok.ApplyDefaults()
	if err := ok.Validate(); err != nil || ok.Expiry != 15*time.Minute {
		t.Fatalf("default config: %v, expiry %s", err, ok.Expiry)
	}
}

// The requester named by their Slack id cannot approve from the CLI; a
// policy that comes to need two approvals does not inherit a request
// approved by one.
func TestRequesterAndNeedAcrossChannels(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	ar := request(1)
	ar.Requester = "UALICE"
	ch, req := approveAsync(t, t.Context(), b, ar)
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); !errors.Is(err, ErrSelfApproval) {
		t.Fatalf("requester (by Slack id) approving from the CLI: %v", err)
	}
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("bob"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	if a := <-ch; !a.a.Approved {
		t.Fatalf("answer %+v", a)
	}
	// The event comes again under a policy that needs two.
	ar.Approvals = 2
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, again := approveAsync(t, ctx, b, ar)
	if again.State != StatePending || again.Need != 2 || len(again.Votes) != 0 {
		t.Fatalf("request under the stricter policy: %+v", again)
	}
}

// A vote names the person and the channel, never the token it came with:
// not in the stored request, not in the audit trail.
func TestVotesStoreNoToken(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	ch, req := approveAsync(t, t.Context(), b, request(2))
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := decide(t.Context(), b, req.ID, ballot{Via: ViaWeb, User: tok("carol"), Approve: true, Digest: req.Digest}); err != nil {
		t.Fatal(err)
	}
	wait(t, ch)
	e, err := b.kv.Get(t.Context(), req.ID)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := f.trail.Query(t.Context(), audit.Filter{EventID: "ev-1"})
	if err != nil {
		t.Fatal(err)
	}
	trail, _ := json.Marshal(recs)
	for _, name := range []string{"alice", "carol"} {
		if strings.Contains(string(e.Value()), tok(name)) || strings.Contains(string(trail), tok(name)) {
			t.Errorf("%s's token is stored:\nrequest %s\ntrail %s", name, e.Value(), trail)
		}
	}
	var stored Request
	_ = json.Unmarshal(e.Value(), &stored)
	if got := stored.Persons(); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Errorf("stored voters %v", got)
	}
}

// Requests stored by an older version, whose CLI and web votes kept the
// voter's token, lose the token at start; Slack user ids stay.
func TestScrubRemovesStoredTokens(t *testing.T) {
	f := newFixture(t)
	b := f.broker(t)
	old := Request{ID: "apr-00000000aa", State: StateApproved, Need: 2, Votes: []Vote{
		{Person: "alice", Via: ViaCLI, User: tok("alice"), Approve: true},
		{Person: "carol", Via: ViaSlack, User: "UCAROL", Approve: true},
		{Person: "bob", Via: ViaSlack, User: tok("bob"), Approve: true},
	}}
	if _, err := b.kv.Put(t.Context(), old.ID, mustJSON(old)); err != nil {
		t.Fatal(err)
	}
	n, err := b.Scrub(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("Scrub = %d, %v; want 1 request rewritten", n, err)
	}
	e, err := b.kv.Get(t.Context(), old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value()), "token-of-") || !strings.Contains(string(e.Value()), "UCAROL") {
		t.Fatalf("after Scrub: %s", e.Value())
	}
	if n, err := b.Scrub(t.Context()); err != nil || n != 0 {
		t.Fatalf("second Scrub = %d, %v; want nothing to do", n, err)
	}
}

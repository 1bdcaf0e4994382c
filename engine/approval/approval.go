package approval

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/internal/httpauth"
)

// Bucket is the NATS KV bucket of approval requests.
const Bucket = "healer_approvals"

// EnsureBucket creates the approvals bucket, or updates it. Requests are
// kept for a week after their last change, for `healer approvals` and
// the web page; the audit trail keeps them for good.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureKV(ctx, js, bus.KV{
		Bucket: Bucket, Description: "healer: approval requests and the votes on them",
		Replicas: replicas, History: 1, TTL: 7 * 24 * time.Hour,
	})
}

// States of a request.
const (
	StatePending  = "pending"
	StateApproved = "approved"
	StateDenied   = "denied"
	StateExpired  = "expired"
)

// Channels a vote can come through.
const (
	ViaSlack = "slack"
	ViaCLI   = "cli"
	ViaWeb   = "web"
)

// Errors Decide returns; each is a refusal the voter is told about.
var (
	ErrNotFound       = errors.New("no such approval request")
	ErrNotApprover    = errors.New("not a configured approver")
	ErrSelfApproval   = errors.New("the requester of an action cannot approve it")
	ErrAlreadyVoted   = errors.New("already approved by this person: a second approval must come from someone else")
	ErrDigestMismatch = errors.New("the action changed since it was shown: look at it again before approving")
	ErrExpired        = errors.New("the approval request has expired")
	ErrClosed         = errors.New("the approval request is already decided")
	// ErrNotAudited means the vote counts but its audit record could not
	// be written; the engine's own approval record still names the voters.
	ErrNotAudited = errors.New("vote counted, but the audit trail did not take its record")
	// ErrUnverifiedIdentity refuses a member of an approver group who is
	// not a configured approver where it matters who they are: on a
	// request that needs two people, or one that a person asked for.
	errUnchanged          = errors.New("unchanged")
	ErrUnverifiedIdentity = errors.New("a member of an approver group who is not a configured approver (approvals.approvers) cannot vote where two people must agree or where a person asked for the action")
)

// Request is one action waiting for humans, as stored in the bucket.
type Request struct {
	ID string `json:"id"`
	// Digest binds votes to the exact action: event, target, remediator
	// and params. A vote carries the digest it was shown.
	Digest     string         `json:"digest"`
	EventID    string         `json:"event_id"`
	Target     string         `json:"target"`
	Remediator string         `json:"remediator"`
	Params     map[string]any `json:"params,omitempty"`
	// Reason and Rule are the policy's, Budget the blast-radius state when
	// asked, Runbook the remediator's runbook path.
	Reason  string `json:"reason"`
	Rule    string `json:"rule,omitempty"`
	Budget  string `json:"budget,omitempty"`
	Runbook string `json:"runbook,omitempty"`
	// Requester, when the action was asked for by a person, may not
	// approve it.
	Requester string `json:"requester,omitempty"`
	// Need is how many distinct approvers must approve.
	Need    int       `json:"need"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	State   string    `json:"state"`
	Votes   []Vote    `json:"votes,omitempty"`
	// Decided is when the request left StatePending.
	Decided time.Time `json:"decided,omitzero"`
	// Message is the chat message showing the request, once posted.
	Message *MessageRef `json:"message,omitempty"`
	// Replaced counts how often the request was replaced by another
	// version of the action (a new policy decided other params): a vote
	// that does not name the digest is refused once it has been.
	Replaced int `json:"replaced,omitempty"`
}

// Vote is one person's approval or denial. It names the person and the
// channel, never a credential.
type Vote struct {
	// Person is who voted: an approver's configured name, or slack:<user
	// id> for a member of an approver group who is not a configured
	// approver.
	Person string `json:"person"`
	// Via is the channel (slack, cli, web); User is the Slack user id of
	// a vote through Slack, and empty otherwise.
	Via     string    `json:"via"`
	User    string    `json:"user,omitempty"`
	Approve bool      `json:"approve"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
}

// MessageRef locates the chat message of a request.
type MessageRef struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
}

// Approvals returns the approving votes.
func (r *Request) Approvals() []Vote {
	var out []Vote
	for _, v := range r.Votes {
		if v.Approve {
			out = append(out, v)
		}
	}
	return out
}

// Persons returns who approved, in order.
func (r *Request) Persons() []string {
	var out []string
	for _, v := range r.Approvals() {
		out = append(out, v.Person)
	}
	return out
}

// Outcome says in words how the request stands.
func (r *Request) Outcome() string {
	switch r.State {
	case StateApproved:
		return "approved by " + strings.Join(r.Persons(), " and ")
	case StateDenied:
		for _, v := range r.Votes {
			if !v.Approve {
				s := "denied by " + v.Person
				if v.Reason != "" {
					s += ": " + v.Reason
				}
				return s
			}
		}
		return "denied"
	case StateExpired:
		return fmt.Sprintf("expired at %s without %d approval(s)", r.Expires.UTC().Format(time.RFC3339), r.Need)
	default:
		return fmt.Sprintf("waiting: %d of %d approval(s), expires %s", len(r.Approvals()), r.Need, r.Expires.UTC().Format(time.RFC3339))
	}
}

// ID returns the request id of the action with idempotency key key: the
// same across redeliveries of the event, so a replica taking over waits on
// the votes already given.
func ID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "apr-" + hex.EncodeToString(sum[:5])
}

// Digest returns the digest an approval of this action is bound to: the
// event, target, remediator, params and how many approvals it needs (a
// policy that comes to need two does not inherit a request needing one).
func Digest(eventID, target, remediator string, params map[string]any, need int) string {
	b, _ := json.Marshal(struct {
		EventID    string         `json:"event_id"`
		Target     string         `json:"target"`
		Remediator string         `json:"remediator"`
		Params     map[string]any `json:"params"`
		Need       int            `json:"need"`
	}{eventID, target, remediator, params, need})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Approver is a person allowed to approve: through Slack as their Slack
// user id, and through the CLI and the web page with their own token
// (TokenFile), which names them. The shared API token names nobody and
// cannot vote.
type Approver struct {
	Name      string `json:"name"`
	Slack     string `json:"slack,omitempty"`
	TokenFile string `json:"tokenFile,omitempty"`
}

// Config says who may approve and for how long a request stands.
type Config struct {
	// Expiry is how long a request waits for its approvals; after it, the
	// action is suppressed. Default 15m.
	Expiry time.Duration `json:"expiry"`
	// Approvers are the people who may approve.
	Approvers []Approver `json:"approvers"`
	// SlackGroups are Slack user group ids whose members may approve too.
	SlackGroups []string `json:"slackGroups,omitempty"`
}

// ApplyDefaults fills in unset fields.
func (c *Config) ApplyDefaults() {
	if c.Expiry == 0 {
		c.Expiry = 15 * time.Minute
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.Expiry < time.Minute || c.Expiry > 24*time.Hour {
		errs = append(errs, fmt.Errorf("approvals.expiry %s: want between 1m and 24h", c.Expiry))
	}
	seen := map[string]bool{}
	for i, a := range c.Approvers {
		switch {
		case strings.TrimSpace(a.Name) == "":
			errs = append(errs, fmt.Errorf("approvals.approvers[%d]: name is required", i))
		case strings.HasPrefix(a.Name, "slack:"):
			errs = append(errs, fmt.Errorf("approvals.approvers[%d]: name %q: the prefix slack: is reserved for members of approver groups", i, a.Name))
		case seen[a.Name]:
			errs = append(errs, fmt.Errorf("approvals.approvers[%d]: %q is listed twice", i, a.Name))
		}
		seen[a.Name] = true
		if a.Slack == "" && a.TokenFile == "" {
			errs = append(errs, fmt.Errorf("approvals.approvers[%d] (%s): give a slack user id or a tokenFile, or they cannot vote", i, a.Name))
		}
		if a.Slack != "" {
			if seen["slack "+a.Slack] {
				errs = append(errs, fmt.Errorf("approvals.approvers[%d]: Slack user %s is listed twice", i, a.Slack))
			}
			seen["slack "+a.Slack] = true
		}
	}
	return errors.Join(errs...)
}

// Notifier shows requests to people and keeps what it shows current.
type Notifier interface {
	// Requested shows a new request; the message it returns, if any, is
	// stored with the request.
	Requested(ctx context.Context, r Request) (*MessageRef, error)
	// Updated shows a request's new state.
	Updated(ctx context.Context, r Request)
}

// GroupChecker tells whether a Slack user is a member of a user group.
type GroupChecker func(ctx context.Context, group, user string) (bool, error)

// Broker stores approval requests in the bucket, collects votes from any
// replica and channel, and answers the engine. It implements
// engine.Approver.
type Broker struct {
	cfg      Config
	tokens   map[string]string // approver name -> personal token
	kv       jetstream.KeyValue
	trail    *audit.Trail
	log      *slog.Logger
	now      func() time.Time
	notifier Notifier
	inGroup  GroupChecker

	// deciding is held (shared) by Decide from storing a vote until the
	// vote is audited. Approve takes it once its request is decided, so
	// the vote that decided it is in the trail before the engine audits
	// the outcome. (The engine hears of the decision from the bucket,
	// which is written first.) This orders votes taken by this process;
	// one taken by another replica may still be audited after.
	deciding sync.RWMutex
}

// NewBroker returns a broker on the bucket; votes are audited on trail.
func NewBroker(cfg Config, kv jetstream.KeyValue, trail *audit.Trail, log *slog.Logger) (*Broker, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tokens := map[string]string{}
	seen := map[string]string{}
	for _, a := range cfg.Approvers {
		if a.TokenFile == "" {
			continue
		}
		b, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("approvals: token of %s: %w", a.Name, err)
		}
		tok := strings.TrimSpace(string(b))
		if err := httpauth.CheckLength("approvals: the token of "+a.Name+" in "+a.TokenFile, tok); err != nil {
			return nil, err
		}
		if other, dup := seen[tok]; dup {
			return nil, fmt.Errorf("approvals: %s and %s have the same token", other, a.Name)
		}
		seen[tok] = a.Name
		tokens[a.Name] = tok
	}
	return &Broker{cfg: cfg, tokens: tokens, kv: kv, trail: trail, log: log, now: time.Now}, nil
}

// TokenOwner returns the approver whose personal token tok is, or "".
func (b *Broker) TokenOwner(tok string) string {
	if tok == "" {
		return ""
	}
	owner := ""
	for name, t := range b.tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			owner = name
		}
	}
	return owner
}

// SetNotifier makes n show requests (Slack). Call it before the engine
// runs.
func (b *Broker) SetNotifier(n Notifier) { b.notifier = n }

// SetGroupChecker lets members of the configured Slack groups approve.
func (b *Broker) SetGroupChecker(g GroupChecker) { b.inGroup = g }

var _ engine.Approver = (*Broker)(nil)

// Approve stores a request for the action (or finds the one stored by an
// earlier attempt), shows it, and waits until it is approved, denied or
// expires, or ctx ends (an error: the event is retried and waits on the
// same request).
func (b *Broker) Approve(ctx context.Context, ar engine.ApprovalRequest) (engine.Approval, error) {
	req, err := b.open(ctx, ar)
	if err != nil {
		return engine.Approval{}, err
	}
	req, err = b.wait(ctx, req.ID, req.Digest)
	if err != nil {
		return engine.Approval{}, err
	}
	b.votesAudited()
	return engine.Approval{Approved: req.State == StateApproved, Reason: req.Outcome(), By: req.Persons()}, nil
}

// open stores a new request, or returns the stored one when it is for the
// same action (same digest).
func (b *Broker) open(ctx context.Context, ar engine.ApprovalRequest) (Request, error) {
	now := b.now().UTC()
	req := Request{
		ID: ID(ar.Key), Digest: Digest(ar.EventID, ar.Target, ar.Remediator, ar.Params, max(ar.Approvals, 1)),
		EventID: ar.EventID, Target: ar.Target, Remediator: ar.Remediator, Params: ar.Params,
		Reason: ar.Reason, Rule: ar.Rule, Budget: ar.Budget, Runbook: ar.Runbook, Requester: ar.Requester,
		Need: max(ar.Approvals, 1), Created: now, Expires: now.Add(b.cfg.Expiry), State: StatePending,
	}
	for {
		_, err := b.kv.Create(ctx, req.ID, mustJSON(req))
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Request{}, fmt.Errorf("store approval request %s: %w", req.ID, err)
		}
		old, rev, gerr := b.get(ctx, req.ID)
		if errors.Is(gerr, ErrNotFound) {
			continue // deleted meanwhile: create again
		}
		if gerr != nil {
			return Request{}, gerr
		}
		if old.Digest == req.Digest {
			// An earlier attempt asked: wait on its votes, and show the
			// request if that attempt never could.
			if old.State == StatePending && old.Message == nil && b.notifier != nil {
				b.show(ctx, old)
			}
			return old, nil
		}
		// The action changed (a new policy decided other params): the old
		// votes were for something else.
		req.Replaced = old.Replaced + 1
		if _, err := b.kv.Update(ctx, req.ID, mustJSON(req), rev); err != nil {
			if isWrongRevision(err) {
				continue
			}
			return Request{}, fmt.Errorf("replace approval request %s: %w", req.ID, err)
		}
		break
	}
	if err := b.audit(ctx, req, "healer/engine", "requested", audit.Details(
		"approval_id", req.ID, "requested", true, "need", req.Need, "expires", req.Expires, "digest", req.Digest,
		"rule", req.Rule, "reason", req.Reason)); err != nil {
		return Request{}, err
	}
	if b.notifier != nil {
		b.show(ctx, req)
	}
	return req, nil
}

// show posts the request to chat and remembers its message. A failure is
// not fatal: the request can still be approved from the CLI or the web page.
func (b *Broker) show(ctx context.Context, req Request) {
	nctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	ref, err := b.notifier.Requested(nctx, req)
	if err != nil {
		b.log.WarnContext(ctx, "approval request not shown in chat", "approval_id", req.ID, "err", err)
		return
	}
	if ref == nil {
		return
	}
	if _, err := b.update(ctx, req.ID, func(r *Request) error {
		if r.Digest != req.Digest {
			return errors.New("replaced meanwhile")
		}
		r.Message = ref
		return nil
	}); err != nil {
		b.log.WarnContext(ctx, "approval request: remember its message", "approval_id", req.ID, "err", err)
	}
}

// notifyTimeout bounds one call to chat, so a hanging Slack never holds up
// an expiry or a vote.
const notifyTimeout = 10 * time.Second

// wait watches the request until it is decided or expires. It fails when
// the request is replaced by another action's (another digest): votes on
// that one are not votes on this.
func (b *Broker) wait(ctx context.Context, id, digest string) (Request, error) {
	w, err := b.kv.Watch(ctx, id)
	if err != nil {
		return Request{}, fmt.Errorf("watch approval request %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
	var cur Request
	var have bool
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if have {
			if cur.Digest != digest {
				return Request{}, fmt.Errorf("approval request %s was replaced by one for another action", id)
			}
			if cur.State != StatePending {
				return cur, nil
			}
			timer.Reset(max(cur.Expires.Sub(b.now()), 0))
		}
		select {
		case <-ctx.Done():
			return Request{}, ctx.Err()
		case <-timer.C:
			r, err := b.expire(ctx, id)
			if err != nil {
				return Request{}, err
			}
			cur, have = r, true
		case e, ok := <-w.Updates():
			if !ok {
				return Request{}, fmt.Errorf("watch approval request %s: stopped", id)
			}
			if e == nil {
				continue // the initial value is read
			}
			if e.Operation() != jetstream.KeyValuePut {
				return Request{}, fmt.Errorf("approval request %s was deleted", id)
			}
			var r Request
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return Request{}, fmt.Errorf("approval request %s: %w", id, err)
			}
			cur, have = r, true
		}
	}
}

// expire marks a pending request expired once its time is up.
func (b *Broker) expire(ctx context.Context, id string) (Request, error) {
	var changed bool
	r, err := b.update(ctx, id, func(r *Request) error {
		changed = false
		if r.State != StatePending || b.now().Before(r.Expires) {
			return nil
		}
		r.State, r.Decided, changed = StateExpired, b.now().UTC(), true
		return nil
	})
	if err != nil {
		return Request{}, err
	}
	if changed {
		if err := b.audit(ctx, r, "healer/engine", "expired", audit.Details("approval_id", r.ID, "expired", true, "approvals", len(r.Approvals()), "need", r.Need)); err != nil {
			return Request{}, err
		}
		b.updated(ctx, r)
	}
	return r, nil
}

// Voter is a person who may vote, resolved once at the door from what
// the channel authenticated: an approver's own token (CLI, web page) or a
// Slack user id (Slack signed the request). Only the broker makes one
// (TokenVoter, SlackVoter), so a vote always names a configured approver,
// or a member of an approver group, and never carries the credential.
type Voter struct {
	person, via, slackID string
	// groupOnly marks a member of an approver group who is not a
	// configured approver: their name is only their Slack id, so they
	// cannot be told apart from a configured approver voting a second
	// time through another channel.
	groupOnly bool
}

// Person is the voter's name: the configured approver's, or slack:<id>.
func (v Voter) Person() string { return v.person }

// Via is the channel the voter came through.
func (v Voter) Via() string { return v.via }

// Actor is how the voter is named in the audit trail: via:person
// (slack:<id> for a member of an approver group).
func (v Voter) Actor() string {
	if v.groupOnly {
		return v.person
	}
	return v.via + ":" + v.person
}

// Ballot is one person's vote as it arrives.
type Ballot struct {
	Voter   Voter
	Approve bool
	// Digest is the digest of the action the voter was shown.
	Digest string
	Reason string
}

// Decide records a vote on request id and returns the request as it then
// stands. Only configured approvers vote; a request needing two approvals
// needs two different people, neither of them the requester; a vote is
// only for the exact action shown (its digest) and only before expiry.
// Every vote is audited with the voter.
func (b *Broker) Decide(ctx context.Context, id string, ballot Ballot) (Request, error) {
	voter := ballot.Voter
	if voter.person == "" {
		return Request{}, fmt.Errorf("%w: nobody identified", ErrNotApprover)
	}
	person := voter.person
	b.deciding.RLock()
	audited := sync.OnceFunc(b.deciding.RUnlock)
	defer audited()
	var expired bool
	r, err := b.update(ctx, id, func(r *Request) error {
		expired = false
		switch {
		case r.State != StatePending:
			return fmt.Errorf("%w: %s", ErrClosed, r.Outcome())
		case !b.now().Before(r.Expires):
			r.State, r.Decided, expired = StateExpired, b.now().UTC(), true
			return nil
		case ballot.Digest != r.Digest:
			return ErrDigestMismatch
		case r.Requester != "" && b.samePerson(voter, r.Requester):
			return ErrSelfApproval
		case voter.groupOnly && ballot.Approve && (r.Need > 1 || r.Requester != ""):
			return ErrUnverifiedIdentity
		case slices.ContainsFunc(r.Votes, func(v Vote) bool { return v.Person == person }):
			return ErrAlreadyVoted
		}
		r.Votes = append(r.Votes, Vote{Person: person, Via: voter.via, User: voter.slackID, Approve: ballot.Approve, Reason: ballot.Reason, Time: b.now().UTC()})
		switch {
		case !ballot.Approve:
			r.State, r.Decided = StateDenied, b.now().UTC()
		case len(r.Approvals()) >= r.Need:
			r.State, r.Decided = StateApproved, b.now().UTC()
		}
		return nil
	})
	if err != nil {
		return Request{}, err
	}
	if expired {
		_ = b.audit(ctx, r, "healer/engine", "expired", audit.Details("approval_id", r.ID, "expired", true, "approvals", len(r.Approvals()), "need", r.Need))
		audited()
		b.updated(ctx, r)
		return r, ErrExpired
	}
	vote := "deny"
	if ballot.Approve {
		vote = "approve"
	}
	if err := b.audit(ctx, r, voter.Actor(), vote, audit.Details(
		"approval_id", r.ID, "vote", vote, "person", person, "via", voter.via, "slack_user", voter.slackID, "reason", ballot.Reason,
		"approvals", len(r.Approvals()), "need", r.Need, "state", r.State, "digest", r.Digest)); err != nil {
		audited()
		b.updated(ctx, r)
		return r, fmt.Errorf("%w: %w", ErrNotAudited, err)
	}
	audited()
	b.updated(ctx, r)
	return r, nil
}

// votesAudited waits until every vote this process is storing has been
// audited (or has failed to be).
func (b *Broker) votesAudited() {
	b.deciding.Lock()
	defer b.deciding.Unlock()
}

// TokenVoter resolves a vote through the CLI or the web page: the voter
// is the approver whose own token it is. The shared API token names
// nobody and cannot vote.
func (b *Broker) TokenVoter(via, token string) (Voter, error) {
	if via != ViaCLI && via != ViaWeb {
		return Voter{}, fmt.Errorf("a token vote comes through %s or %s, not %q", ViaCLI, ViaWeb, via)
	}
	name := b.TokenOwner(token)
	if name == "" {
		return Voter{}, fmt.Errorf("%w: that is not an approver's own token (the shared API token cannot vote)", ErrNotApprover)
	}
	return Voter{person: name, via: via}, nil
}

// SlackVoter resolves a vote through Slack, whose request signature
// vouches for the user id: the configured approver with that Slack id,
// else a member of one of the approver groups (who, not being a
// configured approver, can only approve what one person may approve
// alone: see ErrUnverifiedIdentity).
func (b *Broker) SlackVoter(ctx context.Context, user string) (Voter, error) {
	if strings.TrimSpace(user) == "" {
		return Voter{}, fmt.Errorf("%w: no Slack user given", ErrNotApprover)
	}
	for _, a := range b.cfg.Approvers {
		if a.Slack != "" && a.Slack == user {
			return Voter{person: a.Name, via: ViaSlack, slackID: user}, nil
		}
	}
	if b.inGroup != nil {
		for _, g := range b.cfg.SlackGroups {
			ok, err := b.inGroup(ctx, g, user)
			if err != nil {
				return Voter{}, fmt.Errorf("check membership of Slack group %s: %w", g, err)
			}
			if ok {
				return Voter{person: "slack:" + user, via: ViaSlack, slackID: user, groupOnly: true}, nil
			}
		}
	}
	return Voter{}, fmt.Errorf("%w: Slack user %q", ErrNotApprover, user)
}

// samePerson reports whether the voter is the requester, however the
// requester is named: an approver's name, their Slack id or slack:<id>.
func (b *Broker) samePerson(v Voter, requester string) bool {
	resolved := requester
	for _, a := range b.cfg.Approvers {
		if requester == a.Name || (a.Slack != "" && (requester == a.Slack || requester == "slack:"+a.Slack)) {
			resolved = a.Name
		}
	}
	return v.person == resolved || v.person == requester ||
		(v.slackID != "" && (v.slackID == requester || "slack:"+v.slackID == requester))
}

// IsConfiguredApprover reports whether the Slack user is a configured
// approver (not only a member of an approver group).
func (b *Broker) IsConfiguredApprover(slackUser string) bool {
	return slackUser != "" && slices.ContainsFunc(b.cfg.Approvers, func(a Approver) bool { return a.Slack == slackUser })
}

// Get returns the request with id.
func (b *Broker) Get(ctx context.Context, id string) (Request, error) {
	r, _, err := b.get(ctx, id)
	return r, err
}

// List returns the stored requests, pending ones first, newest first
// within each group.
func (b *Broker) List(ctx context.Context) ([]Request, error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list approval requests: %w", err)
	}
	var out []Request
	for key := range lister.Keys() {
		r, _, err := b.get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y Request) int {
		if (x.State == StatePending) != (y.State == StatePending) {
			if x.State == StatePending {
				return -1
			}
			return 1
		}
		return y.Created.Compare(x.Created)
	})
	return out, nil
}

// Scrub removes credentials that older versions stored in votes: a vote
// through the CLI or the web page kept the voter's own token as its
// user. It returns how many requests it rewrote. Serve runs it at start;
// tokens that were stored should be rotated all the same, since a copy
// may have been read.
func (b *Broker) Scrub(ctx context.Context) (int, error) {
	lister, err := b.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list approval requests: %w", err)
	}
	var n int
	for key := range lister.Keys() {
		if !validID(key) {
			continue
		}
		var changed bool
		_, err := b.update(ctx, key, func(r *Request) error {
			changed = false
			for i, v := range r.Votes {
				if v.User != "" && (v.Via != ViaSlack || b.TokenOwner(v.User) != "") {
					r.Votes[i].User, changed = "", true
				}
			}
			if !changed {
				return errUnchanged
			}
			return nil
		})
		switch {
		case errors.Is(err, errUnchanged), errors.Is(err, ErrNotFound):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}

func (b *Broker) get(ctx context.Context, id string) (Request, uint64, error) {
	if !validID(id) {
		return Request{}, 0, fmt.Errorf("%w: %q is not an approval id (apr- and 10 hex digits)", ErrNotFound, id)
	}
	e, err := b.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Request{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Request{}, 0, fmt.Errorf("read approval request %s: %w", id, err)
	}
	var r Request
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Request{}, 0, fmt.Errorf("approval request %s is unreadable: %w", id, err)
	}
	return r, e.Revision(), nil
}

// update applies fn to the stored request by compare-and-set, again on a
// concurrent change. fn returning an error leaves the request as it is.
func (b *Broker) update(ctx context.Context, id string, fn func(*Request) error) (Request, error) {
	for range 20 {
		r, rev, err := b.get(ctx, id)
		if err != nil {
			return Request{}, err
		}
		if err := fn(&r); err != nil {
			return r, err
		}
		if _, err := b.kv.Update(ctx, id, mustJSON(r), rev); err != nil {
			if isWrongRevision(err) {
				continue
			}
			return Request{}, fmt.Errorf("store approval request %s: %w", id, err)
		}
		return r, nil
	}
	return Request{}, fmt.Errorf("approval request %s: too many concurrent changes", id)
}

func (b *Broker) updated(ctx context.Context, r Request) {
	if b.notifier != nil {
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
		defer cancel()
		b.notifier.Updated(nctx, r)
	}
}

func (b *Broker) audit(ctx context.Context, r Request, actor, what string, details json.RawMessage) error {
	if _, err := b.trail.Append(ctx, audit.Record{
		Kind: audit.KindApproval, EventID: r.EventID, Target: r.Target, Remediator: r.Remediator,
		Actor: actor, Details: details,
	}); err != nil {
		return fmt.Errorf("audit approval %s (%s): %w", r.ID, what, err)
	}
	return nil
}

func validID(id string) bool {
	hexPart, ok := strings.CutPrefix(id, "apr-")
	if !ok || len(hexPart) != 10 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

func isWrongRevision(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("approval: encode %T: %v", v, err))
	}
	return b
}

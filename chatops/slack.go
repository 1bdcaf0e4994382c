package chatops

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/slack-go/slack"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/engine/guard"
)

// Action ids of the buttons on an approval message.
const (
	ActionApprove = "healer_approve"
	ActionDeny    = "healer_deny"
)

// PauseStore sets and clears pauses, auditing each change.
type PauseStore interface {
	SetPause(ctx context.Context, p *guard.Pause, actor string) error
	ClearPause(ctx context.Context, id, actor string) (guard.Pause, error)
	List() []guard.Pause
	// Known reports whether healer has a remediator of that name.
	Known(remediator string) bool
}

// Deps are what the Slack app works with.
type Deps struct {
	Broker *approval.Broker
	Pauses PauseStore
	Trail  *audit.Trail
	// Replay remembers signatures of requests already served, across
	// replicas: a NATS KV bucket whose entries outlive Slack's 5-minute
	// timestamp window (EnsureReplayBucket).
	Replay jetstream.KeyValue
	// Status returns lines about breakers and the budget for /healer status.
	Status func(ctx context.Context) []string
	// HTTPClient, when set, is used for Slack's Web API.
	HTTPClient *http.Client
	Log        *slog.Logger
}

// Slack posts approval requests and notices to a channel, keeps the
// messages current with each step of the action, and serves Slack's
// interactivity and slash-command requests.
type Slack struct {
	cfg     Config
	secrets Secrets
	api     *slack.Client
	Deps
	now func() time.Time

	mu       sync.Mutex
	watching map[string]*watched // event id -> approval message kept current
	notified map[string]time.Time
	groups   map[string]groupMembers
}

type watched struct {
	req   approval.Request
	steps []string
	since time.Time // when healer began showing it
	done  time.Time // when its action ended
}

type groupMembers struct {
	users map[string]bool
	at    time.Time
}

// New returns the Slack app.
func New(cfg Config, secrets Secrets, deps Deps) (*Slack, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := secrets.Validate(); err != nil {
		return nil, err
	}
	if deps.Broker == nil || deps.Trail == nil || deps.Replay == nil || deps.Log == nil {
		return nil, fmt.Errorf("chatops: Broker, Trail, Replay and Log are required")
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	opts := []slack.Option{slack.OptionAPIURL(cfg.APIURL), slack.OptionHTTPClient(deps.HTTPClient)}
	s := &Slack{
		cfg: cfg, secrets: secrets, api: slack.New(secrets.BotToken, opts...), Deps: deps, now: time.Now,
		watching: map[string]*watched{}, notified: map[string]time.Time{}, groups: map[string]groupMembers{},
	}
	deps.Broker.SetNotifier(s)
	deps.Broker.SetGroupChecker(s.inGroup)
	return s, nil
}

// Requested posts the approval request to the channel.
func (s *Slack) Requested(ctx context.Context, r approval.Request) (*approval.MessageRef, error) {
	ch, ts, err := s.api.PostMessageContext(ctx, s.cfg.Channel,
		slack.MsgOptionText(summary(r), false), slack.MsgOptionBlocks(s.blocks(r, nil)...))
	if err != nil {
		return nil, fmt.Errorf("slack: post approval request %s: %w", r.ID, err)
	}
	r.Message = &approval.MessageRef{Channel: ch, TS: ts}
	s.mu.Lock()
	s.watching[r.EventID] = &watched{req: r, since: s.now()}
	s.mu.Unlock()
	return r.Message, nil
}

// Updated rewrites the request's message with its new state.
func (s *Slack) Updated(ctx context.Context, r approval.Request) {
	s.mu.Lock()
	w := s.watching[r.EventID]
	if w == nil {
		w = &watched{since: s.now()}
		s.watching[r.EventID] = w
	}
	if r.Message == nil && w.req.Message != nil {
		r.Message = w.req.Message
	}
	w.req = r
	steps := append([]string(nil), w.steps...)
	s.mu.Unlock()
	s.update(ctx, r, steps)
}

func (s *Slack) update(ctx context.Context, r approval.Request, steps []string) {
	if r.Message == nil {
		return
	}
	if _, _, _, err := s.api.UpdateMessageContext(ctx, r.Message.Channel, r.Message.TS,
		slack.MsgOptionText(summary(r), false), slack.MsgOptionBlocks(s.blocks(r, steps)...)); err != nil {
		s.Log.WarnContext(ctx, "slack: update approval message", "approval_id", r.ID, "err", err)
	}
}

// Notify posts a notice, at most once per NotifyEvery for the same kind
// and remediator.
func (s *Slack) Notify(ctx context.Context, n engine.Notice) {
	key := n.Kind + " " + n.Remediator
	s.mu.Lock()
	if last, ok := s.notified[key]; ok && s.now().Sub(last) < s.cfg.NotifyEvery {
		s.mu.Unlock()
		return
	}
	s.notified[key] = s.now()
	s.mu.Unlock()
	title := map[string]string{
		engine.NoticeBreakerOpen:     ":rotating_light: Circuit breaker open: " + esc(n.Remediator, maxField),
		engine.NoticeBudgetExhausted: ":no_entry: Blast-radius budget exhausted",
	}[n.Kind]
	if title == "" {
		title = esc(n.Kind, maxField)
	}
	text := esc(n.Text, maxText)
	if n.Target != "" {
		text += "\nTarget: " + code(n.Target, maxField)
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(plain(title)),
		slack.NewSectionBlock(mrkdwn(text), nil, nil),
	}
	if links := s.links(n.Runbook, ""); links != "" {
		blocks = append(blocks, slack.NewContextBlock("", mrkdwn(links)))
	}
	// Posting must not hold the engine up.
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, _, err := s.api.PostMessageContext(ctx, s.cfg.Channel, slack.MsgOptionText(title+": "+text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
			s.Log.WarnContext(ctx, "slack: post notice", "kind", n.Kind, "err", err)
		}
	}()
}

// Run keeps approval messages current with the steps of their actions,
// read from the audit trail, until ctx ends.
func (s *Slack) Run(ctx context.Context) {
	after, err := s.Trail.LastSeq(ctx)
	for ctx.Err() == nil {
		if err == nil {
			err = s.Trail.Follow(ctx, after, func(rec audit.Record) {
				after = rec.Seq
				s.progress(ctx, rec)
			})
		}
		if ctx.Err() != nil {
			return
		}
		s.Log.WarnContext(ctx, "slack: following the audit trail stopped; again in 2s", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		err = nil
	}
}

// progress adds an action's step to its approval message.
func (s *Slack) progress(ctx context.Context, rec audit.Record) {
	var line string
	switch rec.Kind {
	case audit.KindActionStarted:
		line = ":gear: started"
	case audit.KindActionProgress:
		line = ":hourglass_flowing_sand: " + esc(detail(rec, "step", "message"), maxStep)
	case audit.KindActionFinished:
		line = ":white_check_mark: finished"
	case audit.KindActionFailed:
		line = ":x: failed: " + esc(detail(rec, "error"), maxStep)
	case audit.KindVerified:
		line = ":heavy_check_mark: verified"
	case audit.KindSuppressed:
		line = ":double_vertical_bar: not done: " + esc(detail(rec, "reason"), maxStep)
	default:
		return
	}
	s.mu.Lock()
	// Forget messages an hour after their action ended, and any after a
	// day (an action whose end was never seen).
	for id, o := range s.watching {
		if (!o.done.IsZero() && s.now().Sub(o.done) > time.Hour) || s.now().Sub(o.since) > 24*time.Hour {
			delete(s.watching, id)
		}
	}
	w := s.watching[rec.EventID]
	if w == nil || w.req.Message == nil {
		s.mu.Unlock()
		return
	}
	w.steps = append(w.steps, rec.Time.UTC().Format("15:04:05")+" "+line)
	if len(w.steps) > 20 {
		w.steps = append(w.steps[:1], w.steps[len(w.steps)-19:]...)
	}
	if rec.Kind == audit.KindVerified || rec.Kind == audit.KindActionFailed || rec.Kind == audit.KindSuppressed {
		w.done = s.now()
	}
	req, steps := w.req, append([]string(nil), w.steps...)
	s.mu.Unlock()
	s.update(ctx, req, steps)
}

func detail(rec audit.Record, keys ...string) string {
	var d map[string]any
	_ = json.Unmarshal(rec.Details, &d)
	var parts []string
	for _, k := range keys {
		if v, ok := d[k]; ok && v != nil && v != "" {
			parts = append(parts, fmt.Sprint(v))
		}
	}
	return strings.Join(parts, ": ")
}

// inGroup reports whether user is in the Slack user group, from a cache
// refreshed every GroupCacheFor.
func (s *Slack) inGroup(ctx context.Context, group, user string) (bool, error) {
	s.mu.Lock()
	g, ok := s.groups[group]
	s.mu.Unlock()
	if !ok || s.now().Sub(g.at) > s.cfg.GroupCacheFor {
		members, err := s.api.GetUserGroupMembersContext(ctx, group)
		if err != nil {
			return false, err
		}
		g = groupMembers{users: map[string]bool{}, at: s.now()}
		for _, m := range members {
			g.users[m] = true
		}
		s.mu.Lock()
		s.groups[group] = g
		s.mu.Unlock()
	}
	return g.users[user], nil
}

// summary is the message's text: what notifications and clients without
// Block Kit show.
func summary(r approval.Request) string {
	return fmt.Sprintf("healer asks approval (%s): %s on %s — %s", r.ID,
		esc(r.Remediator, maxField), esc(r.Target, maxField), esc(r.Outcome(), maxField))
}

// blocks is the Block Kit message of a request: what, why, target,
// blast radius, runbook, then the buttons while it is pending, or its
// outcome and the action's steps once decided.
func (s *Slack) blocks(r approval.Request, steps []string) []slack.Block {
	need := "one approval"
	if r.Need > 1 {
		need = fmt.Sprintf("%d approvals from different people", r.Need)
	}
	params := "none"
	if len(r.Params) > 0 {
		// As written (no \u003c for <): code escapes it for Slack.
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(r.Params)
		params = code(strings.TrimSuffix(b.String(), "\n"), maxField)
	}
	why := esc(r.Reason, maxText)
	if r.Rule != "" {
		why = "rule " + code(r.Rule, maxField) + ": " + why
	}
	budget := esc(r.Budget, maxField)
	if budget == "" {
		budget = "not disruptive"
	}
	fields := []*slack.TextBlockObject{
		mrkdwn("*Target*\n" + code(r.Target, maxField)),
		mrkdwn("*Remediator*\n" + code(r.Remediator, maxField)),
		mrkdwn("*Params*\n" + params),
		mrkdwn("*Needs*\n" + need),
		mrkdwn("*Blast radius*\n" + budget),
		mrkdwn(fmt.Sprintf("*Expires*\n<!date^%d^{time} ({date_short})|%s>", r.Expires.Unix(), r.Expires.UTC().Format(time.RFC3339))),
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(plain(esc(fmt.Sprintf("Approve %s on %s?", r.Remediator, r.Target), maxHeader))),
		slack.NewSectionBlock(mrkdwn("*Why*: "+why), nil, nil),
		slack.NewSectionBlock(nil, fields, nil),
	}
	if r.Requester != "" {
		blocks = append(blocks, slack.NewContextBlock("", mrkdwn("Requested by "+esc(r.Requester, maxField)+", who cannot approve it.")))
	}
	links := s.links(r.Runbook, r.Target)
	blocks = append(blocks, slack.NewContextBlock("", mrkdwn(strings.TrimPrefix(links+" · ", " · ")+"`"+r.ID+"` · digest `"+r.Digest[:12]+"`")))
	if r.State == approval.StatePending {
		value := r.ID + ":" + r.Digest
		approve := slack.NewButtonBlockElement(ActionApprove, value, plain("Approve")).WithStyle(slack.StylePrimary)
		deny := slack.NewButtonBlockElement(ActionDeny, value, plain("Deny")).WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(plain("Deny this action?"), plain(esc("healer will not act on "+r.Target+".", maxHeader)), plain("Deny"), plain("Cancel")))
		blocks = append(blocks, slack.NewActionBlock("healer_vote", approve, deny))
		if got := len(r.Approvals()); got > 0 {
			blocks = append(blocks, slack.NewContextBlock("", mrkdwn(fmt.Sprintf("%d of %d: approved by %s", got, r.Need, esc(strings.Join(r.Persons(), ", "), maxField)))))
		}
		return blocks
	}
	icon := map[string]string{approval.StateApproved: ":white_check_mark:", approval.StateDenied: ":no_entry_sign:", approval.StateExpired: ":hourglass:"}[r.State]
	blocks = append(blocks, slack.NewSectionBlock(mrkdwn(icon+" *"+esc(cap1(r.Outcome()), maxText)+"*"), nil, nil))
	if len(steps) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(strings.Join(steps, "\n")), nil, nil))
	}
	return blocks
}

// links are the runbook and audit page links of a message.
func (s *Slack) links(runbook, target string) string {
	if s.cfg.ExternalURL == "" {
		if runbook != "" {
			return "Runbook: " + code(runbook, maxField)
		}
		return ""
	}
	base := strings.TrimSuffix(s.cfg.ExternalURL, "/")
	var parts []string
	if runbook != "" {
		parts = append(parts, "<"+linkURL(base+"/"+strings.TrimPrefix(runbook, "/"))+"|Runbook>")
	}
	if target != "" {
		parts = append(parts, "<"+linkURL(base+"/?target="+url.QueryEscape(target))+"|Audit trail>")
	}
	return strings.Join(parts, " · ")
}

// linkURL is u made safe as the address of a Slack link <u|label>: the
// characters that would end the address or start an entity are
// percent-encoded (& becomes &amp;, as Slack asks), so a runbook path
// cannot turn the link into another one.
func linkURL(u string) string {
	return strings.NewReplacer("<", "%3C", ">", "%3E", "|", "%7C", " ", "%20", "&", "&amp;").Replace(u)
}

func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
}

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}

func cap1(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

package chatops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/slack-go/slack"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/engine/guard"
)

// Paths Slack sends requests to.
const (
	InteractionsPath = "/slack/interactions"
	CommandsPath     = "/slack/commands"
)

// ReplayBucket remembers the signatures of requests already served.
const ReplayBucket = "healer_slack_seen"

// EnsureReplayBucket creates the bucket of seen request signatures; an
// entry lives 10 minutes, longer than the 5 minutes a timestamp is
// accepted.
func EnsureReplayBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureKV(ctx, js, bus.KV{
		Bucket: ReplayBucket, Description: "healer: signatures of Slack requests already served (replay protection)",
		Replicas: replicas, History: 1, TTL: 10 * time.Minute,
	})
}

// maxBody bounds a request from Slack; real ones are a few KiB.
const maxBody = 256 << 10

// verified reads the request body and checks it came from Slack: a valid
// v0 signature with the signing secret, a timestamp within 5 minutes, and
// a signature not seen before (on any replica). It writes the refusal
// and returns false otherwise.
func (s *Slack) verified(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "request body too large or unreadable", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	sv, err := slack.NewSecretsVerifier(r.Header, s.secrets.SigningSecret)
	if err == nil {
		_, _ = sv.Write(body)
		err = sv.Ensure()
	}
	if err != nil {
		s.Log.WarnContext(r.Context(), "slack: request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		msg := "signature verification failed"
		if errors.Is(err, slack.ErrExpiredTimestamp) {
			msg = "request timestamp too old"
		}
		http.Error(w, msg, http.StatusUnauthorized)
		return nil, false
	}
	// The key is what the signature covers (timestamp and body), not the
	// signature's spelling, which may be re-cased and still verify.
	h := sha256.New()
	h.Write([]byte(r.Header.Get("X-Slack-Request-Timestamp") + ":"))
	h.Write(body)
	sum := h.Sum(nil)
	if _, err := s.Replay.Create(r.Context(), hex.EncodeToString(sum), []byte(r.URL.Path)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			s.Log.WarnContext(r.Context(), "slack: replayed request refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			http.Error(w, "request already served (replay)", http.StatusUnauthorized)
			return nil, false
		}
		// Fail closed: a request that cannot be checked for replay is
		// not served; Slack shows the user an error.
		s.Log.ErrorContext(r.Context(), "slack: replay check unavailable", "err", err)
		http.Error(w, "replay check unavailable", http.StatusServiceUnavailable)
		return nil, false
	}
	return body, true
}

// ServeInteractions serves InteractionsPath: the Approve and Deny buttons.
func (s *Slack) ServeInteractions(w http.ResponseWriter, r *http.Request) {
	body, ok := s.verified(w, r)
	if !ok {
		return
	}
	clicks, err := parseClicks(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, c := range clicks {
		voter, err := s.Broker.SlackVoter(r.Context(), c.user)
		var req approval.Request
		if err == nil {
			req, err = s.Broker.Decide(r.Context(), c.id, approval.Ballot{Voter: voter, Approve: c.approve, Digest: c.digest})
		}
		if err != nil {
			s.Log.WarnContext(r.Context(), "slack: vote refused", "approval_id", c.id, "user", c.user, "err", err)
			s.tell(r.Context(), c.channel, c.user, "Your vote on "+esc(c.id, maxField)+" did not count: "+esc(err.Error(), maxText))
			continue
		}
		s.Log.InfoContext(r.Context(), "slack: vote", "approval_id", c.id, "user", c.user, "approve", c.approve, "state", req.State)
	}
	w.WriteHeader(http.StatusOK)
}

// press is a press of Approve or Deny on an approval message.
type press struct {
	id, digest, user, channel string
	approve                   bool
}

// parseClicks reads the Approve and Deny presses of an interaction body
// (a form whose payload field is the interaction as JSON). Other
// interactions have none; a body that is not an interaction is an error.
func parseClicks(body []byte) ([]press, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errors.New("body is not a form")
	}
	var cb slack.InteractionCallback
	if err := json.Unmarshal([]byte(form.Get("payload")), &cb); err != nil {
		return nil, errors.New("payload is not an interaction")
	}
	if cb.Type != slack.InteractionTypeBlockActions {
		return nil, nil // nothing else is asked of healer
	}
	var out []press
	for _, a := range cb.ActionCallback.BlockActions {
		if a == nil || (a.ActionID != ActionApprove && a.ActionID != ActionDeny) {
			continue
		}
		id, digest, _ := strings.Cut(a.Value, ":")
		out = append(out, press{id: id, digest: digest, user: cb.User.ID, channel: cb.Channel.ID, approve: a.ActionID == ActionApprove})
	}
	return out, nil
}

// tell shows one user a message only they see.
func (s *Slack) tell(ctx context.Context, channel, user, text string) {
	if channel == "" {
		channel = s.cfg.Channel
	}
	if _, err := s.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false)); err != nil {
		s.Log.WarnContext(ctx, "slack: tell user", "user", user, "err", err)
	}
}

// commandUsage is the answer to /healer help and to a command healer does
// not know.
const commandUsage = "Usage: `/healer status` · `/healer pause [remediator|target-pattern ...] [for DURATION] [: reason]` · " +
	"`/healer resume [remediator|target-pattern ...]` · `/healer approve ID [DIGEST]` · `/healer deny ID [reason]` (ID and DIGEST are on the request's message)"

// ServeCommands serves CommandsPath: /healer status | pause | resume |
// approve | deny. The answer is the HTTP response, shown to the caller
// (pause and resume to the channel).
func (s *Slack) ServeCommands(w http.ResponseWriter, r *http.Request) {
	body, ok := s.verified(w, r)
	if !ok {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	cmd, err := slack.SlashCommandParse(r)
	if err != nil {
		http.Error(w, "body is not a slash command", http.StatusBadRequest)
		return
	}
	text, public := s.command(r.Context(), cmd)
	kind := slack.ResponseTypeEphemeral
	if public {
		kind = slack.ResponseTypeInChannel
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(slack.Msg{ResponseType: kind, Text: text})
}

func (s *Slack) command(ctx context.Context, cmd slack.SlashCommand) (text string, public bool) {
	words := strings.Fields(cmd.Text)
	if len(words) == 0 {
		return commandUsage, false
	}
	verb, args := words[0], words[1:]
	who := cmd.UserID
	switch verb {
	case "status":
		return s.status(ctx), false
	case "approve", "deny":
		if len(args) == 0 {
			return "Which one? `/healer " + verb + " apr-…` (the id is on the request's message).", false
		}
		req, err := s.Broker.Get(ctx, args[0])
		if err != nil {
			return esc(err.Error(), maxText), false
		}
		reason := strings.Join(args[1:], " ")
		digest := req.Digest
		if verb == "approve" {
			// An approval is for the action as the user saw it. With the
			// digest from the message, that is checked; without it, it is
			// taken as the only version ever posted, and refused if the
			// action has changed since it was first posted.
			switch {
			case len(args) >= 2 && len(args[1]) >= 8 && isHex(args[1]):
				if !strings.HasPrefix(req.Digest, strings.ToLower(args[1])) {
					digest = args[1] // refused below: the action changed
				}
				reason = strings.Join(args[2:], " ")
			case req.Replaced > 0:
				return "The action of " + esc(req.ID, maxField) + " changed since it was first posted: approve what you saw, `/healer approve " + esc(req.ID, maxField) + " &lt;digest&gt;`, with the digest on its latest message.", false
			}
		}
		voter, err := s.Broker.SlackVoter(ctx, who)
		if err == nil {
			req, err = s.Broker.Decide(ctx, req.ID, approval.Ballot{Voter: voter, Approve: verb == "approve", Digest: digest, Reason: reason})
		}
		if err != nil {
			return "Not counted: " + esc(err.Error(), maxText), false
		}
		return fmt.Sprintf("%s: %s (%s on %s).", esc(req.ID, maxField), esc(req.Outcome(), maxText), esc(req.Remediator, maxField), esc(req.Target, maxField)), false
	case "pause", "resume":
		if s.Pauses == nil {
			return "Pauses are not available in this healer.", false
		}
		voter, err := s.Broker.SlackVoter(ctx, who)
		if err != nil {
			return "Only approvers may pause or resume healer.", false
		}
		scope, err := parseScope(args, s.Pauses.Known)
		if err != nil {
			return esc(err.Error(), maxText) + "\n" + commandUsage, false
		}
		actor := voter.Actor()
		by := voter.Person() + " (slack " + who + ")"
		if verb == "pause" {
			p := guard.Pause{Remediator: scope.remediator, Target: scope.target, Reason: scope.reason, By: by}
			if p.Reason == "" {
				p.Reason = "paused from Slack"
			}
			if scope.dur > 0 {
				p.Until = s.now().Add(scope.dur)
			}
			if err := p.Validate(); err != nil {
				return esc(err.Error(), maxText), false
			}
			if err := s.Pauses.SetPause(ctx, &p, actor); err != nil {
				return "Could not pause: " + esc(err.Error(), maxText), false
			}
			until := "until resumed"
			if !p.Until.IsZero() {
				until = fmt.Sprintf("until <!date^%d^{time}|%s>", p.Until.Unix(), p.Until.UTC().Format(time.RFC3339))
			}
			return fmt.Sprintf(":double_vertical_bar: <@%s> paused %s %s (%s).", who, esc(p.Scope(), maxField), until, esc(p.ID, maxField)), true
		}
		var cleared []string
		for _, p := range s.Pauses.List() {
			if p.Remediator != scope.remediator || p.Target != scope.target {
				continue
			}
			if _, err := s.Pauses.ClearPause(ctx, p.ID, actor); err != nil {
				return "Could not resume: " + esc(err.Error(), maxText), false
			}
			cleared = append(cleared, p.ID)
		}
		probe := guard.Pause{Remediator: scope.remediator, Target: scope.target}
		if len(cleared) == 0 {
			return "No pause of exactly " + esc(probe.Scope(), maxField) + " to resume. `/healer status` lists them.", false
		}
		return fmt.Sprintf(":arrow_forward: <@%s> resumed %s (%s).", who, esc(probe.Scope(), maxField), esc(strings.Join(cleared, ", "), maxText)), true
	case "help":
		return commandUsage, false
	default:
		return fmt.Sprintf("Unknown command %s.\n%s", esc(strconv.Quote(verb), maxField), commandUsage), false
	}
}

type scope struct {
	remediator, target, reason string
	dur                        time.Duration
}

// parseScope reads "[remediator] [target-pattern] [for DURATION] [: reason]".
// A word with a slash or a wildcard is a target pattern; a known
// remediator name is a remediator.
func parseScope(args []string, known func(string) bool) (scope, error) {
	var sc scope
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, ":"):
			sc.reason = strings.TrimSpace(strings.TrimPrefix(strings.Join(args[i:], " "), ":"))
			return sc, nil
		case a == "for":
			if i+1 >= len(args) {
				return sc, errors.New("for what duration? for example `for 2h`")
			}
			d, err := time.ParseDuration(args[i+1])
			if err != nil || d <= 0 {
				return sc, fmt.Errorf("%q is not a duration such as 30m or 2h", args[i+1])
			}
			sc.dur = d
			i++
		case strings.ContainsAny(a, "/*?["):
			if sc.target != "" {
				return sc, errors.New("one target pattern at most")
			}
			if _, err := path.Match(a, "x"); err != nil {
				return sc, fmt.Errorf("target pattern %q: %w", a, err)
			}
			sc.target = a
		case known(a):
			if sc.remediator != "" {
				return sc, errors.New("one remediator at most")
			}
			sc.remediator = a
		default:
			return sc, fmt.Errorf("%q is neither a remediator nor a target pattern (targets look like node/worker-*)", a)
		}
	}
	return sc, nil
}

// status is the answer to /healer status.
func (s *Slack) status(ctx context.Context) string {
	var b strings.Builder
	reqs, err := s.Broker.List(ctx)
	pending := 0
	if err != nil {
		fmt.Fprintf(&b, "*Approvals*: unavailable (%s)\n", esc(err.Error(), maxText))
	} else {
		for _, r := range reqs {
			if r.State == approval.StatePending {
				if pending == 0 {
					b.WriteString("*Waiting for approval*\n")
				}
				pending++
				fmt.Fprintf(&b, "• %s %s on %s: %s\n", code(r.ID, maxField), esc(r.Remediator, maxField), code(r.Target, maxField), esc(r.Outcome(), maxField))
			}
		}
		if pending == 0 {
			b.WriteString("*Waiting for approval*: nothing\n")
		}
	}
	if s.Pauses != nil {
		ps := s.Pauses.List()
		if len(ps) == 0 {
			b.WriteString("*Pauses*: none\n")
		} else {
			b.WriteString("*Pauses*\n")
			for _, p := range ps {
				until := "until resumed"
				if !p.Until.IsZero() {
					until = "until " + p.Until.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(&b, "• %s %s, %s, by %s: %s\n", code(p.ID, maxField), esc(p.Scope(), maxField), until, esc(p.By, maxField), esc(p.Reason, maxField))
			}
		}
	}
	if s.Status != nil {
		for _, l := range s.Status(ctx) {
			b.WriteString(l + "\n")
		}
	}
	return strings.TrimSpace(b.String())
}

func isHex(s string) bool {
	_, err := hex.DecodeString(strings.ToLower(s) + strings.Repeat("0", len(s)%2))
	return err == nil
}

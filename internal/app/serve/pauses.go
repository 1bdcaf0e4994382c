package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/internal/httpauth"
)

// PausesPath is the API of pauses, the kill switch and maintenance
// windows: GET lists them, POST sets one, DELETE <path>/<id> clears one.
const PausesPath = "/api/v1/pauses"

// PauseRequest is the body of a POST: a pause for the remediator and
// target pattern (both optional: neither is the kill switch), either for
// a duration from now or as a window from..until.
type PauseRequest struct {
	Remediator string    `json:"remediator,omitempty"`
	Target     string    `json:"target,omitempty"`
	For        string    `json:"for,omitempty"`
	From       time.Time `json:"from,omitzero"`
	Until      time.Time `json:"until,omitzero"`
	Reason     string    `json:"reason"`
	// By is who the caller says they are. It is kept only as a claim
	// (claimed_by in the audit record): the pause is recorded as set by
	// the owner of the token, "api" for the shared API token.
	By string `json:"by,omitempty"`
}

// apiIdentity names whoever holds the shared API token: it names nobody.
const apiIdentity = "api"

// pausesHandler serves PausesPath; each change is audited before it is
// answered.
type pausesHandler struct {
	pauses *guard.Pauses
	trail  *audit.Trail
	known  func(string) bool
	log    *slog.Logger
	// apiToken opens the API; approver, when approvers are configured,
	// names the approver whose own token a request carries ("" for none).
	apiToken string
	approver func(token string) string
}

// identify names the caller: an approver by their own token, "api" for
// the shared API token, "" for anyone else.
func (h *pausesHandler) identify(r *http.Request) string {
	if h.approver != nil {
		if name := h.approver(httpauth.BearerToken(r)); name != "" {
			return name
		}
	}
	if httpauth.Valid([]byte(h.apiToken), r) {
		return apiIdentity
	}
	return ""
}

func (h *pausesHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, PausesPath), "/")
	who := h.identify(r)
	if who == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healer"`)
		http.Error(w, "missing or invalid bearer token: the API token, or an approver's own token", http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodGet && id == "":
		writeJSON(w, http.StatusOK, h.pauses.List())
	case r.Method == http.MethodPost && id == "":
		h.set(w, r, who)
	case r.Method == http.MethodDelete && id != "":
		h.clear(w, r, id, who)
	default:
		http.Error(w, "GET or POST "+PausesPath+", DELETE "+PausesPath+"/<id>", http.StatusMethodNotAllowed)
	}
}

func (h *pausesHandler) set(w http.ResponseWriter, r *http.Request, who string) {
	var req PauseRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "pause: "+err.Error(), http.StatusBadRequest)
		return
	}
	p := guard.Pause{Remediator: req.Remediator, Target: req.Target, From: req.From, Until: req.Until, Reason: req.Reason, By: who}
	if req.For != "" {
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 {
			http.Error(w, fmt.Sprintf("pause: for %q: want a positive duration such as 2h", req.For), http.StatusBadRequest)
			return
		}
		if !req.Until.IsZero() {
			http.Error(w, "pause: give for or until, not both", http.StatusBadRequest)
			return
		}
		start := time.Now()
		if !req.From.IsZero() {
			start = req.From
		}
		p.Until = start.Add(d)
	}
	if p.Remediator != "" && !h.known(p.Remediator) {
		http.Error(w, fmt.Sprintf("pause: remediator %q: healer has no such remediator", p.Remediator), http.StatusBadRequest)
		return
	}
	if err := p.Validate(); err != nil {
		http.Error(w, "pause: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := h.setPause(r.Context(), &p, actorOf(who), req.By); err != nil {
		http.Error(w, "pause: could not store it: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

func (h *pausesHandler) clear(w http.ResponseWriter, r *http.Request, id, who string) {
	if who == apiIdentity && h.approver != nil {
		for _, p := range h.pauses.List() {
			if p.ID == id && p.KillSwitch() {
				http.Error(w, "pause: clearing the kill switch needs an approver's own token (approvals.approvers[].tokenFile); the shared API token names nobody", http.StatusForbidden)
				return
			}
		}
	}
	p, err := h.ClearPause(r.Context(), id, actorOf(who))
	switch {
	case errors.Is(err, guard.ErrNoPause):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// actorOf is the audit actor of an API caller: "api" for the shared
// token, api:<approver> for an approver's own.
func actorOf(who string) string {
	if who == apiIdentity {
		return apiIdentity
	}
	return "api:" + who
}

// SetPause stores p and audits it as set by actor.
func (h *pausesHandler) SetPause(ctx context.Context, p *guard.Pause, actor string) error {
	return h.setPause(ctx, p, actor, "")
}

// setPause stores p and audits it as set by actor; claimed is who the
// caller said they were, if anything.
func (h *pausesHandler) setPause(ctx context.Context, p *guard.Pause, actor, claimed string) error {
	if err := h.pauses.Set(ctx, p); err != nil {
		h.log.ErrorContext(ctx, "store pause", "err", err)
		return err
	}
	if _, err := h.trail.Append(ctx, audit.Record{
		Kind: audit.KindPauseSet, Actor: actor, Target: p.Target, Remediator: p.Remediator,
		Details: audit.Details("pause", p.ID, "scope", p.Scope(), "from", p.From, "until", p.Until, "reason", p.Reason, "by", p.By, "claimed_by", claimed),
	}); err != nil {
		h.log.ErrorContext(ctx, "audit pause", "pause", p.ID, "err", err)
	}
	h.log.WarnContext(ctx, "pause set", "pause", p.ID, "scope", p.Scope(), "by", p.By, "until", p.Until, "reason", p.Reason)
	return nil
}

// ClearPause clears pause id and audits it as cleared by actor.
func (h *pausesHandler) ClearPause(ctx context.Context, id, actor string) (guard.Pause, error) {
	p, err := h.pauses.Clear(ctx, id)
	if err != nil {
		return p, err
	}
	if _, err := h.trail.Append(ctx, audit.Record{
		Kind: audit.KindPauseCleared, Actor: actor, Target: p.Target, Remediator: p.Remediator,
		Details: audit.Details("pause", p.ID, "scope", p.Scope(), "set_by", p.By, "reason", p.Reason),
	}); err != nil {
		h.log.ErrorContext(ctx, "audit pause cleared", "pause", p.ID, "err", err)
	}
	h.log.WarnContext(ctx, "pause cleared", "pause", p.ID, "scope", p.Scope(), "by", actor)
	return p, nil
}

// List returns the pauses in force or to come.
func (h *pausesHandler) List() []guard.Pause { return h.pauses.List() }

// Known reports whether healer has a remediator of that name.
func (h *pausesHandler) Known(name string) bool { return h.known(name) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

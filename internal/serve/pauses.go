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
	By         string    `json:"by"`
}

// pausesHandler serves PausesPath; each change is audited before it is
// answered.
type pausesHandler struct {
	pauses *guard.Pauses
	trail  *audit.Trail
	known  func(string) bool
	log    *slog.Logger
}

func (h *pausesHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, PausesPath), "/")
	switch {
	case r.Method == http.MethodGet && id == "":
		writeJSON(w, http.StatusOK, h.pauses.List())
	case r.Method == http.MethodPost && id == "":
		h.set(w, r)
	case r.Method == http.MethodDelete && id != "":
		h.clear(w, r, id)
	default:
		http.Error(w, "GET or POST "+PausesPath+", DELETE "+PausesPath+"/<id>", http.StatusMethodNotAllowed)
	}
}

func (h *pausesHandler) set(w http.ResponseWriter, r *http.Request) {
	var req PauseRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "pause: "+err.Error(), http.StatusBadRequest)
		return
	}
	p := guard.Pause{Remediator: req.Remediator, Target: req.Target, From: req.From, Until: req.Until, Reason: req.Reason, By: req.By}
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
	if err := h.SetPause(r.Context(), &p, "api:"+p.By); err != nil {
		http.Error(w, "pause: could not store it: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

func (h *pausesHandler) clear(w http.ResponseWriter, r *http.Request, id string) {
	by := r.URL.Query().Get("by")
	if by == "" {
		http.Error(w, "pause: clear needs ?by=<who>", http.StatusBadRequest)
		return
	}
	p, err := h.ClearPause(r.Context(), id, "api:"+by)
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

// SetPause stores p and audits it as set by actor.
func (h *pausesHandler) SetPause(ctx context.Context, p *guard.Pause, actor string) error {
	if err := h.pauses.Set(ctx, p); err != nil {
		h.log.ErrorContext(ctx, "store pause", "err", err)
		return err
	}
	if _, err := h.trail.Append(ctx, audit.Record{
		Kind: audit.KindPauseSet, Actor: actor, Target: p.Target, Remediator: p.Remediator,
		Details: audit.Details("pause", p.ID, "scope", p.Scope(), "from", p.From, "until", p.Until, "reason", p.Reason, "by", p.By),
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

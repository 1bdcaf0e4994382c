package serve

import (
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

// pauseRequest is the body of a POST: a pause for the remediator and
// target pattern (both optional: neither is the kill switch), either for
// a duration from now or as a window from..until.
type pauseRequest struct {
	Remediator string    `json:"remediator"`
	Target     string    `json:"target"`
	For        string    `json:"for"`
	From       time.Time `json:"from"`
	Until      time.Time `json:"until"`
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
	var req pauseRequest
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
	if err := h.pauses.Set(r.Context(), &p); err != nil {
		h.log.ErrorContext(r.Context(), "store pause", "err", err)
		http.Error(w, "pause: could not store it: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if _, err := h.trail.Append(r.Context(), audit.Record{
		Kind: audit.KindPauseSet, Actor: "api:" + p.By, Target: p.Target, Remediator: p.Remediator,
		Details: audit.Details("pause", p.ID, "scope", p.Scope(), "from", p.From, "until", p.Until, "reason", p.Reason),
	}); err != nil {
		h.log.ErrorContext(r.Context(), "audit pause", "pause", p.ID, "err", err)
	}
	h.log.WarnContext(r.Context(), "pause set", "pause", p.ID, "scope", p.Scope(), "by", p.By, "until", p.Until, "reason", p.Reason)
	writeJSON(w, http.StatusCreated, p)
}

func (h *pausesHandler) clear(w http.ResponseWriter, r *http.Request, id string) {
	by := r.URL.Query().Get("by")
	if by == "" {
		http.Error(w, "pause: clear needs ?by=<who>", http.StatusBadRequest)
		return
	}
	p, err := h.pauses.Clear(r.Context(), id)
	switch {
	case errors.Is(err, guard.ErrNoPause):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if _, err := h.trail.Append(r.Context(), audit.Record{
		Kind: audit.KindPauseCleared, Actor: "api:" + by, Target: p.Target, Remediator: p.Remediator,
		Details: audit.Details("pause", p.ID, "scope", p.Scope(), "set_by", p.By, "reason", p.Reason),
	}); err != nil {
		h.log.ErrorContext(r.Context(), "audit pause cleared", "pause", p.ID, "err", err)
	}
	h.log.WarnContext(r.Context(), "pause cleared", "pause", p.ID, "scope", p.Scope(), "by", by)
	writeJSON(w, http.StatusOK, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

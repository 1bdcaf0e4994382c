package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/selfheal/healer/internal/httpauth"
)

// cookieName carries the id of a sign-in session of the web page, so a
// browser can stay signed in without sending an Authorization header. The
// cookie is never the token itself.
const cookieName = "healer_session"

// sessionTTL is how long a sign-in lasts; maxSessions bounds how many are
// kept (the oldest goes first).
const (
	sessionTTL  = 12 * time.Hour
	maxSessions = 10000
)

//go:embed web
var webFiles embed.FS

// PendingApproval is an approval request as the page shows it.
type PendingApproval struct {
	ID, EventID, Target, Remediator string
	Reason, Rule, Digest, Outcome   string
	Need, Have                      int
	Expires                         time.Time
}

// PageApprovals lets the page show the requests waiting for approval and
// vote on them, with the same rules as Slack and the CLI. A vote carries
// the approver's own token, which names them; Vote returns that name.
type PageApprovals interface {
	Pending(ctx context.Context) ([]PendingApproval, error)
	Vote(ctx context.Context, id, token, digest string, approve bool, reason string) (by string, err error)
}

// PageOptions are the page's optional parts.
type PageOptions struct {
	// Approvals, when set, shows pending approvals with Approve and Deny.
	Approvals PageApprovals
	// Runbooks, when set, serves the runbooks at /runbooks/<name>.md and
	// links each record to its remediator's.
	Runbooks fs.FS
}

// NewPage returns the audit web page served at "/": the latest records,
// filterable by target, remediator, kind, event and time and updated live;
// a record's detail with the whole chain of its event and the chain's
// status; the requests waiting for approval. It is rendered on the server
// with its assets embedded (no CDN). Like the API it needs the API token:
// as a bearer token, or entered once in the sign-in form (POST /login),
// which keeps it in an HttpOnly, SameSite=Strict cookie.
func NewPage(t *Trail, apiToken string, log *slog.Logger, opts PageOptions) http.Handler {
	p := &page{trail: t, token: []byte(apiToken), log: log, opts: opts, sessions: newSessions(time.Now), tmpl: template.Must(
		template.New("page").Funcs(template.FuncMap{
			"time":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") },
			"short": func(s string) string { return s[:min(len(s), 12)] },
			"json":  compactJSON,
			"class": func(k Kind) string { return strings.ReplaceAll(string(k), ".", "-") },
		}).ParseFS(webFiles, "web/*.html"))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.auth(p.list))
	mux.HandleFunc("GET /records/{seq}", p.auth(p.record))
	mux.HandleFunc("GET /verify", p.auth(p.verify))
	mux.HandleFunc("GET /live", p.auth(p.live))
	mux.HandleFunc("POST /approvals/{id}", p.auth(p.vote))
	mux.HandleFunc("GET /runbooks/{name}", p.auth(p.runbook))
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("POST /logout", p.auth(p.logout))
	// Even the stylesheet and script need the token: nothing but health
	// and metrics is served without one (the sign-in form is plain).
	mux.HandleFunc("GET /assets/style.css", p.auth(p.asset("web/style.css", "text/css; charset=utf-8")))
	mux.HandleFunc("GET /assets/live.js", p.auth(p.asset("web/live.js", "text/javascript; charset=utf-8")))
	return securityHeaders(mux)
}

type page struct {
	trail    *Trail
	token    []byte
	log      *slog.Logger
	opts     PageOptions
	tmpl     *template.Template
	sessions *sessions
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func (p *page) authorized(r *http.Request) bool {
	if httpauth.Valid(p.token, r) {
		return true
	}
	c, err := r.Cookie(cookieName)
	return err == nil && len(p.token) > 0 && p.sessions.valid(c.Value)
}

// auth serves the sign-in form to a request without the token.
func (p *page) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !p.authorized(r) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			p.render(w, r, "login", map[string]any{"Next": r.URL.RequestURI()})
			return
		}
		next(w, r)
	}
}

func (p *page) render(w http.ResponseWriter, r *http.Request, name string, data map[string]any) {
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		p.log.WarnContext(r.Context(), "audit page: render", "template", name, "err", err)
		http.Error(w, "page unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

// csrf is the token every form carries: derived from the API token, so
// only a page that has it (not another site's form) can post.
func (p *page) csrf() string {
	sum := sha256.Sum256(append([]byte("healer-page-form:"), p.token...))
	return hex.EncodeToString(sum[:16])
}

func (p *page) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	next := localPath(r.PostFormValue("next"))
	if len(p.token) == 0 || subtle.ConstantTimeCompare([]byte(tok), p.token) != 1 {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		p.render(w, r, "login", map[string]any{"Error": "That token is not the API token.", "Next": next})
		return
	}
	id, err := p.sessions.start()
	if err != nil {
		p.log.ErrorContext(r.Context(), "audit page: start a session", "err", err)
		http.Error(w, "sign-in unavailable", http.StatusInternalServerError)
		return
	}
	//nolint:gosec // Secure follows the connection: the dev default is plain HTTP on loopback
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: id, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r), MaxAge: int(sessionTTL.Seconds()),
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// asset serves one embedded file.
func (p *page) asset(name, contentType string) http.HandlerFunc {
	b, err := webFiles.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("audit page: embedded %s: %v", name, err)) // the embed directive includes it
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "private, max-age=300")
		_, _ = w.Write(b)
	}
}

// secure reports whether the browser reached healer over HTTPS, directly
// or through a TLS-terminating proxy; the sign-in cookie is then Secure.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (p *page) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		p.sessions.end(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r), MaxAge: -1}) //nolint:gosec // Secure follows the connection, as at sign-in
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// list is the page itself: filters, pending approvals, the latest records.
func (p *page) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	msg := q.Get("msg")
	q.Del("msg")
	if q.Get("limit") == "" {
		q.Set("limit", "200")
	}
	f, err := parseFilter(q, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	recs, err := p.trail.Query(r.Context(), f)
	if err != nil {
		p.log.WarnContext(r.Context(), "audit page: query", "err", err)
		http.Error(w, "audit trail unavailable", http.StatusServiceUnavailable)
		return
	}
	var last uint64
	if n, err := p.trail.LastSeq(r.Context()); err == nil {
		last = n
	}
	// Newest first on the page.
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	data := map[string]any{
		"Records": recs, "Target": q.Get("target"), "Remediator": q.Get("remediator"), "Event": q.Get("event_id"),
		"Kind": q.Get("kind"), "Since": q.Get("since"), "Kinds": Kinds(), "Last": last,
		"Message": msg, "CSRF": p.csrf(), "HasApprovals": p.opts.Approvals != nil,
	}
	if p.opts.Approvals != nil {
		pending, err := p.opts.Approvals.Pending(r.Context())
		if err != nil {
			data["ApprovalsError"] = err.Error()
		}
		data["Pending"] = pending
	}
	p.render(w, r, "list", data)
}

// record is one record's detail: its fields, the chain of its event, the
// chain's status around it, its trace id and runbook.
func (p *page) record(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		http.Error(w, "no such record: want /records/<seq>", http.StatusNotFound)
		return
	}
	// The record and the one before it, to check the link between them.
	after := seq - 1
	if after > 0 {
		after--
	}
	near, err := p.trail.Query(r.Context(), Filter{After: after, Limit: 2, fromStart: true})
	if err != nil {
		http.Error(w, "audit trail unavailable", http.StatusServiceUnavailable)
		return
	}
	var rec, prev *Record
	for i := range near {
		switch near[i].Seq {
		case seq:
			rec = &near[i]
		case seq - 1:
			prev = &near[i]
		}
	}
	if rec == nil {
		http.Error(w, fmt.Sprintf("no record %d", seq), http.StatusNotFound)
		return
	}
	var chain []Record
	if rec.EventID != "" {
		// The chain of an event starts with its event record; look back
		// a day from this record, the longest an escalation ladder runs.
		chain, err = p.trail.Query(r.Context(), Filter{EventID: rec.EventID, Since: rec.Time.Add(-24 * time.Hour), Limit: MaxLimit})
		if err != nil {
			http.Error(w, "audit trail unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	status := chainStatus(rec, prev)
	var details bytes.Buffer
	if err := json.Indent(&details, rec.Details, "", "  "); err != nil {
		details.Write(rec.Details)
	}
	data := map[string]any{
		"R": rec, "Chain": chain, "Status": status, "Intact": status == "", "Details": details.String(),
	}
	if rb := p.runbookFor(rec.Remediator); rb != "" {
		data["Runbook"] = rb
	}
	p.render(w, r, "record", data)
}

// chainStatus checks rec's hash and its link to prev; "" when both hold.
func chainStatus(rec, prev *Record) string {
	if rec.Kind == kindUnreadable {
		return "this stream message is not a readable record"
	}
	if got := rec.ComputeHash(); got != rec.Hash {
		return fmt.Sprintf("hash mismatch: the record's content hashes to %s, it says %s", got[:12], rec.Hash[:min(12, len(rec.Hash))])
	}
	switch {
	case rec.Seq == 1 && rec.PrevHash != GenesisHash:
		return "the first record does not start from the genesis hash"
	case rec.Seq > 1 && prev == nil:
		return fmt.Sprintf("record %d, which this one follows, is missing", rec.Seq-1)
	case rec.Seq > 1 && prev.Hash != rec.PrevHash:
		return fmt.Sprintf("prev_hash does not match record %d's hash", rec.Seq-1)
	}
	return ""
}

func (p *page) runbookFor(remediator string) string {
	if p.opts.Runbooks == nil || remediator == "" {
		return ""
	}
	name := remediator + ".md"
	if _, err := fs.Stat(p.opts.Runbooks, name); err != nil {
		return ""
	}
	return "/runbooks/" + name
}

// verify checks the whole chain.
func (p *page) verify(w http.ResponseWriter, r *http.Request) {
	res, err := p.trail.Verify(r.Context())
	if err != nil {
		http.Error(w, "audit trail unavailable", http.StatusServiceUnavailable)
		return
	}
	p.render(w, r, "verify", map[string]any{"V": res})
}

func (p *page) runbook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if p.opts.Runbooks == nil || path.Base(name) != name || !strings.HasSuffix(name, ".md") {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(p.opts.Runbooks, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	p.render(w, r, "runbook", map[string]any{"Name": strings.TrimSuffix(name, ".md"), "Text": string(b)})
}

// vote is the Approve / Deny form of a pending request.
func (p *page) vote(w http.ResponseWriter, r *http.Request) {
	if p.opts.Approvals == nil {
		http.NotFound(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(p.csrf())) != 1 {
		http.Error(w, "form token missing or wrong: reload the page", http.StatusForbidden)
		return
	}
	id := r.PathValue("id")
	approve := r.PostFormValue("vote") == "approve"
	if !approve && r.PostFormValue("vote") != "deny" {
		http.Error(w, "vote must be approve or deny", http.StatusBadRequest)
		return
	}
	by, err := p.opts.Approvals.Vote(r.Context(), id, strings.TrimSpace(r.PostFormValue("token")), r.PostFormValue("digest"), approve, r.PostFormValue("reason"))
	msg := fmt.Sprintf("%s: %s by %s counted.", id, map[bool]string{true: "approval", false: "denial"}[approve], by)
	if err != nil {
		p.log.WarnContext(r.Context(), "audit page: vote refused", "approval_id", id, "by", by, "err", err)
		msg = fmt.Sprintf("%s: not counted: %v", id, err)
	}
	http.Redirect(w, r, "/?msg="+url.QueryEscape(msg), http.StatusSeeOther)
}

// live streams the records appended after ?after= (or the Last-Event-ID
// the browser sends when it reconnects) that match the page's filter, as
// server-sent events.
func (p *page) live(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	q.Del("limit")
	f, err := parseFilter(q, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if id, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && id > f.After {
		f.After = id
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	records := make(chan Record, 256)
	go func() {
		err := p.trail.Follow(ctx, f.After, func(rec Record) {
			if f.match(&rec) {
				select {
				case records <- rec:
				case <-ctx.Done():
				}
			}
		})
		if err != nil && ctx.Err() == nil {
			p.log.WarnContext(ctx, "audit page: live", "err", err)
		}
		cancel()
	}()
	heartbeat := time.NewTicker(20 * time.Second)
	defer heartbeat.Stop()
	for {
		var chunk []byte
		select {
		case <-ctx.Done():
			return
		case rec := <-records:
			b, _ := json.Marshal(rec)
			chunk = fmt.Appendf(nil, "id: %d\nevent: record\ndata: %s\n\n", rec.Seq, b)
		case <-heartbeat.C:
			chunk = []byte(": still here\n\n")
		}
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return
		}
	}
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

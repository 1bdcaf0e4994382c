package audit

import (
	"crypto/subtle"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/selfheal/healer/internal/httpauth"
)

// cookieName carries the API token for the web page, so a browser can
// stay signed in without sending an Authorization header.
const cookieName = "healer_api_token"

// NewPage returns the audit web page served at "/": the latest records,
// filterable by target, remediator, kind and time, rendered on the server.
// Like the API it needs the API token: as a bearer token, or entered once
// in the sign-in form (POST /login), which keeps it in an HttpOnly cookie.
func NewPage(t *Trail, apiToken string, log *slog.Logger) http.Handler {
	p := &page{trail: t, token: []byte(apiToken), log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.list)
	mux.HandleFunc("POST /login", p.login)
	return mux
}

type page struct {
	trail *Trail
	token []byte
	log   *slog.Logger
}

func (p *page) authorized(r *http.Request) bool {
	if httpauth.Valid(p.token, r) {
		return true
	}
	c, err := r.Cookie(cookieName)
	return err == nil && len(p.token) > 0 && subtle.ConstantTimeCompare([]byte(c.Value), p.token) == 1
}

func (p *page) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	if len(p.token) == 0 || subtle.ConstantTimeCompare([]byte(tok), p.token) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		_ = pageTmpl.ExecuteTemplate(w, "login", "That token is not the API token.")
		return
	}
	//nolint:gosec // Secure follows the connection: the dev default is plain HTTP on loopback
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: tok, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int((12 * time.Hour).Seconds()),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (p *page) list(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	w.Header().Set("X-Frame-Options", "DENY")
	if !p.authorized(r) {
		w.WriteHeader(http.StatusUnauthorized)
		_ = pageTmpl.ExecuteTemplate(w, "login", "")
		return
	}
	q := r.URL.Query()
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
	// Newest first on the page.
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.ExecuteTemplate(w, "list", map[string]any{
		"Records": recs, "Target": q.Get("target"), "Remediator": q.Get("remediator"),
		"Kind": q.Get("kind"), "Since": q.Get("since"), "Kinds": Kinds(),
	}); err != nil {
		p.log.WarnContext(r.Context(), "audit page: render", "err", err)
	}
}

var pageTmpl = template.Must(template.New("page").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><title>healer audit</title>
<style>body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
code{font-size:12px;word-break:break-all}.suppressed{background:#fff6e0}.action\.failed{background:#fde8e8}.verified{background:#e8f8ea}</style></head><body>{{end}}
{{define "login"}}{{template "head"}}<h1>healer audit</h1>{{if .}}<p>{{.}}</p>{{end}}
<form method="post" action="/login"><label>API token <input type="password" name="token" autocomplete="off"></label> <button>Sign in</button></form></body></html>{{end}}
{{define "list"}}{{template "head"}}<h1>healer audit</h1>
<form method="get"><input name="target" placeholder="target (node/worker-1)" value="{{.Target}}">
<input name="remediator" placeholder="remediator" value="{{.Remediator}}">
<select name="kind"><option value="">any kind</option>{{$k := .Kind}}{{range .Kinds}}<option{{if eq (print .) $k}} selected{{end}}>{{.}}</option>{{end}}</select>
<input name="since" placeholder="since (1h or RFC 3339)" value="{{.Since}}"> <button>Filter</button></form>
<table><thead><tr><th>seq</th><th>time</th><th>kind</th><th>target</th><th>remediator</th><th>actor</th><th>details</th></tr></thead><tbody>
{{range .Records}}<tr class="{{.Kind}}" id="seq-{{.Seq}}"><td>{{.Seq}}</td><td>{{.Time.Format "2006-01-02 15:04:05.000Z07:00"}}</td><td>{{.Kind}}</td><td>{{.Target}}</td><td>{{.Remediator}}</td><td>{{.Actor}}</td><td><code>{{printf "%s" .Details}}</code></td></tr>
{{else}}<tr><td colspan="7">No records match.</td></tr>{{end}}</tbody></table></body></html>{{end}}`))

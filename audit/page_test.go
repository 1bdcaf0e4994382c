package audit_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/selfheal/healer/audit"
)

type oneApproval struct{ votes []string }

func (o *oneApproval) Pending(context.Context) ([]audit.PendingApproval, error) {
	return []audit.PendingApproval{{ID: "apr-0123456789", Target: "node/w1", Remediator: "node.drain", Reason: "<b>bold</b> reason", Digest: strings.Repeat("ab", 32), Need: 2}}, nil
}

func (o *oneApproval) Vote(_ context.Context, id, token, digest string, approve bool, _ string) (string, error) {
	o.votes = append(o.votes, id+" "+token+" "+digest)
	return "alice", nil
}

func TestPageNeedsTheTokenAndGuardsItsForms(t *testing.T) {
	env := startJetStream(t)
	appr := &oneApproval{}
	srv := httptest.NewServer(audit.NewPage(audit.NewTrail(env.js, nil), testToken, nil, audit.PageOptions{Approvals: appr}))
	t.Cleanup(srv.Close)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, token string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, path := range []string{"/", "/records/1", "/verify", "/live", "/assets/style.css", "/assets/live.js", "/runbooks/node.drain.md"} {
		if resp, body := get(path, ""); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) {
			t.Errorf("GET %s without the token: %d", path, resp.StatusCode)
		}
	}
	resp, body := get("/", testToken)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("page: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	if strings.Contains(body, "<b>bold</b>") || !strings.Contains(body, "&lt;b&gt;bold&lt;/b&gt;") {
		t.Error("the approval's reason is not escaped")
	}
	if resp, _ := get("/assets/list.html", testToken); resp.StatusCode != http.StatusNotFound {
		t.Errorf("templates served as assets: %d", resp.StatusCode)
	}
	if resp, _ := get("/assets/style.css", testToken); resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	post := func(path string, form url.Values, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	// A vote from a form that lacks the page's form token (another site's)
	// is refused, even with the credentials a browser would send.
	vote := url.Values{"vote": {"approve"}, "token": {"personal"}, "digest": {"d"}}
	if resp := post("/approvals/apr-0123456789", vote, testToken); resp.StatusCode != http.StatusForbidden {
		t.Errorf("vote without the form token: %d", resp.StatusCode)
	}
	if len(appr.votes) != 0 {
		t.Fatalf("voted: %v", appr.votes)
	}
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatal("no form token on the page")
	}
	csrf := body[i+len(`name="csrf" value="`):]
	csrf = csrf[:strings.IndexByte(csrf, '"')]
	vote.Set("csrf", csrf)
	if resp := post("/approvals/apr-0123456789", vote, testToken); resp.StatusCode != http.StatusSeeOther || len(appr.votes) != 1 {
		t.Errorf("vote with the form token: %d, votes %v", resp.StatusCode, appr.votes)
	}

	// Sign-in: a wrong token is refused; the cookie is HttpOnly and
	// SameSite=Strict; "next" cannot send the browser elsewhere.
	if resp := post("/login", url.Values{"token": {"wrong"}}, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign-in with a wrong token: %d", resp.StatusCode)
	}
	resp = post("/login", url.Values{"token": {testToken}, "next": {"//evil.example/"}}, "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("sign-in redirect to %q (%d), want /", resp.Header.Get("Location"), resp.StatusCode)
	}
	c := resp.Header.Get("Set-Cookie")
	if !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Strict") {
		t.Errorf("cookie %q", c)
	}
	for _, next := range []string{"/\\evil.example", "/\\/evil.example/", "https://evil.example/", "/\t/evil.example", "javascript:alert(1)"} {
		if resp := post("/login", url.Values{"token": {testToken}, "next": {next}}, ""); resp.Header.Get("Location") != "/" {
			t.Errorf("sign-in with next=%q redirects to %q, want /", next, resp.Header.Get("Location"))
		}
	}
	if resp := post("/login", url.Values{"token": {testToken}, "next": {"/records/7?x=1"}}, ""); resp.Header.Get("Location") != "/records/7?x=1" {
		t.Errorf("sign-in with a page of this site redirects to %q", resp.Header.Get("Location"))
	}

	// The cookie is a session id, not the token; the token itself in the
	// cookie does not sign in; signing out ends the session.
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		session = ck
	}
	if session == nil || strings.Contains(session.Value, testToken) || session.Value == "" {
		t.Fatalf("sign-in cookie %+v", session)
	}
	withCookie := func(method, path string, ck *http.Cookie) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
		req.AddCookie(ck)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := withCookie(http.MethodGet, "/", session); code != http.StatusOK {
		t.Errorf("page with the session cookie: %d", code)
	}
	if code := withCookie(http.MethodGet, "/", &http.Cookie{Name: session.Name, Value: testToken}); code != http.StatusUnauthorized {
		t.Errorf("page with the API token as the cookie: %d, want 401", code)
	}
	if code := withCookie(http.MethodPost, "/logout", session); code != http.StatusSeeOther {
		t.Errorf("sign out: %d", code)
	}
	if code := withCookie(http.MethodGet, "/", session); code != http.StatusUnauthorized {
		t.Errorf("page after signing out: %d, want 401", code)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/internal/app/serve"
)

const pauseUsage = `Usage:
  healer pause set   --reason TEXT [--remediator R] [--target PATTERN] [--for 2h | --from T --until T] [--by WHO]
  healer pause list
  healer pause clear ID [--by WHO]

A pause holds healer back: every replica honours it as soon as it is set,
and each remediation it holds back is audited as suppressed with the
pause's reason. Without --remediator and --target it is the kill switch.
--from in the future makes a maintenance window. Times are RFC 3339.
Every command also takes --server URL and --token-file F (or
$HEALER_API_TOKEN).
`

func pauseCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "healer pause", pauseUsage, map[string]command{"set": pauseSet, "list": pauseList, "clear": pauseClear}, args, stdout, stderr)
}

// pausesURL is the pauses API of the audit client's server.
func pausesURL(c *auditClient, id string) string { return c.apiURL(serve.PausesPath, id) }

// apiURL is the URL of path (an API of the server, such as
// /api/v1/pauses) and, when id is set, of one item of it.
func (c *auditClient) apiURL(path, id string) string {
	u := *c.endpoint
	u.Path = strings.TrimSuffix(u.Path, audit.APIPath) + path
	if id != "" {
		u.Path += "/" + url.PathEscape(id)
	}
	u.RawQuery = ""
	return u.String()
}

// call sends one request to the pauses or approvals API and decodes the
// answer into out. A refusal the server explains (not found, forbidden,
// conflict, gone) comes back as the server's words.
func (c *auditClient) call(ctx context.Context, method, target string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd) //nolint:gosec // target is the operator's --server

	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req) //nolint:gosec // the operator's --server
	if err != nil {
		return fmt.Errorf("cannot reach the healer API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusForbidden, http.StatusConflict, http.StatusGone:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(string(b))
		if msg == "404 page not found" {
			return fmt.Errorf("%w: %s", errNoSuchAPI, target)
		}
		return fmt.Errorf("%s", msg) // "no such pause: <id>", "not a configured approver: ..."
	}
	if resp.StatusCode != want {
		return statusError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// errNoSuchAPI is a 404 from the server's mux: the API is not served.
var errNoSuchAPI = errors.New("the server does not serve this API")

func defaultBy() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return ""
}

func pauseSet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer pause set", stderr)
	var cf clientFlags
	cf.register(fs)
	var body serve.PauseRequest
	fs.StringVar(&body.Remediator, "remediator", "", "only this remediator (default: all)")
	fs.StringVar(&body.Target, "target", "", "only targets matching this pattern, for example node/worker-* (default: all)")
	fs.StringVar(&body.For, "for", "", "how long, for example 2h (default: until cleared)")
	fs.Func("from", "when a maintenance window begins (RFC 3339)", func(v string) (err error) { body.From, err = time.Parse(time.RFC3339, v); return err })
	fs.Func("until", "when it ends (RFC 3339)", func(v string) (err error) { body.Until, err = time.Parse(time.RFC3339, v); return err })
	fs.StringVar(&body.Reason, "reason", "", "why, shown to whoever is held back (required)")
	fs.StringVar(&body.By, "by", defaultBy(), "who pauses (default $USER)")
	c, code, ok := cf.parse(fs, args, stderr)
	if !ok {
		return code
	}
	var p guard.Pause
	if err := c.call(ctx, http.MethodPost, pausesURL(c, ""), body, http.StatusCreated, &p); err != nil {
		fmt.Fprintln(stderr, "healer pause set:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: paused %s%s\n", p.ID, p.Scope(), untilText(&p))
	return 0
}

func untilText(p *guard.Pause) string {
	s := ""
	if !p.From.IsZero() {
		s += " from " + p.From.UTC().Format(time.RFC3339)
	}
	if p.Until.IsZero() {
		return s + " until cleared"
	}
	return s + " until " + p.Until.UTC().Format(time.RFC3339)
}

func pauseList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer pause list", stderr)
	var cf clientFlags
	cf.register(fs)
	c, code, ok := cf.parse(fs, args, stderr)
	if !ok {
		return code
	}
	var ps []guard.Pause
	if err := c.call(ctx, http.MethodGet, pausesURL(c, ""), nil, http.StatusOK, &ps); err != nil {
		fmt.Fprintln(stderr, "healer pause list:", err)
		return 1
	}
	if len(ps) == 0 {
		fmt.Fprintln(stdout, "no pauses: healer acts within its policies")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCOPE\tWHEN\tBY\tREASON")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.ID, cell(p.Scope()), strings.TrimSpace(untilText(&p)), cell(p.By), cell(p.Reason))
	}
	_ = tw.Flush()
	return 0
}

func pauseClear(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer pause clear", stderr)
	var cf clientFlags
	cf.register(fs)
	by := fs.String("by", defaultBy(), "who clears it (default $USER)")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, "healer pause clear: the pause ID comes first\n\n"+pauseUsage)
		return 2
	}
	id := args[0]
	c, code, ok := cf.parse(fs, args[1:], stderr)
	if !ok {
		return code
	}
	var p guard.Pause
	if err := c.call(ctx, http.MethodDelete, pausesURL(c, id)+"?by="+url.QueryEscape(*by), nil, http.StatusOK, &p); err != nil {
		fmt.Fprintln(stderr, "healer pause clear:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s cleared: %s is no longer paused\n", p.ID, p.Scope())
	return 0
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/app/serve"
)

const approveUsage = `Usage:
  healer approve ID --token-file MY-TOKEN [--digest PREFIX] [--reason TEXT]
  healer deny    ID --token-file MY-TOKEN [--reason TEXT]
  healer approvals

approve and deny vote on an action waiting for approval, with the same
rules as Slack and the web page. The token is your own approver token
(approvals.approvers[].tokenFile on the server), which says who you are;
the shared API token cannot vote. An action needing two approvals needs
two different people, the requester cannot approve, and a request that has
expired is closed. The vote is for the action exactly as shown (its
digest); --digest PREFIX refuses to vote if the action is no longer the
one you looked at. approvals lists the requests (the API token will do).
Every command also takes --server URL; the token may come from
$HEALER_API_TOKEN instead of --token-file.
`

func approvalsURL(c *auditClient, id string) string { return c.apiURL(serve.ApprovalsPath, id) }

func approveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return vote(ctx, "healer approve", true, args, stdout, stderr)
}

func denyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return vote(ctx, "healer deny", false, args, stdout, stderr)
}

func vote(ctx context.Context, name string, approve bool, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet(name, stderr)
	var cf clientFlags
	cf.register(fs)
	reason := fs.String("reason", "", "why (shown in the audit trail)")
	digest := ""
	if approve {
		fs.StringVar(&digest, "digest", "", "vote only if the action's digest starts with this (from the Slack message or the web page)")
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, name+": the approval ID (apr-…) comes first\n\n"+approveUsage)
		return 2
	}
	id := args[0]
	if code, ok := parseFlags(fs, args[1:], stderr); !ok {
		return code
	}
	c, err := cf.client()
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 2
	}
	var req approval.Request
	if err := c.call(ctx, http.MethodGet, approvalsURL(c, id), nil, http.StatusOK, &req); err != nil {
		fmt.Fprintln(stderr, name+":", approvalsErr(err))
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s on %s\n  why:     %s\n  params:  %s\n  state:   %s\n  digest:  %s\n",
		req.ID, req.Remediator, req.Target, why(req), params(req), req.Outcome(), req.Digest[:12])
	if digest != "" && !strings.HasPrefix(req.Digest, digest) {
		fmt.Fprintf(stderr, "%s: the action changed: its digest is %s now, not %s…; look at it again\n", name, req.Digest[:12], digest)
		return 1
	}
	body := serve.Vote{Vote: "deny", Digest: req.Digest, Reason: *reason}
	if approve {
		body.Vote = "approve"
	}
	if err := c.call(ctx, http.MethodPost, approvalsURL(c, id), body, http.StatusOK, &req); err != nil {
		fmt.Fprintln(stderr, name+": not counted:", approvalsErr(err))
		return 1
	}
	fmt.Fprintf(stdout, "counted: %s\n", req.Outcome())
	return 0
}

func approvalsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer approvals", stderr)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the requests as JSON")
	c, code, ok := cf.parse(fs, args, stderr)
	if !ok {
		return code
	}
	var reqs []approval.Request
	if err := c.call(ctx, http.MethodGet, approvalsURL(c, ""), nil, http.StatusOK, &reqs); err != nil {
		fmt.Fprintln(stderr, "healer approvals:", approvalsErr(err))
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reqs)
		return 0
	}
	if len(reqs) == 0 {
		fmt.Fprintln(stdout, "no approval requests")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tREMEDIATOR\tTARGET\tCREATED\tDIGEST\tOUTCOME")
	for _, r := range reqs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Remediator, r.Target,
			r.Created.UTC().Format(time.RFC3339), r.Digest[:12], cell(r.Outcome()))
	}
	_ = tw.Flush()
	return 0
}

func approvalsErr(err error) error {
	if errors.Is(err, errNoSuchAPI) {
		return errors.New("approvals are off on this server: configure approvals.approvers (or Slack approver groups)")
	}
	return err
}

func why(r approval.Request) string {
	if r.Rule != "" {
		return "rule " + r.Rule + ": " + r.Reason
	}
	return r.Reason
}

func params(r approval.Request) string {
	if len(r.Params) == 0 {
		return "none"
	}
	b, _ := json.Marshal(r.Params)
	return string(b)
}

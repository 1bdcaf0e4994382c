package serve

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/internal/httpauth"
)

// ApprovalsPath is the API of approvals: GET lists the requests, GET
// <path>/<id> shows one, POST <path>/<id> votes on it.
const ApprovalsPath = "/api/v1/approvals"

// Vote is the body of a vote through the API (the CLI). The voter is the
// approver whose personal token the request carries.
type Vote struct {
	// Vote is "approve" or "deny".
	Vote string `json:"vote"`
	// Digest is the digest of the request as the voter saw it.
	Digest string `json:"digest"`
	Reason string `json:"reason,omitempty"`
}

// approvalsHandler serves ApprovalsPath. Reading takes the API token or an
// approver's own token; voting takes an approver's own token, which says
// who votes (the shared API token names nobody).
type approvalsHandler struct {
	broker   *approval.Broker
	apiToken string
	log      *slog.Logger
}

func (h *approvalsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, ApprovalsPath), "/")
	tok := httpauth.BearerToken(r)
	owner := h.broker.TokenOwner(tok)
	if owner == "" && !httpauth.Valid([]byte(h.apiToken), r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healer"`)
		http.Error(w, "missing or invalid bearer token: the API token, or an approver's own token", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost && owner == "" {
		http.Error(w, "voting needs an approver's own token (approvals.approvers[].tokenFile); the API token names nobody", http.StatusForbidden)
		return
	}
	switch {
	case r.Method == http.MethodGet && id == "":
		reqs, err := h.broker.List(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, append([]approval.Request{}, reqs...))
	case r.Method == http.MethodGet:
		req, err := h.broker.Get(r.Context(), id)
		if err != nil {
			http.Error(w, err.Error(), ApprovalStatus(err))
			return
		}
		writeJSON(w, http.StatusOK, req)
	case r.Method == http.MethodPost && id != "":
		h.vote(w, r, id, tok, owner)
	default:
		http.Error(w, "GET "+ApprovalsPath+"[/<id>], POST "+ApprovalsPath+"/<id>", http.StatusMethodNotAllowed)
	}
}

func (h *approvalsHandler) vote(w http.ResponseWriter, r *http.Request, id, tok, owner string) {
	var v Vote
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		http.Error(w, "vote: "+err.Error(), http.StatusBadRequest)
		return
	}
	if v.Vote != "approve" && v.Vote != "deny" {
		http.Error(w, `vote: "vote" must be "approve" or "deny"`, http.StatusBadRequest)
		return
	}
	if v.Digest == "" {
		http.Error(w, "vote: digest is required: the digest of the request you looked at", http.StatusBadRequest)
		return
	}
	voter, err := h.broker.TokenVoter(approval.ViaCLI, tok)
	if err != nil {
		http.Error(w, err.Error(), ApprovalStatus(err))
		return
	}
	req, err := h.broker.Decide(r.Context(), id, approval.Ballot{
		Voter: voter, Approve: v.Vote == "approve", Digest: v.Digest, Reason: v.Reason,
	})
	if err != nil {
		h.log.WarnContext(r.Context(), "vote refused", "approval_id", id, "by", owner, "err", err)
		http.Error(w, err.Error(), ApprovalStatus(err))
		return
	}
	h.log.InfoContext(r.Context(), "vote", "approval_id", id, "by", owner, "vote", v.Vote, "state", req.State)
	writeJSON(w, http.StatusOK, req)
}

// ApprovalStatus is the HTTP status for an error of the approval broker.
func ApprovalStatus(err error) int {
	switch {
	case errors.Is(err, approval.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, approval.ErrNotApprover), errors.Is(err, approval.ErrSelfApproval), errors.Is(err, approval.ErrUnverifiedIdentity):
		return http.StatusForbidden
	case errors.Is(err, approval.ErrExpired):
		return http.StatusGone
	case errors.Is(err, approval.ErrClosed), errors.Is(err, approval.ErrAlreadyVoted), errors.Is(err, approval.ErrDigestMismatch):
		return http.StatusConflict
	case errors.Is(err, approval.ErrNotAudited):
		return http.StatusInternalServerError
	default:
		return http.StatusServiceUnavailable
	}
}

// pageApprovals shows the broker's requests on the audit page and votes
// through it, with the same rules as everywhere.
type pageApprovals struct{ b *approval.Broker }

func (p pageApprovals) Pending(ctx context.Context) ([]audit.PendingApproval, error) {
	reqs, err := p.b.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []audit.PendingApproval
	for _, r := range reqs {
		if r.State != approval.StatePending {
			continue
		}
		out = append(out, audit.PendingApproval{
			ID: r.ID, EventID: r.EventID, Target: r.Target, Remediator: r.Remediator, Reason: r.Reason, Rule: r.Rule,
			Digest: r.Digest, Outcome: r.Outcome(), Need: r.Need, Have: len(r.Approvals()), Expires: r.Expires,
		})
	}
	return out, nil
}

func (p pageApprovals) Vote(ctx context.Context, id, token, digest string, approve bool, reason string) (string, error) {
	voter, err := p.b.TokenVoter(approval.ViaWeb, token)
	if err != nil {
		return "", err
	}
	_, err = p.b.Decide(ctx, id, approval.Ballot{Voter: voter, Approve: approve, Digest: digest, Reason: reason})
	return voter.Person(), err
}

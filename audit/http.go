package audit

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// APIPath is the path NewHandler serves.
const APIPath = "/api/v1/audit"

// queryTimeout bounds how long one API request may read the stream.
const queryTimeout = 30 * time.Second

// handler serves GET APIPath.
type handler struct {
	trail *Trail
	log   *slog.Logger
	// token is the SHA-256 of the API token, so that comparing it takes
	// the same time whatever the length of the presented token.
	token    [32]byte
	hasToken bool
}

// NewHandler returns the HTTP handler of the audit API. It serves
//
//	GET /api/v1/audit?target=&remediator=&kind=&event_id=&since=&after=&limit=
//
// with a JSON array of records (see Trail.Query; "[]" when none match).
// since is an RFC 3339 time or a Go duration meaning that long ago, such
// as "1h". after (even after=0) pages forward: it returns the first limit
// records after that seq instead of the latest. Requests must carry
// "Authorization: Bearer <apiToken>"; when apiToken is empty every request
// is refused. Other paths get 404.
//
// Responses: 401 with WWW-Authenticate for a missing or wrong token, 405
// for a method other than GET, 400 for a bad query parameter, 503 when the
// audit stream cannot be read. Error bodies are {"error": "<message>"}.
func NewHandler(t *Trail, apiToken string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{trail: t, log: log, token: sha256.Sum256([]byte(apiToken)), hasToken: apiToken != ""}
	mux := http.NewServeMux()
	mux.Handle(APIPath, h)
	return mux
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !h.admit(w, r) {
		return
	}
	f, err := parseFilter(r.URL.Query(), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	recs, err := h.trail.Query(qctx, f)
	switch {
	case errors.Is(err, ErrInvalidFilter):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil && ctx.Err() != nil:
		// The client went away; nobody reads the answer.
		h.log.DebugContext(ctx, "audit api: request canceled", "error", err)
		return
	case err != nil:
		h.log.ErrorContext(ctx, "audit api: query failed", "error", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "audit trail unavailable")
		return
	}
	writeJSON(w, h.log, r, recs)
}

// CheckpointsPath is the path NewCheckpointsHandler serves.
const CheckpointsPath = APIPath + "/checkpoints"

// CheckpointSource is where the checkpoints API reads from: serve's
// Checkpointer.
type CheckpointSource interface {
	Checkpoints() ([]SignedCheckpoint, error)
	PublicKey() PublicKey
}

var _ CheckpointSource = (*Checkpointer)(nil)

// CheckpointsAnswer is the body of GET CheckpointsPath.
type CheckpointsAnswer struct {
	// PublicKey is the PEM public key the checkpoints verify with, and
	// KeyID its id. Trusting it only catches tampering through NATS, not
	// by whoever controls the server.
	PublicKey string `json:"public_key"`
	KeyID     string `json:"key_id"`
	// Checkpoints are every checkpoint serve keeps, in no order.
	Checkpoints []SignedCheckpoint `json:"checkpoints"`
}

// NewCheckpointsHandler serves GET /api/v1/audit/checkpoints: the signed
// checkpoints src keeps and the public key they verify with, as a
// CheckpointsAnswer. Authentication and errors are as NewHandler's.
func NewCheckpointsHandler(src CheckpointSource, apiToken string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{log: log, token: sha256.Sum256([]byte(apiToken)), hasToken: apiToken != ""}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.admit(w, r) {
			return
		}
		scs, err := src.Checkpoints()
		if err != nil {
			h.log.ErrorContext(r.Context(), "audit api: read checkpoints", "error", err)
			writeError(w, http.StatusServiceUnavailable, "audit checkpoints unavailable")
			return
		}
		pub := src.PublicKey()
		writeJSON(w, h.log, r, CheckpointsAnswer{PublicKey: string(pub.PEM()), KeyID: pub.ID(), Checkpoints: scs})
	})
}

// admit answers a request without the API token (401) or with another
// method than GET (405), and reports whether it may be served.
func (h *handler) admit(w http.ResponseWriter, r *http.Request) bool {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healer"`)
		writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
		h.log.WarnContext(r.Context(), "audit api: unauthorized request", "remote", r.RemoteAddr)
		return false
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed, use GET", r.Method))
		return false
	}
	return true
}

// writeJSON writes v as a 200 answer, without HTML escaping.
func writeJSON(w http.ResponseWriter, log *slog.Logger, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	// Details must reach clients byte for byte as stored.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		log.WarnContext(r.Context(), "audit api: write response", "error", err)
	}
}

// authorized reports whether r carries the API token. The token is never
// logged.
func (h *handler) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	sum := sha256.Sum256([]byte(token))
	match := subtle.ConstantTimeCompare(sum[:], h.token[:]) == 1
	return match && h.hasToken && token != ""
}

// queryParams returns the query parameters the API accepts.
func queryParams() []string {
	return []string{"target", "remediator", "kind", "event_id", "since", "after", "limit"}
}

// parseFilter turns the query parameters into a Filter; now anchors a
// "since" duration.
func parseFilter(q url.Values, now time.Time) (Filter, error) {
	var f Filter
	for name, values := range q {
		if !slices.Contains(queryParams(), name) {
			return f, fmt.Errorf("unknown query parameter %q (known: %s)", name, strings.Join(queryParams(), ", "))
		}
		if len(values) > 1 {
			return f, fmt.Errorf("query parameter %q given %d times", name, len(values))
		}
	}
	f.Target, f.Remediator, f.EventID = q.Get("target"), q.Get("remediator"), q.Get("event_id")
	if k := q.Get("kind"); k != "" {
		f.Kind = Kind(k)
		if !f.Kind.Valid() {
			return f, fmt.Errorf("invalid kind %q: want one of %s", k, kindList())
		}
	}
	if s := q.Get("since"); s != "" {
		since, err := ParseSince(s, now)
		if err != nil {
			return f, err
		}
		f.Since = since
	}
	if s := q.Get("after"); s != "" {
		after, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return f, fmt.Errorf("invalid after %q: want a record seq (a non-negative integer)", s)
		}
		f.After, f.fromStart = after, true
	}
	if s := q.Get("limit"); s != "" {
		limit, err := strconv.Atoi(s)
		if err != nil || limit < 1 || limit > MaxLimit {
			return f, fmt.Errorf("invalid limit %q: want an integer from 1 to %d", s, MaxLimit)
		}
		f.Limit = limit
	}
	return f, nil
}

// ParseSince parses s as an RFC 3339 time, or as a Go duration meaning
// that long before now (for example "1h" or "30m").
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("invalid since %q: want an RFC 3339 time such as 2025-01-02T15:04:05Z or a duration ago such as 1h", s)
	}
	return now.Add(-d), nil
}

func kindList() string {
	kinds := make([]string, 0, len(Kinds()))
	for _, k := range Kinds() {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/selfheal/healer/audit"
)

const auditUsage = `Usage:
  healer audit list   [--server URL] [--token-file F] [--target T] [--remediator R]
                      [--kind K] [--event-id E] [--since S] [--limit N] [-o table|json]
  healer audit verify [--server URL] [--token-file F] [--checkpoints DIR] [--public-key F]

list prints audit records (the latest --limit, default 100) from the audit API.
verify fetches the whole trail, checks its hash chain on this machine and
checks it against the newest signed checkpoint (from --checkpoints, else the
server's), whose signature must verify with --public-key (else the server's
key, which only catches tampering through NATS): exit 0 when intact and in
agreement, 1 when broken, wiped, truncated, recreated or holding records
healer did not write, 2 when it could not be checked.

The API token is read from --token-file, else from HEALER_API_TOKEN.
Run "healer audit list -h" or "healer audit verify -h" for the flags.
`

const (
	defaultAuditServer = "http://127.0.0.1:8080"
	// verifyPageSize is how many records verify asks for at a time; it is
	// the API's maximum.
	verifyPageSize = audit.MaxLimit
	// detailsWidth bounds the details column of the table, in characters.
	detailsWidth = 72
)

// auditCmd runs "healer audit list|verify" with the arguments after
// "healer audit" and returns the exit code.
func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "healer audit", auditUsage, map[string]command{"list": auditList, "verify": auditVerify}, args, stdout, stderr)
}

// clientFlags are the flags every audit command has.
type clientFlags struct {
	server    string
	tokenFile string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", defaultAuditServer, "base URL of the healer API")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the API token (default: $HEALER_API_TOKEN)")
}

// client builds the API client from the flags and the environment.
func (c *clientFlags) client() (*auditClient, error) {
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want an http:// or https:// URL", c.server)
	}
	var token string
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read API token: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("API token file %s is empty", c.tokenFile)
		}
	} else {
		token = strings.TrimSpace(os.Getenv("HEALER_API_TOKEN"))
		if token == "" {
			return nil, errors.New("no API token: pass --token-file or set HEALER_API_TOKEN")
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + audit.APIPath
	u.RawQuery = ""
	return &auditClient{
		endpoint: u,
		token:    token,
		http:     &http.Client{Timeout: time.Minute},
	}, nil
}

// parse parses the command's flags and builds its API client. On failure
// it has told the user, and returns the exit code with ok false.
func (c *clientFlags) parse(fs *flag.FlagSet, args []string, stderr io.Writer) (client *auditClient, code int, ok bool) {
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return nil, code, false
	}
	client, err := c.client()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return nil, 2, false
	}
	return client, 0, true
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and reports the exit code to return when parsing
// ends the command: 0 for -h, 2 for an error.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, false
	}
	return 0, true
}

func auditList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer audit list", stderr)
	var (
		cf     clientFlags
		q      = url.Values{}
		limit  int
		output string
	)
	cf.register(fs)
	for _, p := range []struct{ flag, param, usage string }{
		{"target", "target", "only records for this target, for example node/worker-1"},
		{"remediator", "remediator", "only records of this remediator, for example node.cordon"},
		{"kind", "kind", "only records of this kind, for example suppressed or action.failed"},
		{"event-id", "event_id", "only records of this event"},
		{"since", "since", "only records since this RFC 3339 time or this long ago (1h, 30m)"},
	} {
		fs.Func(p.flag, p.usage, func(v string) error {
			q.Set(p.param, v)
			return nil
		})
	}
	fs.IntVar(&limit, "limit", 0, fmt.Sprintf("how many of the latest matching records to print (default %d, at most %d)", audit.DefaultLimit, audit.MaxLimit))
	fs.StringVar(&output, "o", "table", "output format: table or json")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if output != "table" && output != "json" {
		fmt.Fprintf(stderr, "healer audit list: -o %q: want table or json\n", output)
		return 2
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	c, err := cf.client()
	if err != nil {
		fmt.Fprintln(stderr, "healer audit list:", err)
		return 2
	}
	recs, err := c.records(ctx, q)
	if err != nil {
		fmt.Fprintln(stderr, "healer audit list:", err)
		return 1
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(recs); err != nil {
			fmt.Fprintln(stderr, "healer audit list:", err)
			return 1
		}
		return 0
	}
	if len(recs) == 0 {
		fmt.Fprintln(stdout, "no matching audit records")
		return 0
	}
	if err := writeTable(stdout, recs); err != nil {
		fmt.Fprintln(stderr, "healer audit list:", err)
		return 1
	}
	return 0
}

func writeTable(w io.Writer, recs []audit.Record) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tTARGET\tREMEDIATOR\tACTOR\tDETAILS")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Seq, r.Time.UTC().Format(time.RFC3339), cell(string(r.Kind)), cell(r.Target),
			cell(r.Remediator), cell(r.Actor), summarizeDetails(r.Details, detailsWidth))
	}
	return tw.Flush()
}

// cell makes s fit in one table cell.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return clean(s)
}

// clean replaces control characters (tabs and newlines would break the
// table) with spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// summarizeDetails renders a details object as "key=value" pairs in stored
// order, strings unquoted, cut to width characters.
func summarizeDetails(details json.RawMessage, width int) string {
	dec := json.NewDecoder(bytes.NewReader(details))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return cutString(clean(string(details)), width)
	}
	var parts []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			break
		}
		v := string(value)
		var s string
		if json.Unmarshal(value, &s) == nil {
			v = s
		}
		parts = append(parts, key+"="+v)
	}
	if len(parts) == 0 {
		return "-"
	}
	return cutString(clean(strings.Join(parts, " ")), width)
}

func cutString(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	return string([]rune(s)[:width-1]) + "…"
}

func auditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer audit verify", stderr)
	var (
		cf      clientFlags
		cpDir   string
		pubFile string
	)
	cf.register(fs)
	fs.StringVar(&cpDir, "checkpoints", "", "directory of signed checkpoint files (serve's <data-dir>/checkpoints or its sink) to check the trail against (default: the server's)")
	fs.StringVar(&pubFile, "public-key", "", "PEM public key the checkpoints must be signed with (serve's audit-signing.pub; default: the server's, which only catches tampering through NATS)")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	c, err := cf.client()
	if err != nil {
		fmt.Fprintln(stderr, "healer audit verify:", err)
		return 2
	}
	cps, code := loadCheckpoints(ctx, c, cpDir, pubFile, stdout, stderr)
	if code != 0 {
		return code
	}
	return verifyAgainst(ctx, c, verifyPageSize, cps, stdout, stderr)
}

// loadCheckpoints reads the checkpoints and the public key (each from its
// flag or else the server) and checks their signatures. A non-zero code
// means verify ends with it: 1 for a checkpoint that does not verify, 2
// when they could not be read.
func loadCheckpoints(ctx context.Context, c *auditClient, dir, pubFile string, stdout, stderr io.Writer) ([]audit.OpenedCheckpoint, int) {
	var (
		scs     []audit.SignedCheckpoint
		sources []string
		pub     audit.PublicKey
	)
	if pubFile != "" {
		b, err := os.ReadFile(pubFile)
		if err != nil {
			fmt.Fprintln(stderr, "healer audit verify: --public-key:", err)
			return nil, 2
		}
		if pub, err = audit.ParsePublicKey(b); err != nil {
			fmt.Fprintf(stderr, "healer audit verify: --public-key %s: %v\n", pubFile, err)
			return nil, 2
		}
	}
	if dir != "" {
		var err error
		if scs, sources, err = audit.CheckpointDir(dir).Read(); err != nil {
			fmt.Fprintln(stderr, "healer audit verify: --checkpoints:", err)
			return nil, 2
		}
		if len(scs) == 0 {
			fmt.Fprintf(stderr, "healer audit verify: --checkpoints %s holds no checkpoint files\n", dir)
			return nil, 2
		}
	}
	if dir == "" || pub.IsZero() {
		ans, err := c.checkpoints(ctx)
		switch {
		case errors.Is(err, errNoCheckpointsAPI):
			fmt.Fprintln(stderr, "warning: the server serves no checkpoints; checking the hash chain alone (a wiped or recreated trail goes unnoticed)")
			return nil, 0
		case err != nil:
			fmt.Fprintln(stderr, "healer audit verify:", err)
			return nil, 2
		}
		if pub.IsZero() {
			if pub, err = audit.ParsePublicKey([]byte(ans.PublicKey)); err != nil {
				fmt.Fprintln(stderr, "healer audit verify: the server's public key:", err)
				return nil, 2
			}
			fmt.Fprintf(stderr, "note: trusting the server's public key %s (pass --public-key to check against a copy kept elsewhere)\n", pub.ID())
		}
		if dir == "" {
			scs = ans.Checkpoints
			for i := range scs {
				sources = append(sources, fmt.Sprintf("%d from the server", i+1))
			}
		}
	}
	cps, err := audit.OpenAll(scs, sources, pub)
	if err != nil {
		fmt.Fprintln(stdout, "audit checkpoint refused:", err)
		return nil, 1
	}
	if len(cps) == 0 {
		fmt.Fprintln(stderr, "warning: no signed checkpoint yet; checking the hash chain alone")
	}
	return cps, 0
}

// verifyTrail pages through the whole trail, pageSize records at a time,
// checking the chain as it goes, and prints the outcome.
func verifyTrail(ctx context.Context, c *auditClient, pageSize int, stdout, stderr io.Writer) int {
	return verifyAgainst(ctx, c, pageSize, nil, stdout, stderr)
}

// verifyAgainst is verifyTrail that also checks the trail against the
// newest of cps.
func verifyAgainst(ctx context.Context, c *auditClient, pageSize int, cps []audit.OpenedCheckpoint, stdout, stderr io.Writer) int {
	var after uint64
	check := audit.NewCheckpointCheck(cps)
	for {
		q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(pageSize)}}
		page, err := c.records(ctx, q)
		if err != nil {
			fmt.Fprintln(stderr, "healer audit verify:", err)
			return 2
		}
		for _, r := range page {
			check.Add(r)
		}
		// Pages follow stream positions. For intact records these equal
		// their Seq; counting keeps paging right even when a tampered
		// record claims another Seq (the verifier reports it).
		after += uint64(len(page))
		if len(page) < pageSize {
			break
		}
	}
	res := check.Result()
	switch {
	case res.Problem != "":
		fmt.Fprintf(stdout, "audit trail disagrees with its signed checkpoint: %s\n", res.Problem)
		return 1
	case !res.OK:
		fmt.Fprintf(stdout, "audit chain broken at seq %d: %s\n", res.FirstBad, res.Reason)
		return 1
	case res.Records == 0:
		fmt.Fprintln(stdout, "audit chain intact: 0 records (the trail is empty)")
	default:
		fmt.Fprintf(stdout, "audit chain intact: %d records, head hash %s\n", res.Records, res.Head)
	}
	if cp := res.Checkpoint; cp != nil {
		fmt.Fprintf(stdout, "intact: records %d..%d, agrees with checkpoint #%d of %s (signed %s, last seq %d, key %s)\n",
			min(res.Records, 1), res.Records, cp.Index, cp.Instance, cp.Time.Format(time.RFC3339), cp.LastSeq, cp.KeyID)
		if res.Records > cp.LastSeq {
			fmt.Fprintf(stderr, "note: records %d..%d are newer than the checkpoint: serve checks who wrote them at its next one\n", cp.LastSeq+1, res.Records)
		}
		if cp.Replaces != "" {
			fmt.Fprintf(stderr, "note: this trail was accepted over an earlier one (checkpoint %s): see the audit.accepted record\n", cp.Replaces[:12])
		}
	}
	return 0
}

// auditClient calls the audit API.
type auditClient struct {
	endpoint *url.URL
	token    string
	http     *http.Client
}

// records fetches the records selected by the query parameters q.
func (c *auditClient) records(ctx context.Context, q url.Values) ([]audit.Record, error) {
	u := *c.endpoint
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", u.Redacted(), err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach the healer API at %s: %w", c.endpoint.Redacted(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var recs []audit.Record
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		return nil, fmt.Errorf("invalid answer from %s: %w", c.endpoint.Redacted(), err)
	}
	return recs, nil
}

// errNoCheckpointsAPI is returned by checkpoints for a server that does
// not serve them (an older healer).
var errNoCheckpointsAPI = errors.New("the server serves no audit checkpoints")

// checkpoints fetches the server's checkpoints and public key.
func (c *auditClient) checkpoints(ctx context.Context) (audit.CheckpointsAnswer, error) {
	var ans audit.CheckpointsAnswer
	u := *c.endpoint
	u.Path = strings.TrimSuffix(u.Path, audit.APIPath) + audit.CheckpointsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return ans, fmt.Errorf("build request for %s: %w", u.Redacted(), err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return ans, fmt.Errorf("cannot reach the healer API at %s: %w", u.Redacted(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusNotFound {
		return ans, errNoCheckpointsAPI
	}
	if resp.StatusCode != http.StatusOK {
		return ans, statusError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&ans); err != nil {
		return ans, fmt.Errorf("invalid checkpoints from %s: %w", u.Redacted(), err)
	}
	return ans, nil
}

// statusError explains a non-200 answer of the API.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	where := resp.Request.URL.Redacted()
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("the server rejected the API token (HTTP 401): the token is wrong; check --token-file or HEALER_API_TOKEN")
	case http.StatusBadRequest:
		return fmt.Errorf("the server refused the query (HTTP 400): %s", msg)
	case http.StatusNotFound:
		return fmt.Errorf("no audit API at %s (HTTP 404): is --server right?", where)
	case http.StatusServiceUnavailable:
		return fmt.Errorf("the audit trail is unavailable on the server (HTTP 503): %s", msg)
	default:
		return fmt.Errorf("%s answered HTTP %d: %s", where, resp.StatusCode, msg)
	}
}

package audit_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus/bustest"
)

const testToken = "s3cr3t-token-value"

func TestAuditHTTPHandler(t *testing.T) {
	env := startJetStream(t)
	tr := audit.NewTrail(env.js, nil)
	appendN(t, tr, 12)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewServer(audit.NewHandler(tr, testToken, log))
	t.Cleanup(srv.Close)

	tests := []struct {
		name     string
		method   string
		path     string
		auth     string
		status   int
		wantBody string // substring
		seqs     []uint64
	}{
		{"missing token", "GET", "/api/v1/audit", "", 401, "invalid bearer token", nil},
		{"wrong token", "GET", "/api/v1/audit", "Bearer wrong", 401, "invalid bearer token", nil},
		{"token prefix", "GET", "/api/v1/audit", "Bearer " + testToken[:5], 401, "", nil},
		{"wrong scheme", "GET", "/api/v1/audit", "Basic " + testToken, 401, "", nil},
		{"empty bearer", "GET", "/api/v1/audit", "Bearer ", 401, "", nil},
		{"post", "POST", "/api/v1/audit", "Bearer " + testToken, 405, "use GET", nil},
		{"other path", "GET", "/api/v1/audit/x", "Bearer " + testToken, 404, "", nil},
		{"bad limit", "GET", "/api/v1/audit?limit=abc", "Bearer " + testToken, 400, "invalid limit", nil},
		{"zero limit", "GET", "/api/v1/audit?limit=0", "Bearer " + testToken, 400, "invalid limit", nil},
		{"limit too large", "GET", "/api/v1/audit?limit=10001", "Bearer " + testToken, 400, "from 1 to 10000", nil},
		{"bad since", "GET", "/api/v1/audit?since=yesterday", "Bearer " + testToken, 400, "invalid since", nil},
		{"negative since", "GET", "/api/v1/audit?since=-1h", "Bearer " + testToken, 400, "invalid since", nil},
		{"bad after", "GET", "/api/v1/audit?after=-1", "Bearer " + testToken, 400, "invalid after", nil},
		{"bad kind", "GET", "/api/v1/audit?kind=explode", "Bearer " + testToken, 400, "invalid kind", nil},
		{"unknown parameter", "GET", "/api/v1/audit?tagret=node/a", "Bearer " + testToken, 400, "unknown query parameter", nil},
		{"all", "GET", "/api/v1/audit", "Bearer " + testToken, 200, "", []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"scheme is case-insensitive", "GET", "/api/v1/audit?limit=1", "bearer " + testToken, 200, "", []uint64{12}},
		{"target and kind", "GET", "/api/v1/audit?target=node/worker-1&kind=decision", "Bearer " + testToken, 200, "", []uint64{2}},
		{"remediator and limit", "GET", "/api/v1/audit?remediator=node.cordon&limit=2", "Bearer " + testToken, 200, "", []uint64{11, 12}},
		{"event id", "GET", "/api/v1/audit?event_id=evt-1", "Bearer " + testToken, 200, "", []uint64{4, 5, 6}},
		{"after paging", "GET", "/api/v1/audit?after=10&limit=5", "Bearer " + testToken, 200, "", []uint64{11, 12}},
		{"after=0 pages from the start", "GET", "/api/v1/audit?after=0&limit=2", "Bearer " + testToken, 200, "", []uint64{1, 2}},
		{"without after the latest", "GET", "/api/v1/audit?limit=2", "Bearer " + testToken, 200, "", []uint64{11, 12}},
		{"since duration", "GET", "/api/v1/audit?since=1h&limit=1", "Bearer " + testToken, 200, "", []uint64{12}},
		{"since RFC 3339", "GET", "/api/v1/audit?since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "Bearer " + testToken, 200, "", []uint64{}},
		{"no match is an empty array", "GET", "/api/v1/audit?target=node/none", "Bearer " + testToken, 200, "", []uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tt.status, body)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("body %s does not contain %q", body, tt.wantBody)
			}
			switch tt.status {
			case 401:
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("WWW-Authenticate = %q, want Bearer", resp.Header.Get("WWW-Authenticate"))
				}
			case 405:
				if resp.Header.Get("Allow") != "GET" {
					t.Fatalf("Allow = %q, want GET", resp.Header.Get("Allow"))
				}
			case 200:
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type = %q", ct)
				}
				if len(tt.seqs) == 0 && strings.TrimSpace(string(body)) != "[]" {
					t.Fatalf("empty result body = %s, want []", body)
				}
				var recs []audit.Record
				if err := json.Unmarshal(body, &recs); err != nil {
					t.Fatalf("decode %s: %v", body, err)
				}
				if !slices.Equal(seqs(recs), tt.seqs) {
					t.Fatalf("seqs %v, want %v", seqs(recs), tt.seqs)
				}
			}
		})
	}

	t.Run("records carry the contract field names", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/v1/audit?limit=3", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var raw []map[string]json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
			t.Fatal(err)
		}
		want := []string{"seq", "id", "time", "kind", "event_id", "target", "remediator", "actor",
			"policy_revision", "trace_id", "action_id", "details", "prev_hash", "hash"}
		slices.Sort(want)
		if len(raw) != 3 {
			t.Fatalf("got %d records, want 3", len(raw))
		}
		for _, m := range raw {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, want) {
				t.Fatalf("keys %v, want %v", keys, want)
			}
			var seq uint64
			var ts string
			if json.Unmarshal(m["seq"], &seq) != nil || seq == 0 {
				t.Fatalf("seq %s is not a positive number", m["seq"])
			}
			if json.Unmarshal(m["time"], &ts) != nil || !strings.HasSuffix(ts, "Z") {
				t.Fatalf("time %s is not an RFC 3339 UTC string", m["time"])
			}
			if m["details"][0] != '{' {
				t.Fatalf("details %s is not an object", m["details"])
			}
		}
	})

	t.Run("token never logged", func(t *testing.T) {
		if strings.Contains(logs.String(), testToken[:8]) || strings.Contains(logs.String(), "wrong") {
			t.Fatalf("log output contains a presented or configured token:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "unauthorized") {
			t.Fatalf("unauthorized requests were not logged:\n%s", logs.String())
		}
	})
}

func TestAuditHTTPHandlerEdgeCases(t *testing.T) {
	t.Run("empty configured token refuses everyone", func(t *testing.T) {
		env := startJetStream(t)
		srv := httptest.NewServer(audit.NewHandler(audit.NewTrail(env.js, nil), "", nil))
		t.Cleanup(srv.Close)
		for _, auth := range []string{"", "Bearer ", "Bearer  "} {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/v1/audit", nil)
			req.Header.Set("Authorization", auth)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Fatalf("auth %q: status %d, want 401", auth, resp.StatusCode)
			}
		}
	})
	t.Run("stream unavailable is 503", func(t *testing.T) {
		bare := bustest.Start(t) // no streams
		// No EnsureStreams: the audit stream does not exist.
		srv := httptest.NewServer(audit.NewHandler(audit.NewTrail(bare.JS, nil), testToken, nil))
		t.Cleanup(srv.Close)
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/v1/audit", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(body), "unavailable") {
			t.Fatalf("status %d body %s, want 503 unavailable", resp.StatusCode, body)
		}
	})
}

func TestAuditParseSince(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"1h", now.Add(-time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"0s", now, false},
		{"2025-05-31T10:00:00Z", time.Date(2025, 5, 31, 10, 0, 0, 0, time.UTC), false},
		{"2025-05-31T10:00:00.5+02:00", time.Date(2025, 5, 31, 8, 0, 0, 500000000, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"2025-05-31", time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := audit.ParseSince(tt.in, now)
			if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
				t.Fatalf("ParseSince(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

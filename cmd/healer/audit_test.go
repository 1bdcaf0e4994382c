package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
)

const auditTestToken = "cli-test-token"

// auditServer is a healer audit API on a real embedded JetStream server.
type auditServer struct {
	js        jetstream.JetStream
	trail     *audit.Trail
	url       string
	tokenFile string
	recs      []audit.Record
}

// startAuditServer starts JetStream, appends n records and serves the
// audit API over HTTP.
func startAuditServer(t *testing.T, n int) *auditServer {
	t.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ensureAuditStreams(t, js)
	s := &auditServer{js: js, trail: audit.NewTrail(js, nil)}
	for i := range n {
		rec, err := s.trail.Append(t.Context(), audit.Record{
			Kind:       []audit.Kind{audit.KindEvent, audit.KindDecision, audit.KindSuppressed}[i%3],
			Target:     fmt.Sprintf("node/worker-%d", i%2),
			Remediator: "node.cordon",
			Actor:      "healer/engine",
			Details:    audit.Details("reason", fmt.Sprintf("step\t%d", i), "limit", i),
		})
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		s.recs = append(s.recs, rec)
	}
	srv := httptest.NewServer(audit.NewHandler(s.trail, auditTestToken, nil))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	s.tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(s.tokenFile, []byte(auditTestToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func ensureAuditStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	var cfg bus.StreamsConfig
	cfg.ApplyDefaults()
	if _, err := bus.EnsureStreams(t.Context(), js, cfg); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
}

// tamper replaces the audit stream by one holding the stored messages as
// changed by fn. The stream denies message deletes, so a tampered trail is
// a rebuilt stream.
func (s *auditServer) tamper(t *testing.T, fn func([][]byte) [][]byte) {
	t.Helper()
	ctx := t.Context()
	stream, err := s.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for seq := uint64(1); seq <= stream.CachedInfo().State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m.Data)
	}
	if err := s.js.DeleteStream(ctx, bus.StreamAudit); err != nil {
		t.Fatal(err)
	}
	ensureAuditStreams(t, s.js)
	for _, m := range fn(msgs) {
		if _, err := s.js.Publish(ctx, bus.SubjectAudit, m); err != nil {
			t.Fatal(err)
		}
	}
}

func runAudit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = auditCmd(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestAuditCmdList(t *testing.T) {
	s := startAuditServer(t, 7)
	base := []string{"list", "--server", s.url, "--token-file", s.tokenFile}

	t.Run("table", func(t *testing.T) {
		code, out, errOut := runAudit(t, base...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 8 {
			t.Fatalf("got %d lines, want header and 7 records:\n%s", len(lines), out)
		}
		if f := strings.Fields(lines[0]); !slices.Equal(f, []string{"SEQ", "TIME", "KIND", "TARGET", "REMEDIATOR", "ACTOR", "DETAILS"}) {
			t.Fatalf("header %q", lines[0])
		}
		r := s.recs[2]
		want := []string{"3", r.Time.UTC().Format("2006-01-02T15:04:05Z07:00"), "suppressed", "node/worker-0", "node.cordon", "healer/engine", "reason=step", "2", "limit=2"}
		if f := strings.Fields(lines[3]); !slices.Equal(f, want) {
			t.Fatalf("row 3 = %q, want fields %q", lines[3], want)
		}
	})

	tests := []struct {
		name string
		args []string
		seqs []uint64
	}{
		{"all", nil, []uint64{1, 2, 3, 4, 5, 6, 7}},
		{"target", []string{"--target", "node/worker-1"}, []uint64{2, 4, 6}},
		{"kind", []string{"--kind", "decision"}, []uint64{2, 5}},
		{"remediator", []string{"--remediator", "other"}, []uint64{}},
		{"limit keeps the latest", []string{"--limit", "2"}, []uint64{6, 7}},
		{"since", []string{"--since", "1h", "--kind", "event"}, []uint64{1, 4, 7}},
	}
	for _, tt := range tests {
		t.Run("json "+tt.name, func(t *testing.T) {
			code, out, errOut := runAudit(t, append(append(slices.Clone(base), tt.args...), "-o", "json")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var recs []audit.Record
			if err := json.Unmarshal([]byte(out), &recs); err != nil {
				t.Fatalf("output is not a JSON array of records: %v\n%s", err, out)
			}
			got := []uint64{}
			for _, r := range recs {
				got = append(got, r.Seq)
				if r.Hash != r.ComputeHash() {
					t.Fatalf("record %d printed with a hash that no longer verifies", r.Seq)
				}
			}
			if !slices.Equal(got, tt.seqs) {
				t.Fatalf("seqs %v, want %v", got, tt.seqs)
			}
		})
	}

	t.Run("token from the environment", func(t *testing.T) {
		t.Setenv("HEALER_API_TOKEN", auditTestToken)
		code, out, errOut := runAudit(t, "list", "--server", s.url, "--limit", "1")
		if code != 0 || !strings.Contains(out, "node.cordon") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})

	errTests := []struct {
		name   string
		env    string
		args   []string
		code   int
		stderr string
	}{
		{"wrong token", "", []string{"list", "--server", s.url, "--token-file", writeFile(t, "nope")}, 1, "token is wrong"},
		{"no token", "", []string{"list", "--server", s.url}, 2, "no API token"},
		{"missing token file", "", []string{"list", "--server", s.url, "--token-file", "/nonexistent/token"}, 2, "read API token"},
		{"bad since", auditTestToken, []string{"list", "--server", s.url, "--since", "yesterday"}, 1, "invalid since"},
		{"bad kind", auditTestToken, []string{"list", "--server", s.url, "--kind", "boom"}, 1, "invalid kind"},
		{"bad output", auditTestToken, []string{"list", "--server", s.url, "-o", "yaml"}, 2, "want table or json"},
		{"bad server URL", auditTestToken, []string{"list", "--server", "localhost:8080"}, 2, "want an http"},
		{"unreachable", auditTestToken, []string{"list", "--server", "http://127.0.0.1:1"}, 1, "cannot reach"},
		{"stray argument", auditTestToken, []string{"list", "extra"}, 2, "unexpected arguments"},
		{"unknown command", auditTestToken, []string{"lsit"}, 2, "unknown command"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HEALER_API_TOKEN", tt.env)
			code, _, errOut := runAudit(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("exit %d stderr %q, want exit %d mentioning %q", code, errOut, tt.code, tt.stderr)
			}
		})
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuditCmdVerify(t *testing.T) {
	tests := []struct {
		name   string
		tamper func([][]byte) [][]byte
		code   int
		stdout string // regexp
	}{
		{"intact", nil, 0, `^audit chain intact: 12 records, head hash [0-9a-f]{64}\n$`},
		{"edited record", func(m [][]byte) [][]byte {
			m[6] = bytes.Replace(m[6], []byte(`"actor":"healer/engine"`), []byte(`"actor":"someone-else"`), 1)
			return m
		}, 1, `^audit chain broken at seq 7: record "[0-9a-f]{32}": stored hash .* the record was altered\n$`},
		{"deleted record", func(m [][]byte) [][]byte {
			return slices.Delete(m, 4, 5)
		}, 1, `^audit chain broken at seq 5: expected seq 5 but found record "[0-9a-f]{32}" with seq 6`},
		{"reordered records", func(m [][]byte) [][]byte {
			m[9], m[10] = m[10], m[9]
			return m
		}, 1, `^audit chain broken at seq 10: expected seq 10 but found record "[0-9a-f]{32}" with seq 11: .*out of order`},
		{"garbage inserted", func(m [][]byte) [][]byte {
			return slices.Insert(m, 2, []byte("not a record"))
		}, 1, `^audit chain broken at seq 3: the message at stream sequence 3 is not a valid audit record`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startAuditServer(t, 12)
			if tt.tamper != nil {
				s.tamper(t, tt.tamper)
			}
			code, out, errOut := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile)
			if code != tt.code || !regexp.MustCompile(tt.stdout).MatchString(out) {
				t.Fatalf("exit %d stdout %q stderr %q, want exit %d and stdout matching %s", code, out, errOut, tt.code, tt.stdout)
			}
			if tt.code == 0 && !strings.Contains(out, s.recs[11].Hash) {
				t.Fatalf("stdout %q does not name the head hash %s", out, s.recs[11].Hash)
			}
			// The same with pages of 5 records, so that records cross
			// page boundaries.
			c, err := (&clientFlags{server: s.url, tokenFile: s.tokenFile}).client()
			if err != nil {
				t.Fatal(err)
			}
			var paged bytes.Buffer
			if code := verifyTrail(t.Context(), c, 5, &paged, &paged); code != tt.code || paged.String() != out {
				t.Fatalf("paged verify: exit %d output %q, want exit %d output %q", code, paged.String(), tt.code, out)
			}
		})
	}

	t.Run("empty trail", func(t *testing.T) {
		s := startAuditServer(t, 0)
		code, out, _ := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile)
		if code != 0 || !strings.HasPrefix(out, "audit chain intact: 0 records") {
			t.Fatalf("exit %d stdout %q", code, out)
		}
	})

	t.Run("errors exit 2", func(t *testing.T) {
		s := startAuditServer(t, 1)
		for _, tc := range []struct {
			name, stderr string
			args         []string
		}{
			{"wrong token", "token is wrong", []string{"verify", "--server", s.url, "--token-file", writeFile(t, "bad")}},
			{"unreachable", "cannot reach", []string{"verify", "--server", "http://127.0.0.1:1", "--token-file", s.tokenFile}},
			{"not the API", "HTTP 404", []string{"verify", "--server", s.url + "/prefix", "--token-file", s.tokenFile}},
			{"bad flag", "flag provided but not defined", []string{"verify", "--bogus"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out, errOut := runAudit(t, tc.args...)
				if code != 2 || out != "" || !strings.Contains(errOut, tc.stderr) {
					t.Fatalf("exit %d stdout %q stderr %q, want exit 2 mentioning %q", code, out, errOut, tc.stderr)
				}
			})
		}
	})
}

func TestAuditSummarizeDetails(t *testing.T) {
	tests := []struct {
		in    string
		width int
		want  string
	}{
		{`{"reason":"rate limit","limit":"node.cordon:node/x"}`, 80, "reason=rate limit limit=node.cordon:node/x"},
		{`{"n":3,"nested":{"a":[1,2]}}`, 80, `n=3 nested={"a":[1,2]}`},
		{`{"reason":"line\nbreak"}`, 80, "reason=line break"},
		{`{}`, 80, "-"},
		{`{"reason":"a very long explanation"}`, 12, "reason=a ve…"},
		{`[1,2]`, 80, "[1,2]"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := summarizeDetails(json.RawMessage(tt.in), tt.width); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// signedAuditServer is an audit API whose trail is tagged and
// checkpointed as serve's is, serving its checkpoints too.
type signedAuditServer struct {
	*auditServer
	key *audit.SigningKey
	cp  *audit.Checkpointer
	dir string // checkpoint dir
	pub string // public key file
}

func startSignedAuditServer(t *testing.T, n int) *signedAuditServer {
	t.Helper()
	base := startAuditServer(t, 0)
	key, err := audit.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &signedAuditServer{auditServer: base, key: key, dir: t.TempDir(), pub: filepath.Join(t.TempDir(), "audit-signing.pub")}
	if err := key.WritePublicKey(s.pub); err != nil {
		t.Fatal(err)
	}
	s.trail = audit.NewTrail(s.js, nil, audit.WithSigningKey(key))
	s.cp = audit.NewCheckpointer(audit.CheckpointerConfig{Instance: "serve-a", Dir: audit.CheckpointDir(s.dir), Every: 1000, Interval: time.Minute}, s.trail, key, nil)
	if err := s.cp.Start(t.Context(), false, ""); err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := s.trail.Append(t.Context(), audit.Record{Kind: audit.KindEvent, Actor: "alertmanager"}); err != nil {
			t.Fatal(err)
		}
	}
	s.checkpoint(t)
	mux := http.NewServeMux()
	mux.Handle(audit.APIPath, audit.NewHandler(s.trail, auditTestToken, nil))
	mux.Handle(audit.CheckpointsPath, audit.NewCheckpointsHandler(s.cp, auditTestToken, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *signedAuditServer) checkpoint(t *testing.T) {
	t.Helper()
	if _, err := s.cp.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestAuditCmdVerifyAgainstCheckpoints(t *testing.T) {
	t.Run("intact and agreeing with the server's checkpoint", func(t *testing.T) {
		s := startSignedAuditServer(t, 6)
		code, out, errOut := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile)
		if code != 0 || !regexp.MustCompile(`(?m)^intact: records 1\.\.6, agrees with checkpoint #2 of serve-a \(signed .*, last seq 6, key [0-9a-f]{16}\)$`).MatchString(out) {
			t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
		}
		if !strings.Contains(errOut, "trusting the server's public key") {
			t.Fatalf("no note that the server's key is trusted: %q", errOut)
		}
	})
	t.Run("a recreated trail fails against copied checkpoints", func(t *testing.T) {
		s := startSignedAuditServer(t, 6)
		kept := t.TempDir()
		copyDir(t, s.dir, kept)
		// The stream is deleted and a consistent new chain written.
		s.tamper(t, func([][]byte) [][]byte { return nil })
		if _, err := audit.NewTrail(s.js, nil).Append(t.Context(), audit.Record{Kind: audit.KindEvent}); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile, "--checkpoints", kept, "--public-key", s.pub)
		if code != 1 || !strings.Contains(out, "the trail was recreated: record 1 has hash") {
			t.Fatalf("exit %d stdout %q stderr %q, want 1 saying record 1 differs", code, out, errOut)
		}
	})
	t.Run("a wiped trail fails against the server's own checkpoints", func(t *testing.T) {
		s := startSignedAuditServer(t, 3)
		s.tamper(t, func([][]byte) [][]byte { return nil })
		code, out, _ := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile)
		if code != 1 || !strings.Contains(out, "records 1..3 are missing: the trail is empty") {
			t.Fatalf("exit %d stdout %q, want 1 naming records 1..3 missing", code, out)
		}
	})
	t.Run("a forged record named by a checkpoint fails with the public key alone", func(t *testing.T) {
		s := startSignedAuditServer(t, 2)
		recs, err := s.trail.Query(t.Context(), audit.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		forged := audit.Record{Seq: 3, ID: "forged", Time: time.Now().UTC(), Kind: audit.KindApproval, Details: json.RawMessage(`{}`), PrevHash: recs[len(recs)-1].Hash}
		forged.Hash = forged.ComputeHash()
		b, err := json.Marshal(forged)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.js.Publish(t.Context(), bus.SubjectAudit, b); err != nil {
			t.Fatal(err)
		}
		s.checkpoint(t)
		code, out, _ := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile, "--checkpoints", s.dir, "--public-key", s.pub)
		if code != 1 || !strings.Contains(out, "not written by healer's committer") || !strings.Contains(out, "seq 3") {
			t.Fatalf("exit %d stdout %q, want 1 naming seq 3", code, out)
		}
	})
	t.Run("checkpoints signed by another key are refused", func(t *testing.T) {
		s := startSignedAuditServer(t, 2)
		other := startSignedAuditServer(t, 1)
		code, out, _ := runAudit(t, "verify", "--server", s.url, "--token-file", s.tokenFile, "--checkpoints", s.dir, "--public-key", other.pub)
		if code != 1 || !strings.Contains(out, "audit checkpoint refused") {
			t.Fatalf("exit %d stdout %q, want 1 refusing the checkpoints", code, out)
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

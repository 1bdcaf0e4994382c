package audit_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
)

// serveRun is what one `healer serve` run holds of the audit trail: a
// Trail tagging with the key, and its checkpointer on a data dir.
type serveRun struct {
	trail *audit.Trail
	cp    *audit.Checkpointer
	logs  *bytes.Buffer
}

// startRun starts a run on env with the key and checkpoint dir, as serve
// does, and reports Start's error.
func startRun(tb testing.TB, env *testEnv, key *audit.SigningKey, dir string, accept bool) (*serveRun, error) {
	tb.Helper()
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := audit.NewTrail(env.connect(tb), log, audit.WithSigningKey(key))
	cp := audit.NewCheckpointer(audit.CheckpointerConfig{
		Instance: "serve-a", Dir: audit.CheckpointDir(dir), Every: 1000, Interval: time.Minute,
	}, tr, key, log)
	return &serveRun{trail: tr, cp: cp, logs: logs}, cp.Start(tb.Context(), accept, "test-operator")
}

// checkpointedRun starts a run on a fresh stream and dir, appends n
// records and signs a checkpoint of them.
func checkpointedRun(tb testing.TB, key *audit.SigningKey, n int) (*testEnv, string, *serveRun) {
	tb.Helper()
	env, dir := startJetStream(tb), tb.TempDir()
	run := mustStartRun(tb, env, key, dir)
	appendN(tb, run.trail, n)
	if _, err := run.cp.Checkpoint(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	return env, dir, run
}

func mustStartRun(tb testing.TB, env *testEnv, key *audit.SigningKey, dir string) *serveRun {
	tb.Helper()
	r, err := startRun(tb, env, key, dir, false)
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	return r
}

func newKey(tb testing.TB) *audit.SigningKey {
	tb.Helper()
	k, err := audit.NewSigningKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// checkAgainst checks the whole trail in env against the checkpoints of
// dir, as `healer audit verify --checkpoints dir` does.
func checkAgainst(tb testing.TB, env *testEnv, dir string, pub audit.PublicKey) audit.CheckpointResult {
	tb.Helper()
	scs, paths, err := audit.CheckpointDir(dir).Read()
	if err != nil {
		tb.Fatal(err)
	}
	cps, err := audit.OpenAll(scs, paths, pub)
	if err != nil {
		tb.Fatal(err)
	}
	c := audit.NewCheckpointCheck(cps)
	for _, r := range decodeRecords(tb, rawMessages(tb, env.js)) {
		c.Add(r)
	}
	return c.Result()
}

func TestCheckpointsDetectAReplacedTrail(t *testing.T) {
	key := newKey(t)

	t.Run("a deleted and recreated stream refuses the next start, and fails verify", func(t *testing.T) {
		env, dir, run := checkpointedRun(t, key, 5)
		if res := checkAgainst(t, env, dir, key.Public()); !res.OK {
			t.Fatalf("intact trail fails: %+v", res)
		}

		// Between two runs: the stream is deleted and serve recreates it.
		rebuildAuditStream(t, env.js, nil)
		_, err := startRun(t, env, key, dir, false)
		if !errors.Is(err, audit.ErrTrailDisagrees) {
			t.Fatalf("start on a recreated stream: %v, want ErrTrailDisagrees", err)
		}
		if !strings.Contains(err.Error(), "records 1..5 are missing") || !strings.Contains(err.Error(), "--accept-new-audit-trail") {
			t.Fatalf("refusal does not name the missing records and the way out: %v", err)
		}
		// A new chain written on the recreated stream verifies on its own.
		rebuildAuditStream(t, env.js, nil)
		appendN(t, audit.NewTrail(env.connect(t), nil), 7)
		res := checkAgainst(t, env, dir, key.Public())
		if res.OK || !strings.Contains(res.Problem, "recreated") {
			t.Fatalf("verify of a recreated trail against the old checkpoint: %+v, want a failure saying it was recreated", res)
		}
		if got := audit.VerifyRecords(decodeRecords(t, rawMessages(t, env.js))); !got.OK {
			t.Fatalf("the new chain itself should be intact: %+v", got)
		}

		// Accepting the new trail starts, and says so in the trail.
		rebuildAuditStream(t, env.js, nil)
		run, err = startRun(t, env, key, dir, true)
		if err != nil {
			t.Fatalf("start with accept: %v", err)
		}
		recs := decodeRecords(t, rawMessages(t, env.js))
		if len(recs) != 1 || recs[0].Kind != audit.KindAuditAccepted || recs[0].Actor != "test-operator" {
			t.Fatalf("accepting the new trail is not audited: %+v", recs)
		}
		var d struct {
			Problem    string           `json:"problem"`
			Checkpoint audit.Checkpoint `json:"checkpoint"`
		}
		if err := json.Unmarshal(recs[0].Details, &d); err != nil || d.Checkpoint.LastSeq != 5 || !strings.Contains(d.Problem, "missing") {
			t.Fatalf("audit.accepted details %s do not say what the old checkpoint said", recs[0].Details)
		}
		// ... and the next start without the flag is not refused.
		appendN(t, run.trail, 2)
		if _, err := startRun(t, env, key, dir, false); err != nil {
			t.Fatalf("start after the new trail was accepted: %v", err)
		}
	})

	t.Run("removed first records are named", func(t *testing.T) {
		env, dir, _ := checkpointedRun(t, key, 6)
		// As a shrunk max_age does: records 1..3 expire, seqs stay.
		msgs := rawMessages(t, env.js)
		rebuildAuditStreamFrom(t, env.js, 4, msgs[3:])
		res := checkAgainst(t, env, dir, key.Public())
		if res.OK || res.FirstBad != 1 || !strings.Contains(res.Reason, "records 1..3 are missing") {
			t.Fatalf("verify of a trail without its first records: %+v, want records 1..3 named missing", res)
		}
		_, err := startRun(t, env, key, dir, false)
		if !errors.Is(err, audit.ErrTrailDisagrees) || !strings.Contains(err.Error(), "records 1..3 are missing") {
			t.Fatalf("start on a trail without its first records: %v", err)
		}
	})

	t.Run("a wiped stream is named", func(t *testing.T) {
		env, dir, _ := checkpointedRun(t, key, 4)
		rebuildAuditStream(t, env.js, nil)
		res := checkAgainst(t, env, dir, key.Public())
		if res.OK || !strings.Contains(res.Problem, "records 1..4 are missing: the trail is empty") {
			t.Fatalf("verify of an empty trail against a checkpoint: %+v", res)
		}
	})

	t.Run("a truncated trail is named", func(t *testing.T) {
		env, dir, _ := checkpointedRun(t, key, 8)
		rebuildAuditStream(t, env.js, rawMessages(t, env.js)[:5])
		res := checkAgainst(t, env, dir, key.Public())
		if res.OK || !strings.Contains(res.Problem, "records 6..8 are missing") {
			t.Fatalf("verify of a truncated trail: %+v", res)
		}
	})
}

// rebuildAuditStreamFrom is rebuildAuditStream with the first message at
// stream sequence first.
func rebuildAuditStreamFrom(tb testing.TB, js jetstream.JetStream, first uint64, msgs [][]byte) {
	tb.Helper()
	ctx := tb.Context()
	stream, err := js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	if err := js.DeleteStream(ctx, bus.StreamAudit); err != nil {
		tb.Fatal(err)
	}
	cfg.FirstSeq = first
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		tb.Fatalf("recreate audit stream from seq %d: %v", first, err)
	}
	for i, m := range msgs {
		if _, err := js.Publish(ctx, bus.SubjectAudit, m); err != nil {
			tb.Fatalf("republish message %d: %v", i+1, err)
		}
	}
}

func TestForeignRecordIsAlarmedAndNamed(t *testing.T) {
	key := newKey(t)
	env, dir := startJetStream(t), t.TempDir()
	ctx := t.Context()
	run := mustStartRun(t, env, key, dir)
	good := appendN(t, run.trail, 3)

	// A client with write access to the stream appends a record chained
	// correctly on the tail: its hash and prev_hash are right.
	forged := audit.Record{
		Seq: 4, ID: "forged-1", Time: time.Now().UTC(), Kind: audit.KindApproval, Actor: "slack:U-mallory",
		Target: "node/worker-1", Details: json.RawMessage(`{"approved":true}`), PrevHash: good[2].Hash,
	}
	forged.Hash = forged.ComputeHash()
	if _, err := env.connect(t).Publish(ctx, bus.SubjectAudit, mustMarshal(t, forged)); err != nil {
		t.Fatal(err)
	}
	if res := audit.VerifyRecords(decodeRecords(t, rawMessages(t, env.js))); !res.OK {
		t.Fatalf("the forged record should chain correctly: %+v", res)
	}

	// The committer's next append finds it at the tail.
	if _, err := run.trail.Append(ctx, audit.Record{Kind: audit.KindEvent, Actor: "alertmanager"}); err != nil {
		t.Fatal(err)
	}
	var alarm audit.Record
	deadline := time.Now().Add(5 * time.Second)
	for alarm.Kind == "" && time.Now().Before(deadline) {
		recs, err := run.trail.Query(ctx, audit.Filter{Kind: audit.KindAuditForeign})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 0 {
			alarm = recs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Run("the committer alarms: metric, audit record, log", func(t *testing.T) {
		if got := run.trail.ForeignSeen(); got != 1 {
			t.Fatalf("ForeignSeen = %d, want 1", got)
		}
		if alarm.Kind != audit.KindAuditForeign || !strings.Contains(string(alarm.Details), `"foreign_seq":4`) {
			t.Fatalf("no audit.foreign record naming seq 4: %+v", alarm)
		}
		if !strings.Contains(run.logs.String(), "level=ERROR") || !strings.Contains(run.logs.String(), "seq=4") {
			t.Fatalf("no ERROR log line naming seq 4:\n%s", run.logs)
		}
	})

	t.Run("the checkpoint names it, and verify with the public key alone fails", func(t *testing.T) {
		cp, err := run.cp.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cp.ForeignCount != 1 || len(cp.Foreign) != 1 || cp.Foreign[0] != 4 {
			t.Fatalf("checkpoint foreign %v (%d), want [4]", cp.Foreign, cp.ForeignCount)
		}
		res := checkAgainst(t, env, dir, key.Public())
		if res.OK || res.FirstBad != 4 || !strings.Contains(res.Problem, "seq 4") {
			t.Fatalf("verify: %+v, want a failure naming seq 4", res)
		}
		// It is alarmed once, however often it is seen.
		if got := run.trail.ForeignSeen(); got != 1 {
			t.Fatalf("ForeignSeen = %d after the checkpoint, want still 1", got)
		}
	})

	t.Run("a forged record in the middle of a range is found by the checkpointer", func(t *testing.T) {
		// A second forgery, followed by a record of another writer that
		// holds the key (another replica), so the committer's tail check
		// does not see it.
		last := decodeRecords(t, rawMessages(t, env.js))
		tail := last[len(last)-1]
		f2 := audit.Record{Seq: tail.Seq + 1, ID: "forged-2", Time: time.Now().UTC(), Kind: audit.KindEvent, Details: json.RawMessage(`{}`), PrevHash: tail.Hash}
		f2.Hash = f2.ComputeHash()
		if _, err := env.js.Publish(ctx, bus.SubjectAudit, mustMarshal(t, f2)); err != nil {
			t.Fatal(err)
		}
		other := audit.NewTrail(env.connect(t), nil, audit.WithSigningKey(key))
		appendN(t, other, 2)
		cp, err := run.cp.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cp.ForeignCount != 2 || cp.Foreign[1] != f2.Seq {
			t.Fatalf("checkpoint foreign %v, want [4 %d]", cp.Foreign, f2.Seq)
		}
	})
}

func TestCheckpointSignature(t *testing.T) {
	key, other := newKey(t), newKey(t)
	sc, err := key.Sign(audit.Checkpoint{Instance: "a", Index: 1, Time: time.Now(), FirstSeq: 1, LastSeq: 9, HeadHash: strings.Repeat("a", 64)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Open(key.Public()); err != nil {
		t.Fatalf("a good checkpoint is refused: %v", err)
	}
	altered := sc
	altered.Body = bytes.Replace(sc.Body, []byte(`"last_seq":9`), []byte(`"last_seq":3`), 1)
	badSig := sc
	badSig.Signature = "AAAA" + sc.Signature[4:]
	for _, tc := range []struct {
		name string
		sc   audit.SignedCheckpoint
		pub  audit.PublicKey
		want string
	}{
		{"altered body", altered, key.Public(), "altered or forged"},
		{"bad signature", badSig, key.Public(), "altered or forged"},
		{"wrong key", sc, other.Public(), "not by key"},
		{"no key", sc, audit.PublicKey{}, "no public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.sc.Open(tc.pub)
			if !errors.Is(err, audit.ErrBadCheckpoint) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want ErrBadCheckpoint saying %q", err, tc.want)
			}
		})
	}

	t.Run("serve refuses to start on a forged checkpoint file", func(t *testing.T) {
		env, dir := startJetStream(t), t.TempDir()
		forged, err := other.Sign(audit.Checkpoint{Instance: "a", Index: 7, Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.CheckpointDir(dir).Write(forged); err != nil {
			t.Fatal(err)
		}
		if _, err := startRun(t, env, key, dir, true); !errors.Is(err, audit.ErrBadCheckpoint) {
			t.Fatalf("start with a checkpoint signed by another key: %v, want ErrBadCheckpoint", err)
		}
	})
}

func TestCheckpointCadence(t *testing.T) {
	key := newKey(t)
	for _, tc := range []struct {
		name     string
		every    uint64
		interval time.Duration
		records  int
		wantLast uint64
	}{
		{"after every 1000 records", 1000, time.Hour, 1000, 1000},
		{"after the interval", 1000, 200 * time.Millisecond, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, dir := startJetStream(t), t.TempDir()
			tr := audit.NewTrail(env.js, nil, audit.WithSigningKey(key))
			cp := audit.NewCheckpointer(audit.CheckpointerConfig{Instance: "a", Dir: audit.CheckpointDir(dir), Every: tc.every, Interval: tc.interval}, tr, key, nil)
			if err := cp.Start(t.Context(), false, ""); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); cp.Run(t.Context()) }()
			recs := make([]audit.Record, tc.records)
			for i := range recs {
				recs[i] = audit.Record{Kind: audit.KindEvent}
			}
			if _, err := tr.AppendAll(t.Context(), recs...); err != nil {
				t.Fatal(err)
			}
			var newest audit.OpenedCheckpoint
			deadline := time.Now().Add(10 * time.Second)
			for newest.LastSeq < tc.wantLast && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				scs, paths, err := audit.CheckpointDir(dir).Read()
				if err != nil {
					t.Fatal(err)
				}
				cps, err := audit.OpenAll(scs, paths, key.Public())
				if err != nil {
					t.Fatal(err)
				}
				newest, _ = audit.Newest(cps)
			}
			if newest.LastSeq < tc.wantLast {
				t.Fatalf("newest checkpoint covers up to seq %d, want %d", newest.LastSeq, tc.wantLast)
			}
			if newest.Index < 2 || newest.Prev == "" {
				t.Fatalf("checkpoint #%d prev %q: want it chained on the start checkpoint", newest.Index, newest.Prev)
			}
		})
	}
}

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit-signing.key")
	k, created, err := audit.LoadOrCreateSigningKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v (created %v)", err, created)
	}
	t.Run("generated 0600, and loaded again", func(t *testing.T) {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %v (%v), want 0600", fi.Mode(), err)
		}
		again, created, err := audit.LoadOrCreateSigningKey(path)
		if err != nil || created || again.Public().ID() != k.Public().ID() {
			t.Fatalf("second load: %v created %v id %s, want the same key", err, created, again.Public().ID())
		}
	})
	t.Run("a file others may read is refused", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := audit.LoadSigningKey(path); !errors.Is(err, audit.ErrKeyFile) {
				t.Fatalf("mode %04o: %v, want ErrKeyFile", mode, err)
			}
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the secret never prints", func(t *testing.T) {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("key", "key", k)
		printed := buf.String() + k.String() + strings.Join([]string{k.GoString()}, "")
		body := strings.Join(strings.Split(string(raw), "\n")[1:2], "")
		if strings.Contains(printed, body) || !strings.Contains(printed, k.Public().ID()) {
			t.Fatalf("printed key %q shows the secret or not the id", printed)
		}
	})
	t.Run("the public key round-trips", func(t *testing.T) {
		pub, err := audit.ParsePublicKey(k.Public().PEM())
		if err != nil || pub.ID() != k.Public().ID() {
			t.Fatalf("parse: %v %s", err, pub.ID())
		}
	})
}

func TestTagIsOutsideTheHash(t *testing.T) {
	env := startJetStream(t)
	key := newKey(t)
	appendN(t, audit.NewTrail(env.js, nil), 1)
	appendN(t, audit.NewTrail(env.connect(t), nil, audit.WithSigningKey(key)), 1)
	msgs := rawMessages(t, env.js)
	recs := decodeRecords(t, msgs)
	t.Run("untagged record has no tag member", func(t *testing.T) {
		if bytes.Contains(msgs[0], []byte(`"tag"`)) || recs[0].Tag != "" {
			t.Fatalf("record written without a key has a tag: %s", msgs[0])
		}
	})
	t.Run("tagged record ends with hash then tag, and the hash excludes it", func(t *testing.T) {
		if recs[1].Tag == "" || !bytes.HasSuffix(msgs[1], []byte(`","tag":"`+recs[1].Tag+`"}`)) {
			t.Fatalf("stored form %s does not end with the tag", msgs[1])
		}
		if recs[1].ComputeHash() != recs[1].Hash {
			t.Fatal("the tag changes the hash")
		}
		if res := audit.VerifyRecords(recs); !res.OK {
			t.Fatalf("mixed chain: %+v", res)
		}
		if got := encodeJSON(t, recs[1]); !bytes.Equal(got, msgs[1]) {
			t.Fatalf("re-encoded %s, stored %s", got, msgs[1])
		}
	})
}

package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/bus/bustest"
)

func TestAuditAppend(t *testing.T) {
	env := startJetStream(t)
	tr := audit.NewTrail(env.js, nil)
	ctx := t.Context()

	before := time.Now()
	first, err := tr.Append(ctx, audit.Record{
		Kind: audit.KindEvent, EventID: "evt-1", Target: "node/worker-1", Actor: "alertmanager",
		Details: json.RawMessage(`{ "alert" : "NodeNotReady" }`),
	})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	given := time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 7200))
	second, err := tr.Append(ctx, audit.Record{
		Kind: audit.KindSuppressed, ID: "my-id", Time: given, Target: "node/worker-1",
		Remediator: "node.cordon", Details: audit.Details("reason", "rate limit"),
		Seq: 99, PrevHash: "forged", Hash: "forged",
	})
	if err != nil {
		t.Fatalf("append: %v", err)
	}

	t.Run("fills seq, prev_hash, hash, id and time", func(t *testing.T) {
		if first.Seq != 1 || first.PrevHash != audit.GenesisHash {
			t.Fatalf("first record: seq %d prev %q, want 1 and genesis", first.Seq, first.PrevHash)
		}
		if first.Hash != first.ComputeHash() {
			t.Fatalf("first record hash %q does not match its content", first.Hash)
		}
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(first.ID) {
			t.Fatalf("generated id %q, want 32 hex digits", first.ID)
		}
		if first.Time.Before(before.Add(-time.Second)) || first.Time.After(time.Now()) || first.Time.Location() != time.UTC {
			t.Fatalf("generated time %v, want now in UTC", first.Time)
		}
		if string(first.Details) != `{"alert":"NodeNotReady"}` {
			t.Fatalf("details not compacted: %s", first.Details)
		}
	})
	t.Run("chains the second record and keeps caller id and time", func(t *testing.T) {
		if second.Seq != 2 || second.PrevHash != first.Hash || second.Hash != second.ComputeHash() {
			t.Fatalf("second record seq %d prev %q hash %q: not chained to %q", second.Seq, second.PrevHash, second.Hash, first.Hash)
		}
		if second.ID != "my-id" || !second.Time.Equal(given) || second.Time.Location() != time.UTC {
			t.Fatalf("caller id/time not kept: %q %v", second.ID, second.Time)
		}
	})
	t.Run("stored bytes are the returned record's JSON", func(t *testing.T) {
		raw := rawMessages(t, env.js)
		if len(raw) != 2 {
			t.Fatalf("stream holds %d messages, want 2", len(raw))
		}
		for i, rec := range []audit.Record{first, second} {
			if want := encodeJSON(t, rec); !bytes.Equal(raw[i], want) {
				t.Fatalf("message %d:\n got %s\nwant %s", i+1, raw[i], want)
			}
		}
	})
	t.Run("another trail continues the chain", func(t *testing.T) {
		third, err := audit.NewTrail(env.connect(t), nil).Append(ctx, audit.Record{Kind: audit.KindDecision})
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if third.Seq != 3 || third.PrevHash != second.Hash {
			t.Fatalf("third record seq %d prev %q, want 3 chained to %q", third.Seq, third.PrevHash, second.Hash)
		}
	})
}

func TestAuditAppendRefusesInvalidRecords(t *testing.T) {
	env := startJetStream(t)
	tr := audit.NewTrail(env.js, nil)
	tests := []struct {
		name string
		rec  audit.Record
	}{
		{"missing kind", audit.Record{Target: "node/a"}},
		{"unknown kind", audit.Record{Kind: "action.exploded"}},
		{"details not JSON", audit.Record{Kind: audit.KindEvent, Details: json.RawMessage(`{"a":`)}},
		{"details trailing data", audit.Record{Kind: audit.KindEvent, Details: json.RawMessage(`{} {}`)}},
		{"details an array", audit.Record{Kind: audit.KindEvent, Details: json.RawMessage(`[1]`)}},
		{"details a string", audit.Record{Kind: audit.KindEvent, Details: json.RawMessage(`"reason"`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tr.Append(t.Context(), tt.rec)
			if !errors.Is(err, audit.ErrInvalidRecord) {
				t.Fatalf("Append error = %v, want ErrInvalidRecord", err)
			}
		})
	}
	if n := len(rawMessages(t, env.js)); n != 0 {
		t.Fatalf("invalid records stored %d messages", n)
	}
}

func TestAuditAppendAll(t *testing.T) {
	env := startJetStream(t)
	tr := audit.NewTrail(env.js, nil)
	ctx := t.Context()

	t.Run("an invalid record refuses the whole group", func(t *testing.T) {
		_, err := tr.AppendAll(ctx, audit.Record{Kind: audit.KindEvent}, audit.Record{Kind: "action.exploded"})
		if !errors.Is(err, audit.ErrInvalidRecord) {
			t.Fatalf("AppendAll error = %v, want ErrInvalidRecord", err)
		}
		if n := len(rawMessages(t, env.js)); n != 0 {
			t.Fatalf("a refused group stored %d messages", n)
		}
	})
	t.Run("each group is stored in order and in one piece among concurrent appends", func(t *testing.T) {
		const groups = 40
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for g := range groups {
			wg.Go(func() {
				// A single Append beside each group, so that groups have
				// other records queued around them.
				_, err := tr.Append(ctx, audit.Record{Kind: audit.KindPolicyLoaded, EventID: fmt.Sprintf("single-%d", g)})
				if err == nil {
					var out []audit.Record
					out, err = tr.AppendAll(ctx,
						audit.Record{Kind: audit.KindEvent, EventID: fmt.Sprintf("g-%d", g)},
						audit.Record{Kind: audit.KindDecision, EventID: fmt.Sprintf("g-%d", g)},
						audit.Record{Kind: audit.KindSuppressed, EventID: fmt.Sprintf("g-%d", g), Details: audit.Details("reason", "dry-run")})
					if err == nil && (len(out) != 3 || out[1].Seq != out[0].Seq+1 || out[2].Seq != out[1].Seq+1 || out[1].PrevHash != out[0].Hash) {
						err = fmt.Errorf("group %d returned %d records at %v", g, len(out), seqs(out))
					}
				}
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		stored := decodeRecords(t, rawMessages(t, env.js))
		if len(stored) != 4*groups {
			t.Fatalf("%d records stored, want %d", len(stored), 4*groups)
		}
		for i, r := range stored {
			if r.Kind != audit.KindEvent {
				continue
			}
			if i+2 >= len(stored) || stored[i+1].Kind != audit.KindDecision || stored[i+2].Kind != audit.KindSuppressed ||
				stored[i+1].EventID != r.EventID || stored[i+2].EventID != r.EventID {
				t.Fatalf("group of %s is not stored in one piece at seq %d", r.EventID, r.Seq)
			}
		}
		if res, err := tr.Verify(ctx); err != nil || !res.OK {
			t.Fatalf("verify = %+v, %v", res, err)
		}
	})
}

func TestAuditAppendConcurrentWriters(t *testing.T) {
	env := startJetStream(t)
	ctx := t.Context()

	t.Run("stale tail is retried, not forked", func(t *testing.T) {
		a := audit.NewTrail(env.js, nil)
		b := audit.NewTrail(env.connect(t), nil)
		ra1, err := a.Append(ctx, audit.Record{Kind: audit.KindEvent, Actor: "a"})
		if err != nil {
			t.Fatal(err)
		}
		rb, err := b.Append(ctx, audit.Record{Kind: audit.KindEvent, Actor: "b"})
		if err != nil {
			t.Fatal(err)
		}
		// a still caches ra1 as the tail; its publish must be rejected by
		// the expected-last-sequence check and retried on rb.
		ra2, err := a.Append(ctx, audit.Record{Kind: audit.KindEvent, Actor: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if rb.PrevHash != ra1.Hash || ra2.Seq != 3 || ra2.PrevHash != rb.Hash {
			t.Fatalf("chain forked: a1=%d b=%d (prev a1? %v) a2=%d (prev b? %v)",
				ra1.Seq, rb.Seq, rb.PrevHash == ra1.Hash, ra2.Seq, ra2.PrevHash == rb.Hash)
		}
	})

	t.Run("two trails with several goroutines each keep one chain", func(t *testing.T) {
		trails := []*audit.Trail{audit.NewTrail(env.js, nil), audit.NewTrail(env.connect(t), nil)}
		const goroutines, perGoroutine = 32, 25 // enough at once that appends are committed in batches
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			ids  = map[string]bool{}
			errs []error
		)
		for ti, tr := range trails {
			for g := range goroutines {
				wg.Go(func() {
					for i := range perGoroutine {
						rec, err := tr.Append(ctx, audit.Record{
							Kind: audit.KindActionStarted, Actor: fmt.Sprintf("replica-%d", ti),
							Details: audit.Details("g", g, "i", i),
						})
						mu.Lock()
						if err != nil {
							errs = append(errs, err)
						} else {
							ids[rec.ID] = true
						}
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent appends failed: %v", err)
		}
		const total = 3 + 2*goroutines*perGoroutine
		res, err := audit.NewTrail(env.js, nil).Verify(ctx)
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		if !res.OK || res.Records != total {
			t.Fatalf("verify = %+v, want OK with %d records", res, total)
		}
		stored := decodeRecords(t, rawMessages(t, env.js))
		for _, r := range stored[3:] {
			delete(ids, r.ID)
		}
		if len(ids) != 0 {
			t.Fatalf("%d acknowledged records are not in the trail", len(ids))
		}
	})
}

func TestAuditAppendFailsWithoutStream(t *testing.T) {
	t.Run("stream missing", func(t *testing.T) {
		bare := bustest.Start(t) // no streams
		tr := audit.NewTrail(bare.JS, nil)
		if _, err := tr.Append(t.Context(), audit.Record{Kind: audit.KindEvent}); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("Append error = %v, want stream not found", err)
		}
	})
	t.Run("server gone after the tail was cached", func(t *testing.T) {
		env := startJetStream(t)
		tr := audit.NewTrail(env.js, nil)
		appendN(t, tr, 1)
		env.NS.Shutdown()
		env.NS.WaitForShutdown()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if _, err := tr.Append(ctx, audit.Record{Kind: audit.KindActionStarted}); err == nil {
			t.Fatal("Append succeeded with the server down; an action could run unaudited")
		}
	})
}

func TestAuditAppendRefusesTamperedTail(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(last []byte) []byte
	}{
		{"edited tail", func(last []byte) []byte {
			return bytes.Replace(last, []byte(`"actor":"healer/engine"`), []byte(`"actor":"mallory"`), 1)
		}},
		{"garbage tail", func([]byte) []byte { return []byte("not json") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startJetStream(t)
			appendN(t, audit.NewTrail(env.js, nil), 3)
			msgs := rawMessages(t, env.js)
			msgs[2] = tt.tamper(msgs[2])
			rebuildAuditStream(t, env.js, msgs)
			_, err := audit.NewTrail(env.js, nil).Append(t.Context(), audit.Record{Kind: audit.KindEvent})
			if !errors.Is(err, audit.ErrTailInvalid) {
				t.Fatalf("Append error = %v, want ErrTailInvalid", err)
			}
		})
	}
}

func TestAuditStreamForbidsDeletes(t *testing.T) {
	env := startJetStream(t)
	ctx := t.Context()
	appendN(t, audit.NewTrail(env.js, nil), 2)
	stream, err := env.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, 1); err == nil {
		t.Error("deleting an audit message succeeded")
	}
	if err := stream.Purge(ctx); err == nil {
		t.Error("purging the audit stream succeeded")
	}
	cfg := stream.CachedInfo().Config
	cfg.DenyDelete, cfg.DenyPurge = false, false
	if _, err := env.js.UpdateStream(ctx, cfg); err == nil {
		t.Error("lifting DenyDelete/DenyPurge succeeded")
	}
	if n := len(rawMessages(t, env.js)); n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	const n = 10
	tests := []struct {
		name     string
		tamper   func(t *testing.T, msgs [][]byte) [][]byte
		firstBad uint64
		reason   string
	}{
		{"intact", func(_ *testing.T, m [][]byte) [][]byte { return m }, 0, ""},
		{"edited details, old hash kept", func(t *testing.T, m [][]byte) [][]byte {
			m[4] = bytes.Replace(m[4], []byte(`"details":{"i":4}`), []byte(`"details":{"i":40}`), 1)
			return m
		}, 5, "was altered"},
		{"edited and re-hashed", func(t *testing.T, m [][]byte) [][]byte {
			var r audit.Record
			if err := json.Unmarshal(m[4], &r); err != nil {
				t.Fatal(err)
			}
			r.Actor = "mallory"
			r.Hash = r.ComputeHash()
			m[4] = mustMarshal(t, r)
			return m
		}, 6, "does not match hash"},
		{"deleted record", func(_ *testing.T, m [][]byte) [][]byte {
			return slices.Delete(m, 4, 5)
		}, 5, "expected seq 5 but found"},
		{"reordered records", func(_ *testing.T, m [][]byte) [][]byte {
			m[4], m[5] = m[5], m[4]
			return m
		}, 5, "out of order"},
		{"duplicated record", func(_ *testing.T, m [][]byte) [][]byte {
			return slices.Insert(m, 3, m[2])
		}, 4, "expected seq 4 but found"},
		{"inserted garbage", func(_ *testing.T, m [][]byte) [][]byte {
			return slices.Insert(m, 6, []byte(`{"seq":"x"}`))
		}, 7, "not a valid audit record"},
		{"first record removed", func(_ *testing.T, m [][]byte) [][]byte {
			return m[1:]
		}, 1, "record 1 is missing: the trail starts with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startJetStream(t)
			appendN(t, audit.NewTrail(env.js, nil), n)
			msgs := tt.tamper(t, rawMessages(t, env.js))
			rebuildAuditStream(t, env.js, msgs)

			res, err := audit.NewTrail(env.js, nil).Verify(t.Context())
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if res.Records != uint64(len(msgs)) {
				t.Errorf("verify examined %d records, want %d", res.Records, len(msgs))
			}
			if tt.firstBad == 0 {
				if !res.OK || res.FirstBad != 0 || res.Reason != "" {
					t.Fatalf("verify = %+v, want OK", res)
				}
				return
			}
			if res.OK || res.FirstBad != tt.firstBad || !strings.Contains(res.Reason, tt.reason) {
				t.Fatalf("verify = %+v, want first bad %d with reason containing %q", res, tt.firstBad, tt.reason)
			}
		})
	}
}

func TestAuditQuery(t *testing.T) {
	env := startJetStream(t)
	tr := audit.NewTrail(env.js, nil)
	ctx := t.Context()
	now := time.Now().UTC()
	// Twelve records: targets a/b/c in turn, remediators r1 (even) and r2
	// (odd), kinds event/decision/suppressed in turn, event ids per pair,
	// and the first six stamped two hours ago.
	kinds := []audit.Kind{audit.KindEvent, audit.KindDecision, audit.KindSuppressed}
	for i := range 12 {
		rec := audit.Record{
			Kind:       kinds[i%3],
			Target:     "node/" + string(rune('a'+i%3)),
			Remediator: fmt.Sprintf("r%d", 1+i%2),
			EventID:    fmt.Sprintf("evt-%d", i/2),
			Time:       now,
		}
		if i < 6 {
			rec.Time = now.Add(-2 * time.Hour)
		}
		if _, err := tr.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		f    audit.Filter
		want []uint64
	}{
		{"no filter", audit.Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"target", audit.Filter{Target: "node/b"}, []uint64{2, 5, 8, 11}},
		{"remediator", audit.Filter{Remediator: "r2"}, []uint64{2, 4, 6, 8, 10, 12}},
		{"kind", audit.Filter{Kind: audit.KindSuppressed}, []uint64{3, 6, 9, 12}},
		{"event id", audit.Filter{EventID: "evt-3"}, []uint64{7, 8}},
		{"target and remediator", audit.Filter{Target: "node/a", Remediator: "r2"}, []uint64{4, 10}},
		{"since", audit.Filter{Since: now.Add(-time.Hour)}, []uint64{7, 8, 9, 10, 11, 12}},
		{"since and kind", audit.Filter{Since: now.Add(-time.Hour), Kind: audit.KindEvent}, []uint64{7, 10}},
		{"since in the future", audit.Filter{Since: now.Add(time.Hour)}, []uint64{}},
		{"limit keeps the latest", audit.Filter{Limit: 3}, []uint64{10, 11, 12}},
		{"limit with a filter keeps the latest matches", audit.Filter{Remediator: "r1", Limit: 2}, []uint64{9, 11}},
		{"after pages forward", audit.Filter{After: 2, Limit: 3}, []uint64{3, 4, 5}},
		{"after with a filter", audit.Filter{After: 4, Kind: audit.KindDecision, Limit: 2}, []uint64{5, 8}},
		{"after and since", audit.Filter{After: 8, Since: now.Add(-time.Hour)}, []uint64{9, 10, 11, 12}},
		{"after the end", audit.Filter{After: 12}, []uint64{}},
		{"no match", audit.Filter{Target: "node/z"}, []uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.Query(ctx, tt.f)
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			if got == nil {
				t.Fatal("query returned nil, want an empty slice")
			}
			if !slices.Equal(seqs(got), tt.want) {
				t.Fatalf("query %+v = seqs %v, want %v", tt.f, seqs(got), tt.want)
			}
			for _, r := range got {
				if r.Hash != r.ComputeHash() {
					t.Fatalf("record %d returned with a hash that does not match", r.Seq)
				}
			}
		})
	}

	t.Run("default limit is 100, latest first", func(t *testing.T) {
		appendN(t, tr, 100)
		got, err := tr.Query(ctx, audit.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != audit.DefaultLimit || got[0].Seq != 13 || got[99].Seq != 112 {
			t.Fatalf("got %d records from %d to %d, want 100 from 13 to 112", len(got), got[0].Seq, got[len(got)-1].Seq)
		}
	})

	t.Run("invalid filters", func(t *testing.T) {
		for _, f := range []audit.Filter{{Limit: -1}, {Limit: audit.MaxLimit + 1}, {Kind: "nope"}} {
			if _, err := tr.Query(ctx, f); !errors.Is(err, audit.ErrInvalidFilter) {
				t.Errorf("query %+v error = %v, want ErrInvalidFilter", f, err)
			}
		}
	})
}

func TestAuditQueryShowsUnreadableMessages(t *testing.T) {
	env := startJetStream(t)
	appendN(t, audit.NewTrail(env.js, nil), 3)
	msgs := rawMessages(t, env.js)
	rebuildAuditStream(t, env.js, slices.Insert(msgs, 1, []byte("garbage")))
	tr := audit.NewTrail(env.js, nil)

	all, err := tr.Query(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || all[1].Seq != 2 || all[1].Kind != "unreadable" {
		t.Fatalf("query = %v, want the garbage shown as an unreadable record at seq 2", all)
	}
	if res := audit.VerifyRecords(all); res.OK || res.FirstBad != 2 || !strings.Contains(res.Reason, "not a valid audit record") {
		t.Fatalf("VerifyRecords = %+v, want first bad 2", res)
	}
	filtered, err := tr.Query(t.Context(), audit.Filter{Kind: audit.KindEvent})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range filtered {
		if r.Kind != audit.KindEvent {
			t.Fatalf("kind filter returned a %q record", r.Kind)
		}
	}
}

// Queries do not leave consumers behind: a page or a CLI polling the
// trail would otherwise pile them up to the server's limit.
func TestQueriesLeaveNoConsumers(t *testing.T) {
	env := startJetStream(t)
	tr := audit.NewTrail(env.js, nil)
	appendN(t, tr, 5)
	for range 200 {
		if _, err := tr.Query(t.Context(), audit.Filter{Target: "node/worker-1"}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := env.js.Stream(t.Context(), bus.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers > 2 {
		t.Fatalf("%d consumers left on the audit stream after 200 queries", info.State.Consumers)
	}
}

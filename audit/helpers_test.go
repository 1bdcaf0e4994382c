package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/bus/bustest"
)

// testEnv is a real embedded NATS JetStream server with healer's streams.
type testEnv struct {
	*bustest.Server
	js jetstream.JetStream
}

// startJetStream starts an embedded server, creates healer's streams and
// returns a JetStream client connected to it. Everything is torn down at
// the end of the test.
func startJetStream(tb testing.TB) *testEnv {
	tb.Helper()
	srv := bustest.Start(tb)
	srv.Streams(tb)
	return &testEnv{Server: srv, js: srv.JS}
}

// connect opens another client connection to the server.
func (e *testEnv) connect(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	_, js := e.Connect(tb)
	return js
}

// appendN appends n records through tr and returns them.
func appendN(tb testing.TB, tr *audit.Trail, n int) []audit.Record {
	tb.Helper()
	recs := make([]audit.Record, 0, n)
	kinds := audit.Kinds()
	for i := range n {
		rec, err := tr.Append(tb.Context(), audit.Record{
			Kind:       kinds[i%len(kinds)],
			EventID:    fmt.Sprintf("evt-%d", i/3),
			Target:     fmt.Sprintf("node/worker-%d", i%3),
			Remediator: "node.cordon",
			Actor:      "healer/engine",
			Details:    audit.Details("i", i),
		})
		if err != nil {
			tb.Fatalf("append record %d: %v", i+1, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// rawMessages returns the stored bytes of every message of the audit
// stream, in stream order.
func rawMessages(tb testing.TB, js jetstream.JetStream) [][]byte {
	tb.Helper()
	ctx := tb.Context()
	stream, err := js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		tb.Fatalf("open audit stream: %v", err)
	}
	state := stream.CachedInfo().State
	last := state.LastSeq
	out := make([][]byte, 0, last)
	for seq := max(state.FirstSeq, 1); seq <= last; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("get audit message %d: %v", seq, err)
		}
		out = append(out, msg.Data)
	}
	return out
}

// rebuildAuditStream replaces the audit stream by a fresh one holding
// exactly msgs. The stream denies deleting messages, and the server
// refuses to lift that, so this is how a test produces a tampered trail:
// an attacker with stream admin rights could do the same.
func rebuildAuditStream(tb testing.TB, js jetstream.JetStream, msgs [][]byte) {
	tb.Helper()
	ctx := tb.Context()
	if err := js.DeleteStream(ctx, bus.StreamAudit); err != nil {
		tb.Fatalf("delete audit stream: %v", err)
	}
	var cfg bus.StreamsConfig
	cfg.ApplyDefaults()
	if _, err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		tb.Fatalf("ensure streams: %v", err)
	}
	for i, m := range msgs {
		if _, err := js.Publish(ctx, bus.SubjectAudit, m); err != nil {
			tb.Fatalf("republish message %d: %v", i+1, err)
		}
	}
}

func decodeRecords(tb testing.TB, msgs [][]byte) []audit.Record {
	tb.Helper()
	recs := make([]audit.Record, 0, len(msgs))
	for i, m := range msgs {
		var r audit.Record
		if err := json.Unmarshal(m, &r); err != nil {
			tb.Fatalf("decode message %d: %v", i+1, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	return b
}

// encodeJSON encodes v as the trail and the API do: without HTML escaping
// and without the trailing newline.
func encodeJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		tb.Fatalf("encode: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func seqs(recs []audit.Record) []uint64 {
	out := make([]uint64, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

// fixedTime is a fixed instant for records that need a stable hash.
func fixedTime() time.Time { return time.Date(2025, 3, 1, 10, 4, 5, 120000000, time.UTC) }

package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
)

func sampleRecord() audit.Record {
	return audit.Record{
		Seq:            7,
		ID:             "01ab",
		Time:           fixedTime(),
		Kind:           audit.KindSuppressed,
		EventID:        "evt-1",
		Target:         "node/worker-1",
		Remediator:     "node.cordon",
		Actor:          "healer/engine",
		PolicyRevision: "rev-3",
		TraceID:        "trace-9",
		ActionID:       "act-2",
		Details:        json.RawMessage(`{ "reason": "rate <limit>",  "n": 1.50 }`),
		PrevHash:       strings.Repeat("ab", 32),
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestAuditCanonicalForm(t *testing.T) {
	// The canonical form documented in doc.go, written out by hand.
	const canonical = `{"seq":7,"id":"01ab","time":"2025-03-01T10:04:05.12Z","kind":"suppressed",` +
		`"event_id":"evt-1","target":"node/worker-1","remediator":"node.cordon","actor":"healer/engine",` +
		`"policy_revision":"rev-3","trace_id":"trace-9","action_id":"act-2",` +
		`"details":{"reason":"rate <limit>","n":1.50},` +
		`"prev_hash":"abababababababababababababababababababababababababababababababab"}`

	t.Run("hash is sha256 of the documented canonical form", func(t *testing.T) {
		r := sampleRecord()
		if got, want := r.ComputeHash(), sha256Hex([]byte(canonical)); got != want {
			t.Fatalf("ComputeHash = %s, want sha256(canonical) = %s", got, want)
		}
	})

	t.Run("JSON form is the canonical form with hash appended", func(t *testing.T) {
		r := sampleRecord()
		r.Hash = r.ComputeHash()
		got := encodeJSON(t, r)
		want := strings.TrimSuffix(canonical, "}") + `,"hash":"` + r.Hash + `"}`
		if string(got) != want {
			t.Fatalf("marshal:\n got %s\nwant %s", got, want)
		}
		// An independent verifier strips the hash member and hashes the rest.
		stripped := regexp.MustCompile(`,"hash":"[0-9a-f]{64}"}$`).ReplaceAll(got, []byte("}"))
		if sha256Hex(stripped) != r.Hash {
			t.Fatalf("hash of stored bytes without hash member does not match")
		}
	})

	t.Run("decode then encode gives identical bytes", func(t *testing.T) {
		r := sampleRecord()
		r.Details = json.RawMessage(`{"s":"tab\there \u2028 <&> é \"q\"","nested":{"z":[1,2e3,{"a":null}],"a":true}}`)
		var ascii []byte
		for c := range 128 {
			ascii = append(ascii, byte(c))
		}
		r.Target = string(ascii) + "\u2029é\xff"
		r.Hash = r.ComputeHash()
		first := encodeJSON(t, r)
		var back audit.Record
		if err := json.Unmarshal(first, &back); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		second := encodeJSON(t, back)
		if !bytes.Equal(first, second) {
			t.Fatalf("round trip changed bytes:\n%s\n%s", first, second)
		}
		if back.ComputeHash() != r.Hash {
			t.Fatalf("decoded record hashes differently")
		}
		// Strings are escaped exactly as encoding/json does without HTML
		// escaping (the documented rule).
		var std bytes.Buffer
		enc := json.NewEncoder(&std)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(back.Target); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(first, []byte(`"target":`+strings.TrimSpace(std.String())+`,`)) {
			t.Fatalf("target not escaped as encoding/json does: %s", first)
		}
	})

	t.Run("hash survives re-encoding by another JSON encoder", func(t *testing.T) {
		r := sampleRecord()
		r.Hash = r.ComputeHash()
		// Plain json.Marshal escapes <, > and & and MarshalIndent adds
		// whitespace; neither may break verification.
		indented, err := json.MarshalIndent([]audit.Record{r}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(indented, []byte(`\u003c`)) {
			t.Fatalf("expected HTML escaping in %s", indented)
		}
		var back []audit.Record
		if err := json.Unmarshal(indented, &back); err != nil {
			t.Fatal(err)
		}
		if got := back[0].ComputeHash(); got != r.Hash {
			t.Fatalf("re-encoded record hashes to %s, want %s", got, r.Hash)
		}
	})

	t.Run("time zone does not matter, only the instant", func(t *testing.T) {
		r := sampleRecord()
		utc := r.ComputeHash()
		r.Time = r.Time.In(time.FixedZone("CET", 3600))
		if r.ComputeHash() != utc {
			t.Fatalf("hash depends on the time zone")
		}
	})

	t.Run("empty and null details are an empty object", func(t *testing.T) {
		r := sampleRecord()
		r.Details = json.RawMessage(`{}`)
		want := r.ComputeHash()
		for _, d := range []json.RawMessage{nil, json.RawMessage(``), json.RawMessage(` null `)} {
			r.Details = d
			if r.ComputeHash() != want {
				t.Fatalf("details %q hash differently from {}", d)
			}
		}
		if b := mustMarshal(t, r); !bytes.Contains(b, []byte(`"details":{}`)) {
			t.Fatalf("details not encoded as {}: %s", b)
		}
	})
}

func TestAuditHashCoversEveryField(t *testing.T) {
	base := sampleRecord()
	baseHash := base.ComputeHash()
	tests := []struct {
		name   string
		mutate func(r *audit.Record)
	}{
		{"seq", func(r *audit.Record) { r.Seq++ }},
		{"id", func(r *audit.Record) { r.ID += "x" }},
		{"time", func(r *audit.Record) { r.Time = r.Time.Add(time.Nanosecond) }},
		{"kind", func(r *audit.Record) { r.Kind = audit.KindDecision }},
		{"event_id", func(r *audit.Record) { r.EventID += "x" }},
		{"target", func(r *audit.Record) { r.Target += "x" }},
		{"remediator", func(r *audit.Record) { r.Remediator += "x" }},
		{"actor", func(r *audit.Record) { r.Actor += "x" }},
		{"policy_revision", func(r *audit.Record) { r.PolicyRevision += "x" }},
		{"trace_id", func(r *audit.Record) { r.TraceID += "x" }},
		{"action_id", func(r *audit.Record) { r.ActionID += "x" }},
		{"details value", func(r *audit.Record) { r.Details = json.RawMessage(`{"reason":"rate <limit>","n":1.5}`) }},
		{"details order", func(r *audit.Record) { r.Details = json.RawMessage(`{"n":1.50,"reason":"rate <limit>"}`) }},
		{"prev_hash", func(r *audit.Record) { r.PrevHash = audit.GenesisHash }},
		{"field moved between members", func(r *audit.Record) { r.Target, r.Remediator = r.Remediator, r.Target }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleRecord()
			tt.mutate(&r)
			if r.ComputeHash() == baseHash {
				t.Fatalf("changing %s does not change the hash", tt.name)
			}
		})
	}
	t.Run("hash field itself is not covered", func(t *testing.T) {
		r := sampleRecord()
		r.Hash = "anything"
		if r.ComputeHash() != baseHash {
			t.Fatalf("Hash must not be part of the canonical form")
		}
	})
}

func TestAuditDetails(t *testing.T) {
	tests := []struct {
		name string
		got  json.RawMessage
		want string
	}{
		{"pairs keep their order", audit.Details("reason", "rate limit", "limit", "node.cordon:node/x"), `{"reason":"rate limit","limit":"node.cordon:node/x"}`},
		{"no pairs", audit.Details(), `{}`},
		{"numbers bools and nil", audit.Details("n", 3, "f", 1.5, "ok", true, "none", nil), `{"n":3,"f":1.5,"ok":true,"none":null}`},
		{"error and duration as strings", audit.Details("error", errors.New("boom <1>"), "after", 90*time.Second), `{"error":"boom <1>","after":"1m30s"}`},
		{"nested map and slice", audit.Details("m", map[string]int{"b": 2, "a": 1}, "s", []string{"x"}), `{"m":{"a":1,"b":2},"s":["x"]}`},
		{"raw JSON kept", audit.Details("raw", json.RawMessage(`{ "k" : [1, 2] }`)), `{"raw":{"k":[1,2]}}`},
		{"non-string key", audit.Details(42, "v"), `{"42":"v"}`},
		{"value without key", audit.Details("a", 1, "dangling"), `{"a":1,"!BADKEY":"dangling"}`},
		{"unencodable value falls back to text", audit.Details("c", make(chan int)), ``},
		{"DetailsOf struct", audit.DetailsOf(struct {
			Reason string `json:"reason"`
			Limit  int    `json:"limit"`
		}{"rate limit", 3}), `{"reason":"rate limit","limit":3}`},
		{"DetailsOf map", audit.DetailsOf(map[string]any{"z": 1, "a": "<b>"}), `{"a":"<b>","z":1}`},
		{"DetailsOf non-object", audit.DetailsOf([]int{1, 2}), `{"value":[1,2]}`},
		{"DetailsOf nil", audit.DetailsOf(nil), `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				// Only check it is a valid object.
				var m map[string]any
				if err := json.Unmarshal(tt.got, &m); err != nil || m == nil {
					t.Fatalf("details %s are not a JSON object: %v", tt.got, err)
				}
				return
			}
			if string(tt.got) != tt.want {
				t.Fatalf("got %s, want %s", tt.got, tt.want)
			}
		})
	}
	t.Run("DetailsOf unencodable value", func(t *testing.T) {
		got := audit.DetailsOf(func() {})
		if !bytes.HasPrefix(got, []byte(`{"details_error":`)) {
			t.Fatalf("got %s, want a details_error object", got)
		}
	})
}

func TestAuditKinds(t *testing.T) {
	want := map[audit.Kind]string{
		audit.KindEvent: "event", audit.KindDecision: "decision", audit.KindSuppressed: "suppressed",
		audit.KindApproval: "approval", audit.KindActionStarted: "action.started", audit.KindActionProgress: "action.progress",
		audit.KindActionFinished: "action.finished", audit.KindActionFailed: "action.failed",
		audit.KindVerified: "verified", audit.KindPolicyLoaded: "policy.loaded", audit.KindPolicyRefused: "policy.refused",
		audit.KindPauseSet: "pause.set", audit.KindPauseCleared: "pause.cleared", audit.KindPolicyShadow: "policy.shadow",
		audit.KindAuditForeign: "audit.foreign", audit.KindAuditAccepted: "audit.accepted", audit.KindProblemClosed: "problem.closed",
	}
	for k, s := range want {
		t.Run(s, func(t *testing.T) {
			if string(k) != s || !k.Valid() {
				t.Fatalf("kind %q: valid=%v, want %q valid", k, k.Valid(), s)
			}
		})
	}
	if len(audit.Kinds()) != len(want) {
		t.Fatalf("Kinds() has %d kinds, want %d", len(audit.Kinds()), len(want))
	}
	for _, bad := range []audit.Kind{"", "Event", "action", "unreadable"} {
		if bad.Valid() {
			t.Errorf("kind %q should be invalid", bad)
		}
	}
}

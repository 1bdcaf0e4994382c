package bus

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"plain", `quote " backslash \ slash /`, "ctl \x00\x01\n\r\t\x1f \b \f \x7f", "<tag>&amp;", "ünïcødé ✓", "bad \xff utf8", "sep \u2028 \u2029"} {
		e := &Event{
			SpecVersion: SpecVersion, ID: "id-" + s, Source: "src", Type: s, Subject: "node/" + s,
			Time: time.Date(2026, 11, 22, 3, 12, 4, 512000000, time.UTC), DataContentType: "application/json",
			Status: StatusFiring, Key: s, Data: json.RawMessage(`{"a":[1,2,{"b":"c"}]}`),
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
}

// FuzzAppendJSON checks the encoder against encoding/json on any strings.
func FuzzAppendJSON(f *testing.F) {
	f.Add("node/worker-1", "NodeKernelDeadlock", "a3c1f0d2b4e59687")
	f.Add("\b\f\x00<>&\u2028", "\xff\xfe", "\\\"")
	f.Fuzz(func(t *testing.T, subject, typ, key string) {
		e := &Event{SpecVersion: SpecVersion, ID: key + "-id", Source: "fuzz", Type: typ, Subject: subject,
			Time: time.Unix(1_700_000_000, 123).UTC(), Status: StatusResolved, Key: key, Data: json.RawMessage(`{"k":1}`)}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

func BenchmarkEventEncode(b *testing.B) {
	e := &Event{SpecVersion: SpecVersion, ID: "am-0123456789abcdef", Source: "alertmanager", Type: "NodeKernelDeadlock",
		Subject: "node/worker-1", Time: time.Now().UTC(), Status: StatusFiring, Key: "a3c1f0d2b4e59687",
		Data: json.RawMessage(`{"alertname":"NodeKernelDeadlock","labels":{"alertname":"NodeKernelDeadlock","node":"worker-1"},"fingerprint":"a3c1f0d2b4e59687"}`)}
	b.Run("AppendJSON", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = e.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(e)
		}
	})
}

package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"testing"
)

// canonicalJSONTokens is the first canonicalJSON, built on json.Decoder's
// tokens: the reference the one-pass version must match byte for byte,
// or records appended before and after would hash differently.
func canonicalJSONTokens(raw json.RawMessage) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	type frame struct {
		object bool
		n      int // values (and keys, in an object) written so far
	}
	var (
		out   = make([]byte, 0, len(trimmed))
		stack []frame
		done  bool
	)
	prefix := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		switch {
		case top.object && top.n%2 == 1:
			out = append(out, ':')
		case top.n > 0:
			out = append(out, ',')
		}
		top.n++
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if !done {
				return nil, errors.New("unexpected end of JSON input")
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if done {
			return nil, errors.New("unexpected data after the JSON value")
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				prefix()
				stack = append(stack, frame{object: v == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			out = append(out, byte(v)) //nolint:gosec // a json.Delim is one of {}[]
		case string:
			prefix()
			out = appendString(out, v)
		case json.Number:
			prefix()
			out = append(out, v...)
		case bool:
			prefix()
			out = strconv.AppendBool(out, v)
		case nil:
			prefix()
			out = append(out, "null"...)
		}
		done = len(stack) == 0
	}
}

// FuzzCanonicalJSON checks the one-pass canonical form against the
// token-based one: the same bytes for every valid input, an error for
// every invalid one.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, ` { "b" : [ 1 , 2.50e3 , true , null ] } `, `{"u":"\u2028<&>\"\\/\b"}`,
		`"caf` + "\xe9" + `"`, `{"k":"` + "h\xc3\xa9llo" + `"}`, `[`, `{"a":}`, `1 2`, `{}`, "\"\x01\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, werr := canonicalJSONTokens(json.RawMessage(s))
		got, gerr := canonicalJSON(json.RawMessage(s))
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: error %v, reference error %v", s, gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("%q: canonical %q, reference %q", s, got, want)
		}
	})
}

func BenchmarkCanonicalJSON(b *testing.B) {
	raw := json.RawMessage(`{"specversion":"1.0","id":"am-3f2a","source":"alertmanager","type":"NodeKernelDeadlock","subject":"node/worker-1","time":"2026-11-22T03:12:04.512Z","status":"firing","data":{"labels":{"alertname":"NodeKernelDeadlock","node":"worker-1","severity":"critical"},"annotations":{"summary":"Kernel deadlock on worker-1"},"fingerprint":"a3c1f0d2b4e59687"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := canonicalJSON(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// Details and DetailsOf skip validating what json.Marshal made; their
// output must still be the canonical form, which Append would otherwise
// change (and hash differently from what callers built).
func TestDetailsAreCanonical(t *testing.T) {
	type inner struct {
		Text string            `json:"text"`
		Raw  json.RawMessage   `json:"raw"`
		Tags map[string]string `json:"tags"`
	}
	v := inner{Text: "a <b> & \u00e9 \"q\" \\ \t", Raw: json.RawMessage(`{ "x" : [1, 2.50, "\u00e9"] }`), Tags: map[string]string{"z": "1", "a": "</script>"}}
	for name, got := range map[string]json.RawMessage{
		"DetailsOf": DetailsOf(v),
		"Details":   Details("reason", "dry-run: <x>", "inner", v, "raw", json.RawMessage(` {"k": "\u00e9"} `), "n", 1e21),
	} {
		want, err := canonicalJSON(got)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s = %s, canonical form %s (%v)", name, got, want, err)
		}
	}
}

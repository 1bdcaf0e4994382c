package audit

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzVerifyChain builds a chain from fuzzed field values the way Append
// does, and checks that (1) it verifies, (2) it still verifies after the
// JSON round trip every client makes through the API, and (3) changing
// any record's content is caught at exactly that record.
func FuzzVerifyChain(f *testing.F) {
	f.Add("node/worker-1", "node.cordon", `{"reason":"budget"}`, "healer/engine", int64(1_700_000_000_123_456_789))
	f.Add("etcd/member-2", "", `{"a":[1,2.5e10,{"b":null}],"u":"\u2028<&>"}`, "", int64(0))
	f.Add("", "x", `not json`, "alice\x00", int64(-1))
	f.Fuzz(func(t *testing.T, target, remediator, details, actor string, nanos int64) {
		raw := json.RawMessage(details)
		if !json.Valid(raw) || len(raw) == 0 || raw[0] != '{' {
			raw = Details("value", details)
		}
		ts := time.Unix(0, nanos).UTC()
		if ts.Year() < 1 || ts.Year() > 9999 {
			ts = time.Unix(0, 0).UTC()
		}
		chain := make([]Record, 3)
		prev := GenesisHash
		for i := range chain {
			r := Record{Seq: uint64(i + 1), ID: "id", Time: ts, Kind: Kinds()[i%len(Kinds())],
				Target: target, Remediator: remediator, Actor: actor, Details: raw, PrevHash: prev}
			r.Hash = r.ComputeHash()
			prev = r.Hash
			chain[i] = r
		}
		if res := VerifyRecords(chain); !res.OK {
			t.Fatalf("a chain built like Append builds it does not verify: %+v", res)
		}
		b, err := json.Marshal(chain)
		if err != nil {
			t.Fatal(err)
		}
		var back []Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("records do not decode: %v\n%s", err, b)
		}
		if res := VerifyRecords(back); !res.OK {
			t.Fatalf("the chain no longer verifies after a JSON round trip: %+v\n%s", res, b)
		}
		back[1].Target += "!"
		if res := VerifyRecords(back); res.OK || res.FirstBad != 2 {
			t.Fatalf("an edited record 2 was not caught there: %+v", res)
		}
	})
}

package audit_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/selfheal/healer/audit"
)

// chain builds an intact chain of n records without a server.
func chain(n int) []audit.Record {
	recs := make([]audit.Record, 0, n)
	prev := audit.GenesisHash
	for i := range n {
		r := audit.Record{
			Seq: uint64(i + 1), ID: fmt.Sprintf("id-%d", i+1), Time: fixedTime(),
			Kind: audit.KindEvent, Target: "node/a", Details: audit.Details("i", i), PrevHash: prev,
		}
		r.Hash = r.ComputeHash()
		prev = r.Hash
		recs = append(recs, r)
	}
	return recs
}

func TestAuditVerifyRecords(t *testing.T) {
	tests := []struct {
		name     string
		recs     func() []audit.Record
		records  uint64
		firstBad uint64
		reason   string
	}{
		{"empty", func() []audit.Record { return nil }, 0, 0, ""},
		{"intact", func() []audit.Record { return chain(5) }, 5, 0, ""},
		{"edited content", func() []audit.Record {
			c := chain(5)
			c[2].Target = "node/b"
			return c
		}, 5, 3, "was altered"},
		{"forged hash", func() []audit.Record {
			c := chain(5)
			c[3].Hash = strings.Repeat("0", 64)
			return c
		}, 5, 4, "was altered"},
		{"edited and re-hashed", func() []audit.Record {
			c := chain(5)
			c[1].Actor = "mallory"
			c[1].Hash = c[1].ComputeHash()
			return c
		}, 5, 3, "does not match hash"},
		{"missing record", func() []audit.Record {
			c := chain(5)
			return append(c[:2], c[3:]...)
		}, 4, 3, "expected seq 3 but found record \"id-4\" with seq 4"},
		{"swapped records", func() []audit.Record {
			c := chain(5)
			c[3], c[4] = c[4], c[3]
			return c
		}, 5, 4, "out of order"},
		{"renumbered after a deletion", func() []audit.Record {
			c := chain(5)
			c = append(c[:2], c[3:]...)
			for i := 2; i < len(c); i++ {
				c[i].Seq = uint64(i + 1)
				c[i].Hash = c[i].ComputeHash()
			}
			return c
		}, 4, 3, "does not match hash"},
		{"does not start at seq 1", func() []audit.Record { return chain(5)[2:] }, 3, 1, "records 1..2 are missing: the trail starts with"},
		{"first record not chained to genesis", func() []audit.Record {
			c := chain(2)
			c[0].PrevHash = strings.Repeat("1", 64)
			c[0].Hash = c[0].ComputeHash()
			c[1].PrevHash = c[0].Hash
			c[1].Hash = c[1].ComputeHash()
			return c
		}, 2, 1, "genesis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := audit.VerifyRecords(tt.recs())
			wantOK := tt.firstBad == 0
			if res.OK != wantOK || res.Records != tt.records || res.FirstBad != tt.firstBad || !strings.Contains(res.Reason, tt.reason) {
				t.Fatalf("VerifyRecords = %+v, want ok=%v records=%d firstBad=%d reason containing %q",
					res, wantOK, tt.records, tt.firstBad, tt.reason)
			}
			if wantOK && res.Reason != "" {
				t.Fatalf("intact chain has a reason: %q", res.Reason)
			}
		})
	}
}

func TestAuditVerifierPageByPage(t *testing.T) {
	c := chain(7)
	c[5].Details = audit.Details("i", 50)
	var v audit.Verifier
	for _, page := range [][]audit.Record{c[:3], c[3:6], c[6:]} {
		for _, r := range page {
			v.Add(r)
		}
	}
	if got, want := v.Result(), audit.VerifyRecords(c); got != want || got.FirstBad != 6 {
		t.Fatalf("Verifier = %+v, VerifyRecords = %+v, want both first bad 6", got, want)
	}
	if v.Head() != c[6].Hash {
		t.Fatalf("Head = %q, want the last record's hash", v.Head())
	}
}

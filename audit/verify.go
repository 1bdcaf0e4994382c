package audit

import (
	"encoding/json"
	"fmt"
)

// VerifyResult is the outcome of checking a chain of records.
type VerifyResult struct {
	// Records is the number of records examined: all of them, including
	// those after the first bad one.
	Records uint64 `json:"records"`
	// OK is true when every record passed.
	OK bool `json:"ok"`
	// FirstBad is the position in the chain (the Seq the record there
	// should have) of the first record that failed, or 0.
	FirstBad uint64 `json:"first_bad"`
	// Reason says why the first bad record failed.
	Reason string `json:"reason"`
}

// VerifyRecords checks a whole chain given in order: the record at
// position i (1-based) must have Seq i, the first record's PrevHash must be
// GenesisHash, every other PrevHash must be the Hash of the record before
// it, and every Hash must match the record's content. It reports the first
// record that fails. An empty slice is an intact, empty chain.
func VerifyRecords(recs []Record) VerifyResult {
	var v Verifier
	for _, r := range recs {
		v.Add(r)
	}
	return v.Result()
}

// Verifier checks a chain one record at a time, with the checks of
// VerifyRecords, so that a long trail can be verified page by page without
// holding it all. The zero value is ready to check a chain from its first
// record.
type Verifier struct {
	records  uint64
	prevHash string
	head     string
	firstBad uint64
	reason   string
}

// Add checks the next record of the chain.
func (v *Verifier) Add(r Record) { v.add(r, 0) }

// Head returns the Hash of the last record added, or "" when none was.
func (v *Verifier) Head() string { return v.head }

// Result reports the outcome for the records added so far.
func (v *Verifier) Result() VerifyResult {
	return VerifyResult{Records: v.records, OK: v.firstBad == 0, FirstBad: v.firstBad, Reason: v.reason}
}

// add checks r; streamSeq, when not 0, is the stream sequence r was read at.
func (v *Verifier) add(r Record, streamSeq uint64) {
	v.records++
	v.head = r.Hash
	if v.firstBad != 0 {
		return
	}
	if reason := v.check(&r, streamSeq); reason != "" {
		v.firstBad, v.reason = v.records, reason
		return
	}
	v.prevHash = r.Hash
}

func (v *Verifier) addUndecodable(streamSeq uint64, err error) {
	v.records++
	v.head = ""
	if v.firstBad != 0 {
		return
	}
	v.firstBad = v.records
	v.reason = fmt.Sprintf("the message at stream sequence %d is not a valid audit record: %v", streamSeq, err)
}

func (v *Verifier) check(r *Record, streamSeq uint64) string {
	pos := v.records
	if r.Kind == kindUnreadable {
		var d struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(r.Details, &d)
		return fmt.Sprintf("the message at stream sequence %d is not a valid audit record: %s", r.Seq, d.Error)
	}
	if pos == 1 && r.Seq > 1 {
		missing := "record 1 is"
		if r.Seq > 2 {
			missing = fmt.Sprintf("records 1..%d are", r.Seq-1)
		}
		return fmt.Sprintf("%s missing: the trail starts with record %q at seq %d", missing, r.ID, r.Seq)
	}
	if r.Seq != pos {
		return fmt.Sprintf("expected seq %d but found record %q with seq %d: records are missing, duplicated or out of order", pos, r.ID, r.Seq)
	}
	if streamSeq != 0 && streamSeq != r.Seq {
		return fmt.Sprintf("record %q with seq %d is stored at stream sequence %d", r.ID, r.Seq, streamSeq)
	}
	if computed := r.ComputeHash(); r.Hash != computed {
		return fmt.Sprintf("record %q: stored hash %s does not match its content (hash %s): the record was altered", r.ID, short(r.Hash), short(computed))
	}
	want := v.prevHash
	if pos == 1 {
		want = GenesisHash
	}
	if r.PrevHash != want {
		if pos == 1 {
			return fmt.Sprintf("record %q: prev_hash %s is not the genesis hash: records before it are missing", r.ID, short(r.PrevHash))
		}
		return fmt.Sprintf("record %q: prev_hash %s does not match hash %s of record %d: a record before it was altered or replaced", r.ID, short(r.PrevHash), short(want), pos-1)
	}
	return ""
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	if h == "" {
		return `""`
	}
	return h
}

// Package audit keeps healer's hash-chained audit trail.
//
// Every step the engine takes (an event received, a policy decision, a
// suppression, an approval, an action started, progressing, finished or
// failed, a verification, a policy load) is appended as a Record to the
// JetStream stream HEALER_AUDIT on the subject healer.audit. The stream
// denies message deletes and purges, and the server refuses to lift either
// flag once set, so records can only be appended.
//
// # Chain
//
// Each record carries Seq, its 1-based position in the chain, which equals
// its JetStream stream sequence (the stream holds nothing but audit
// records). PrevHash is the Hash of the record before it; the first
// record's PrevHash is GenesisHash, 64 zeros. Hash is the lower-case hex
// SHA-256 of the record's canonical form.
//
// Several healer replicas may append to the same stream. Trail.Append
// publishes with JetStream's expected-last-sequence check, so a record is
// stored only if it extends the tail it was chained to; a replica that lost
// the race re-reads the tail and tries again. The result is one unbroken
// chain whatever the number of writers. Trail.AppendAll appends several
// records in order in one group commit, as the engine does for the
// records of an event that settles without acting.
//
// # Canonical form
//
// The canonical form of a record is a single-line JSON object, without
// insignificant whitespace, whose members are exactly, in this order:
//
//	seq, id, time, kind, event_id, target, remediator, actor,
//	policy_revision, trace_id, action_id, details, prev_hash
//
// Every member is always present (no member is omitted when empty):
//
//   - seq is a base-10 integer without sign, leading zeros or exponent.
//   - time is the UTC time in Go's time.RFC3339Nano layout: trailing
//     zeros of the fraction and a bare "." are dropped and the zone is "Z",
//     for example "2025-03-01T10:04:05.12Z".
//   - The other scalar members are JSON strings.
//   - details is a JSON object. Absent, empty or null details are "{}".
//     Members keep their stored order (keys are not sorted) and numbers
//     keep their literal text.
//
// Strings, including those inside details, are escaped as Go's
// encoding/json does with HTML escaping turned off: `"` and `\` are
// escaped with a backslash; \b, \f, \n, \r and \t are written as such;
// other control characters below U+0020 as \u00xx with lower-case hex
// digits; U+2028 and U+2029 as \u2028 and \u2029; every other character,
// including non-ASCII and <, > and &, is written as itself in UTF-8. Each
// run of invalid UTF-8 in a string is replaced by U+FFFD first (Append
// stores such strings already replaced).
//
// Hash is hex(SHA-256(canonical form)). The stored message and the API's
// JSON form of a record are the canonical form with one more member,
// "hash", appended last. So an independent verifier can check a stored or
// served record by removing the trailing `,"hash":"…"` member and hashing
// the remaining bytes, provided the record was not re-encoded on the way.
// Decoding a record into Record and encoding it again with HTML escaping
// off (json.Encoder.SetEscapeHTML(false), as the API does) yields the same
// bytes. Plain json.Marshal additionally escapes <, > and &, and indenting
// adds whitespace; neither matters to ComputeHash, which re-canonicalizes
// details, so such a re-encoded record still verifies after decoding.
//
// The chain proves that no record was edited, removed, inserted or
// reordered, but it cannot by itself detect the wholesale replacement of
// the trail (deleting the stream and writing a new, internally consistent
// chain). Keep the head hash that `healer audit verify` prints somewhere
// else and compare it later to detect that.
//
// # Reading
//
// Trail.Query and Trail.Verify read the stream with a short-lived ordered
// consumer and filter in the process, so they cost time proportional to the
// number of records scanned. VerifyRecords checks a slice of records
// without any server; the `healer audit verify` command uses the same
// checks (through Verifier) on records fetched page by page from the HTTP
// API that NewHandler serves at GET /api/v1/audit.
package audit

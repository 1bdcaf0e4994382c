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
// A record written by serve's committer carries one more member after
// "hash": "tag" (see Tags), so an independent verifier removes the
// trailing `,"tag":"…"` member too, when present, before the hash member.
//
// The chain proves that no record was edited, removed, inserted or
// reordered, but it cannot by itself detect the wholesale replacement of
// the trail (deleting the stream and writing a new, internally consistent
// chain): plain SHA-256 has no key, so whoever can write the stream can
// write a consistent chain. Signed checkpoints and tags close that gap.
//
// # Tags
//
// When the Trail has a signing key (WithSigningKey, as serve always has),
// the committer adds to each record it writes Tag, the first 128 bits of
// HMAC-SHA256 over the record's Hash with a key derived (HKDF-SHA256,
// info "healer audit record tag v1") from the signing key's seed. The tag
// is outside the canonical form and so outside Hash: the hash contract is
// unchanged and stays checkable by anyone; a tag cannot be checked without
// the secret. Removing or altering a tag hides nothing: it makes the
// record foreign.
//
// A record without a valid tag at a seq from which tags are required
// (Checkpoint.TagsFrom) is foreign: something other than a healer
// committer holding the key appended it (the JetStream stream only checks
// that a writer may publish on healer.audit). The committer looks at the
// tail whenever it re-reads it (its expected-last-sequence publish was
// refused because another writer extended the trail), and the
// checkpointer looks at every record of the range it is about to sign.
// On a foreign record either raises the alarm once per seq: a log line at
// ERROR, the count behind the healer_audit_foreign_records metric
// (ForeignSeen), and an audit.foreign record naming the seq. It does not
// stop appending: the forged record is named, not hidden.
//
// # Checkpoints
//
// Serve's Checkpointer signs, with an Ed25519 key kept outside NATS (a
// file; in Kubernetes a Secret), a Checkpoint of the chain at least every
// CheckpointerConfig.Every records (1,000) or Interval (60 s) while records
// are appended: the stream's first seq and first record's hash, the last
// seq and head hash, when, the hash of the checkpoint before (a chain of
// checkpoints), and the foreign records found so far. Before signing it
// checks that the range since its previous checkpoint extends that
// checkpoint's head, that its hashes hold, and the range's tags. Each
// checkpoint is one JSON file in serve's <data-dir>/checkpoints (written
// to a temporary file, synced, renamed), copied to the configured sink
// directory, logged in one INFO line, and served at GET
// /api/v1/audit/checkpoints.
//
// At start serve checks the stream against the newest checkpoint it finds
// (in its data dir and the sink): a stream that is empty, ends before the
// checkpoint's last seq, starts after its first seq (the stream keeps
// records forever, so nothing explains that), has another first record,
// or another record at the checkpoint's last seq, is refused
// (ErrTrailDisagrees) unless --accept-new-audit-trail is given, which
// appends an audit.accepted record saying what the checkpoint said, what
// the stream holds and who accepted, and chains the next checkpoint on the
// old one with Replaces set.
//
// `healer audit verify` checks the chain and CheckpointCheck checks it
// against the newest checkpoint (from --checkpoints DIR, or the server's),
// whose signature it checks with --public-key (or the server's key): a
// wiped, truncated, recreated or rewritten trail, and foreign records a
// checkpoint names, fail with the missing or differing records named.
//
// With several serve replicas, every replica must use the same signing key
// (the chart mounts one Secret into all): any replica's tags are then
// valid for the others. Each replica signs its own chain of checkpoints,
// named by its instance (its host name) and indexed from 1, each covering
// the whole trail; at its first checkpoint a replica chains on the newest
// checkpoint it found. Give the replicas a shared sink directory to check
// each start against the newest checkpoint of any replica.
//
// # Threat model
//
// Detected without the key (by anyone with the public key and a copy of
// the checkpoints): editing, removing, inserting or reordering records; a
// deleted, recreated, wiped, truncated or head-trimmed stream (a shrunk
// max_age) once a checkpoint covered its records; records the committer
// did not write, once a checkpoint covered them.
//
// Needs the key (serve, or a verifier holding the secret): telling a
// foreign record from healer's own before a checkpoint covers it.
//
// Not protected against: anyone holding the signing key (they can tag and
// sign anything), or write access to serve's file system (they can replace
// the key, or remove the checkpoints and so the anchor); records appended
// after the newest checkpoint and removed before the next one (at most
// Every records or Interval); a verifier that trusts the server's key and
// checkpoints (the default of `healer audit verify`) detects tampering
// through NATS only, not by whoever controls the server: keep the public
// key and copies of the checkpoints elsewhere and pass --public-key and
// --checkpoints. Before the first checkpoint of a trail (a trail written
// by an older healer, or a replica that lost its data dir with no sink)
// its existing records are anchored as they are, unchecked for tags.
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

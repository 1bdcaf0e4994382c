package audit

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind names the step of the remediation pipeline a record describes.
type Kind string

// The kinds of audit record.
const (
	// KindEvent records an event received from a detector.
	KindEvent Kind = "event"
	// KindDecision records the policy decision taken for an event.
	KindDecision Kind = "decision"
	// KindSuppressed records a remediation that a guard suppressed; its
	// details carry a "reason".
	KindSuppressed Kind = "suppressed"
	// KindApproval records a human approval or rejection.
	KindApproval Kind = "approval"
	// KindActionStarted records that a remediator started acting.
	KindActionStarted Kind = "action.started"
	// KindActionProgress records progress of a long action as it happens
	// (pods evicted and remaining, replacement steps).
	KindActionProgress Kind = "action.progress"
	// KindActionFinished records that a remediator finished successfully.
	KindActionFinished Kind = "action.finished"
	// KindActionFailed records that a remediator failed.
	KindActionFailed Kind = "action.failed"
	// KindVerified records the check that a remediation had its effect.
	KindVerified Kind = "verified"
	// KindPolicyLoaded records that a policy bundle was loaded.
	KindPolicyLoaded Kind = "policy.loaded"
	// KindPolicyRefused records that a policy bundle was refused.
	KindPolicyRefused Kind = "policy.refused"
	// KindPauseSet records a pause, kill switch or maintenance window set
	// by a human; KindPauseCleared its removal.
	KindPauseSet     Kind = "pause.set"
	KindPauseCleared Kind = "pause.cleared"
	// KindPolicyShadow records that candidate (shadow) policies decided an
	// event otherwise than the live ones; nothing is acted on because of it.
	KindPolicyShadow Kind = "policy.shadow"
	// KindAuditForeign records that the audit stream holds a record that
	// healer's committer did not write (it has no valid tag): something
	// else with write access to the stream appended it. Its details name
	// the record's seq and why it is foreign.
	KindAuditForeign Kind = "audit.foreign"
	// KindAuditAccepted records that serve was started with
	// --accept-new-audit-trail on a trail that disagrees with its newest
	// signed checkpoint; its details say what the checkpoint said, what
	// the stream holds and who accepted it.
	KindAuditAccepted Kind = "audit.accepted"
	// KindProblemClosed records that an open problem was closed without
	// anything done for it: it cleared while something (the budget, a
	// rate limit, a pause, a breaker) still held it back. Its details say
	// what held it and since when.
	KindProblemClosed Kind = "problem.closed"
)

// Kinds returns every valid kind, in pipeline order.
func Kinds() []Kind {
	return []Kind{
		KindEvent, KindDecision, KindSuppressed, KindApproval,
		KindActionStarted, KindActionProgress, KindActionFinished, KindActionFailed, KindVerified,
		KindPolicyLoaded, KindPolicyRefused, KindPauseSet, KindPauseCleared, KindPolicyShadow,
		KindAuditForeign, KindAuditAccepted, KindProblemClosed,
	}
}

// Valid reports whether k is one of the kinds listed in Kinds.
func (k Kind) Valid() bool {
	for _, v := range Kinds() {
		if k == v {
			return true
		}
	}
	return false
}

// GenesisHash is the PrevHash of the first record of a trail.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ErrInvalidRecord is returned by Append for a record that cannot be stored.
var ErrInvalidRecord = errors.New("invalid audit record")

// Record is one entry of the audit trail. Its JSON form is the canonical
// form described in the package documentation followed by "hash".
type Record struct {
	// Seq is the record's 1-based position in the chain and its stream sequence.
	Seq uint64 `json:"seq"`
	// ID uniquely identifies the record. IDs made by Append are 32 hex
	// digits that sort by creation time.
	ID string `json:"id"`
	// Time is when the step happened, in UTC.
	Time time.Time `json:"time"`
	// Kind names the step.
	Kind Kind `json:"kind"`
	// EventID is the id of the event the step belongs to, if any.
	EventID string `json:"event_id"`
	// Target names what was acted on, for example "node/worker-1".
	Target string `json:"target"`
	// Remediator names the remediation, for example "node.cordon".
	Remediator string `json:"remediator"`
	// Actor is who took the step: "healer/engine", "alertmanager", a
	// Slack user and so on.
	Actor string `json:"actor"`
	// PolicyRevision identifies the policy bundle that decided.
	PolicyRevision string `json:"policy_revision"`
	// TraceID links the record to a distributed trace.
	TraceID string `json:"trace_id"`
	// ActionID identifies the remediation action the step belongs to.
	ActionID string `json:"action_id"`
	// Details is a free-form JSON object.
	Details json.RawMessage `json:"details"`
	// PrevHash is the Hash of the previous record, or GenesisHash.
	PrevHash string `json:"prev_hash"`
	// Hash is the hex SHA-256 of the record's canonical form.
	Hash string `json:"hash"`
	// Tag is the committer's authentication tag: 32 hex digits of
	// HMAC-SHA256 over Hash, with a key derived from serve's signing key.
	// It is outside the canonical form (and so outside Hash), written
	// after "hash" when set. Records written without a signing key have
	// none.
	Tag string `json:"tag,omitempty"`
}

// ComputeHash returns the hex SHA-256 of the record's canonical form, which
// leaves out Hash itself. It does not modify the record.
func (r *Record) ComputeHash() string {
	sum := sha256.Sum256(r.appendCanonical(nil, false))
	return hex.EncodeToString(sum[:])
}

// seal sets Hash, and Tag when key is not nil, and returns the stored
// form of the record (what MarshalJSON returns), encoding the canonical
// form once for both. The record must have been normalized: its details
// are then canonical already and are not encoded again.
func (r *Record) seal(key *SigningKey) []byte {
	b := r.appendForm(make([]byte, 0, 512+len(r.Details)), false, r.Details)
	sum := sha256.Sum256(b)
	r.Hash = hex.EncodeToString(sum[:])
	r.Tag = ""
	if key != nil {
		r.Tag = key.tag(r.Hash)
	}
	return r.appendTail(b[:len(b)-1]) // the closing brace goes after the hash
}

// appendTail appends the hash member, the tag member when there is a
// tag, and the closing brace.
func (r *Record) appendTail(dst []byte) []byte {
	dst = append(dst, `,"hash":`...)
	dst = appendString(dst, r.Hash)
	if r.Tag != "" {
		dst = append(dst, `,"tag":`...)
		dst = appendString(dst, r.Tag)
	}
	return append(dst, '}')
}

// MarshalJSON encodes the record in canonical form followed by "hash".
func (r Record) MarshalJSON() ([]byte, error) {
	if _, err := detailsJSON(r.Details); err != nil {
		return nil, fmt.Errorf("audit record %d (%s): details: %w", r.Seq, r.ID, err)
	}
	return r.appendCanonical(nil, true), nil
}

// appendCanonical appends the canonical form of r to dst, with the hash
// member (and the tag, if any) last when withHash is set. Details that are not valid JSON are
// written trimmed but otherwise as they are, so that such a record still
// gets a (never matching) hash instead of an error.
func (r *Record) appendCanonical(dst []byte, withHash bool) []byte {
	details, err := detailsJSON(r.Details)
	if err != nil {
		details = bytes.TrimSpace(r.Details)
	}
	return r.appendForm(dst, withHash, details)
}

// appendForm is appendCanonical with the details given in the form to
// write.
func (r *Record) appendForm(dst []byte, withHash bool, details []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	fields := []struct {
		name, value string
	}{
		{"id", r.ID},
		{"time", r.Time.UTC().Format(time.RFC3339Nano)},
		{"kind", string(r.Kind)},
		{"event_id", r.EventID},
		{"target", r.Target},
		{"remediator", r.Remediator},
		{"actor", r.Actor},
		{"policy_revision", r.PolicyRevision},
		{"trace_id", r.TraceID},
		{"action_id", r.ActionID},
	}
	for _, f := range fields {
		dst = append(dst, ',', '"')
		dst = append(dst, f.name...)
		dst = append(dst, '"', ':')
		dst = appendString(dst, f.value)
	}
	dst = append(dst, `,"details":`...)
	dst = append(dst, details...)
	dst = append(dst, `,"prev_hash":`...)
	dst = appendString(dst, r.PrevHash)
	if withHash {
		return r.appendTail(dst)
	}
	return append(dst, '}')
}

// appendString appends s as a JSON string escaped as encoding/json does
// without HTML escaping, after replacing each run of invalid UTF-8 by
// U+FFFD (so that decoding and encoding again gives the same bytes).
func appendString(dst []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\'
	}
	if plain {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// Encoding a string cannot fail.
	_ = enc.Encode(s)
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// detailsJSON returns the canonical form of details: "{}" when they are
// empty or null, else canonicalJSON.
func detailsJSON(raw json.RawMessage) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	return canonicalJSON(trimmed)
}

// canonicalJSON re-encodes the JSON value raw without insignificant
// whitespace, with strings escaped by appendString, object members in their
// original order and numbers as their literal text.
//
// It runs for every record appended, so it is one pass over the bytes
// after json.Valid: structure and literals are copied, whitespace dropped,
// and only strings that are not already in appendString's form are
// decoded and encoded again.
func canonicalJSON(raw json.RawMessage) (json.RawMessage, error) {
	in := bytes.TrimSpace(raw)
	if len(in) == 0 {
		return nil, errors.New("unexpected end of JSON input")
	}
	if !json.Valid(in) {
		// Let the decoder say what is wrong.
		var v any
		if err := json.Unmarshal(in, &v); err != nil {
			return nil, err
		}
		return nil, errors.New("invalid JSON")
	}
	return canonicalValid(in)
}

// canonicalValid is canonicalJSON for input known to be valid JSON without
// surrounding whitespace, such as what json.Marshal returns: it skips the
// validation, which costs as much as the rest.
func canonicalValid(in []byte) (json.RawMessage, error) {
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); {
		switch c := in[i]; c {
		case ' ', '\t', '\n', '\r':
			i++
		case '"':
			end := stringEnd(in, i)
			seg := in[i : end+1]
			if plainString(seg) {
				out = append(out, seg...)
			} else {
				var str string
				if err := json.Unmarshal(seg, &str); err != nil {
					return nil, err
				}
				out = appendString(out, str)
			}
			i = end + 1
		default:
			out = append(out, c)
			i++
		}
	}
	return out, nil
}

// stringEnd returns the index of the quote closing the string that opens
// at in[start], in valid JSON.
func stringEnd(in []byte, start int) int {
	for i := start + 1; i < len(in); i++ {
		switch in[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(in) - 1 // unreachable after json.Valid
}

// plainString reports whether the quoted JSON string seg is already what
// appendString writes for its value: printable ASCII without escapes.
func plainString(seg []byte) bool {
	for _, c := range seg[1 : len(seg)-1] {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// marshaledDetails is detailsJSON for what json.Marshal returned, which is
// valid JSON and needs no validation.
func marshaledDetails(b []byte) (json.RawMessage, error) {
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	return canonicalValid(b)
}

// canonicalDetails returns details in canonical form and checks that they
// are a JSON object.
func canonicalDetails(raw json.RawMessage) (json.RawMessage, error) {
	c, err := detailsJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("details are not valid JSON: %w", err)
	}
	if c[0] != '{' {
		return nil, fmt.Errorf("details must be a JSON object, not %.40s", c)
	}
	return c, nil
}

// Details builds a details object from alternating keys and values, in the
// given order, for example Details("reason", "rate limit", "limit",
// "node.cordon:node/x"). Keys that are not strings are formatted with
// fmt.Sprint; a value without a key gets the key "!BADKEY". Errors and
// time.Duration values are written as their strings, json.RawMessage values
// as they are, and other values as encoding/json encodes them (or as their
// fmt.Sprint form if that fails).
func Details(kv ...any) json.RawMessage {
	out := []byte{'{'}
	for i := 0; i < len(kv); i += 2 {
		var key string
		var value any
		if i+1 < len(kv) {
			key, value = fmt.Sprint(kv[i]), kv[i+1]
			if s, ok := kv[i].(string); ok {
				key = s
			}
		} else {
			key, value = "!BADKEY", kv[i]
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = appendString(out, key)
		out = append(out, ':')
		out = append(out, detailValue(value)...)
	}
	out = append(out, '}')
	c, err := canonicalValid(out) // every piece is valid JSON
	if err != nil {
		// Every piece was checked to be valid JSON; this is unreachable
		// but must not produce an invalid record.
		return DetailsOf(map[string]string{"details_error": err.Error()})
	}
	return c
}

func detailValue(v any) []byte {
	switch x := v.(type) {
	case error:
		if x == nil {
			return []byte("null")
		}
		return appendString(nil, x.Error())
	case time.Duration:
		return appendString(nil, x.String())
	case json.RawMessage:
		if c, err := canonicalJSON(x); err == nil {
			return c
		}
		return appendString(nil, string(x))
	}
	b, err := json.Marshal(v)
	if err != nil {
		return appendString(nil, fmt.Sprint(v))
	}
	c, err := canonicalValid(b)
	if err != nil {
		return appendString(nil, fmt.Sprint(v))
	}
	return c
}

// DetailsOf encodes v (a struct or a map) as a details object. A value that
// does not encode to a JSON object is wrapped as {"value": v}; a value that
// cannot be encoded at all gives {"details_error": "<why>"}.
func DetailsOf(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return Details("details_error", err.Error())
	}
	c, err := marshaledDetails(b)
	if err != nil {
		return Details("details_error", err.Error())
	}
	if c[0] != '{' {
		return Details("value", c)
	}
	return c
}

// newID returns a 32-hex-digit record id: 48 bits of Unix milliseconds
// followed by 80 random bits, so ids sort by creation time.
func newID(now time.Time) string {
	var b [16]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(b[:6], ms[2:])
	// crypto/rand.Read never returns an error.
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// normalize validates r and puts it in the form Append stores: canonical
// details, valid UTF-8 strings, UTC time and an id.
func (r *Record) normalize(now time.Time) error {
	if !r.Kind.Valid() {
		return fmt.Errorf("%w: kind %q is not one of %v", ErrInvalidRecord, r.Kind, Kinds())
	}
	details, err := canonicalDetails(r.Details)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	r.Details = details
	if r.Time.IsZero() {
		r.Time = now
	}
	r.Time = r.Time.UTC()
	if r.ID == "" {
		r.ID = newID(now)
	}
	for _, s := range []*string{
		&r.ID, &r.EventID, &r.Target, &r.Remediator, &r.Actor,
		&r.PolicyRevision, &r.TraceID, &r.ActionID,
	} {
		*s = strings.ToValidUTF8(*s, "\uFFFD")
	}
	return nil
}

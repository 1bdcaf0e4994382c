package audit

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ErrBadCheckpoint is returned for a checkpoint that is malformed or whose
// signature does not verify with the public key.
var ErrBadCheckpoint = errors.New("bad audit checkpoint")

// Checkpoint is a signed statement of what the trail held when it was
// made. Serve signs one at least every CheckpointerConfig.Every records
// or Interval, and keeps it outside NATS.
type Checkpoint struct {
	// Version is the format's version, 1.
	Version int `json:"version"`
	// Instance names the serve replica that signed it; Index is the
	// checkpoint's position in that replica's chain, from 1.
	Instance string `json:"instance"`
	Index    uint64 `json:"index"`
	// Time is when it was signed.
	Time time.Time `json:"time"`
	// FirstSeq is the stream's first record and FirstHash its hash: they
	// name the trail (a recreated trail has another first record).
	FirstSeq  uint64 `json:"first_seq"`
	FirstHash string `json:"first_hash"`
	// LastSeq is the last record covered and HeadHash its hash.
	LastSeq  uint64 `json:"last_seq"`
	HeadHash string `json:"head_hash"`
	// TagsFrom is the first seq from which records carry the committer's
	// tag; records before it predate tagging and are covered by the chain
	// alone.
	TagsFrom uint64 `json:"tags_from"`
	// Foreign lists (the first MaxForeignListed of) the seqs up to LastSeq
	// of records the committer did not write, and ForeignCount counts them
	// all.
	Foreign      []uint64 `json:"foreign"`
	ForeignCount uint64   `json:"foreign_count"`
	// Prev is the Hash of the checkpoint this one follows (the signer's
	// previous one, or at a replica's first checkpoint the newest it
	// found), "" for the very first.
	Prev string `json:"prev"`
	// Replaces, when set, is the Hash of a checkpoint whose trail this one
	// does not extend: a new trail was accepted over it (audit.accepted).
	Replaces string `json:"replaces,omitempty"`
	// KeyID is the id of the public key that verifies it.
	KeyID string `json:"key_id"`
}

// MaxForeignListed bounds Checkpoint.Foreign.
const MaxForeignListed = 100

// SignedCheckpoint is a checkpoint as stored and served: the exact bytes
// signed, and the signature.
type SignedCheckpoint struct {
	// Body is the checkpoint's JSON, exactly as signed.
	Body json.RawMessage `json:"checkpoint"`
	// Signature is the base64 Ed25519 signature of signingInput(Body).
	Signature string `json:"signature"`

	// cp is Body decoded, by Open.
	cp Checkpoint
}

// signingContext is prefixed to the body before signing, so that a
// checkpoint's signature cannot be passed off as a signature of anything
// else.
const signingContext = "healer audit checkpoint v1\n"

func signingInput(body []byte) []byte {
	return append([]byte(signingContext), body...)
}

// Sign signs cp with k.
func (k *SigningKey) Sign(cp Checkpoint) (SignedCheckpoint, error) {
	cp.Version, cp.KeyID = 1, k.pub.ID()
	cp.Time = cp.Time.UTC()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cp); err != nil {
		return SignedCheckpoint{}, fmt.Errorf("encode checkpoint: %w", err)
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	sig := ed25519.Sign(k.priv, signingInput(body))
	return SignedCheckpoint{Body: body, Signature: base64.StdEncoding.EncodeToString(sig), cp: cp}, nil
}

// Open checks the signature with pub and returns the checkpoint.
func (s *SignedCheckpoint) Open(pub PublicKey) (Checkpoint, error) {
	if pub.IsZero() {
		return Checkpoint{}, fmt.Errorf("%w: no public key to check it with", ErrBadCheckpoint)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Checkpoint{}, fmt.Errorf("%w: the signature is not a base64 Ed25519 signature", ErrBadCheckpoint)
	}
	var cp Checkpoint
	if err := json.Unmarshal(s.Body, &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if !ed25519.Verify(pub.key, signingInput(s.Body), sig) {
		if cp.KeyID != pub.ID() {
			return Checkpoint{}, fmt.Errorf("%w: signed by key %q, not by key %s", ErrBadCheckpoint, cp.KeyID, pub.ID())
		}
		return Checkpoint{}, fmt.Errorf("%w: the signature does not verify with key %s: the checkpoint was altered or forged", ErrBadCheckpoint, pub.ID())
	}
	if cp.Version != 1 {
		return Checkpoint{}, fmt.Errorf("%w: version %d, want 1", ErrBadCheckpoint, cp.Version)
	}
	s.cp = cp
	return cp, nil
}

// Hash is the hex SHA-256 of the checkpoint's body: what the next
// checkpoint's Prev names.
func (s *SignedCheckpoint) Hash() string {
	sum := sha256.Sum256(s.Body)
	return hex.EncodeToString(sum[:])
}

// String describes the checkpoint for messages, as "#K of <instance>".
func (cp Checkpoint) String() string {
	return fmt.Sprintf("checkpoint #%d of %s (signed %s, records %d..%d, head %s)",
		cp.Index, cp.Instance, cp.Time.Format(time.RFC3339), cp.FirstSeq, cp.LastSeq, short(cp.HeadHash))
}

// OpenedCheckpoint is a checkpoint whose signature was checked, with
// where it came from.
type OpenedCheckpoint struct {
	Checkpoint
	Hash   string
	Source string
}

// Newest returns the newest of cps: the latest signed, then the one with
// the highest LastSeq; ok is false when cps is empty.
func Newest(cps []OpenedCheckpoint) (newest OpenedCheckpoint, ok bool) {
	if len(cps) == 0 {
		return OpenedCheckpoint{}, false
	}
	return slices.MaxFunc(cps, func(a, b OpenedCheckpoint) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.LastSeq, b.LastSeq)
	}), true
}

// OpenAll checks the signature of each of scs and returns them opened;
// the first bad one is an error naming its source.
func OpenAll(scs []SignedCheckpoint, sources []string, pub PublicKey) ([]OpenedCheckpoint, error) {
	out := make([]OpenedCheckpoint, 0, len(scs))
	for i := range scs {
		cp, err := scs[i].Open(pub)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", sources[i], err)
		}
		out = append(out, OpenedCheckpoint{Checkpoint: cp, Hash: scs[i].Hash(), Source: sources[i]})
	}
	return out, nil
}

// CheckpointDir is a directory of checkpoint files, one JSON file each
// named <instance>-<index>.json, written atomically.
type CheckpointDir string

// checkpointName is a checkpoint file's name.
var checkpointName = regexp.MustCompile(`^[A-Za-z0-9._-]+-[0-9]{10}\.json$`)

// instanceChars are what an instance name keeps; the rest become "_".
var instanceChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// SafeInstance turns name into a name usable as an instance (and in a
// file name).
func SafeInstance(name string) string {
	name = instanceChars.ReplaceAllString(name, "_")
	if name == "" || strings.Trim(name, ".") == "" {
		return "serve"
	}
	return name
}

// Write stores sc as a new file: written to a temporary file, synced,
// renamed into place and the directory synced, so that a crash leaves the
// whole checkpoint or none. It returns the file's path.
func (d CheckpointDir) Write(sc SignedCheckpoint) (string, error) {
	dir := string(d)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("checkpoint dir %s: %w", dir, err)
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return "", fmt.Errorf("encode checkpoint: %w", err)
	}
	name := filepath.Join(dir, fmt.Sprintf("%s-%010d.json", SafeInstance(sc.cp.Instance), sc.cp.Index))
	tmp, err := writeTemp(dir, ".checkpoint-", append(b, '\n'))
	if err != nil {
		return "", fmt.Errorf("write checkpoint %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("write checkpoint %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("write checkpoint %s: %w", name, err)
	}
	return name, nil
}

// Read returns every checkpoint file of the directory, in name order,
// with their paths; a missing directory holds none. A file that is not a
// checkpoint is an error.
func (d CheckpointDir) Read() ([]SignedCheckpoint, []string, error) {
	entries, err := os.ReadDir(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint dir %s: %w", string(d), err)
	}
	var (
		out   []SignedCheckpoint
		paths []string
	)
	for _, e := range entries {
		if e.IsDir() || !checkpointName.MatchString(e.Name()) {
			continue
		}
		path := filepath.Join(string(d), e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("read checkpoint %s: %w", path, err)
		}
		var sc SignedCheckpoint
		if err := json.Unmarshal(b, &sc); err != nil {
			return nil, nil, fmt.Errorf("checkpoint %s: %w: %w", path, ErrBadCheckpoint, err)
		}
		out, paths = append(out, sc), append(paths, path)
	}
	return out, paths, nil
}

// TrailState is what a trail holds, as far as a checkpoint is concerned.
type TrailState struct {
	// FirstSeq and LastSeq are the first and last records' seqs (0 when
	// the trail is empty); FirstHash is the first record's hash.
	FirstSeq, LastSeq uint64
	FirstHash         string
	// HashAtCheckpoint is the hash of the record at the checkpoint's
	// LastSeq, "" when the trail has no record there.
	HashAtCheckpoint string
}

// String describes the state for messages.
func (s TrailState) String() string {
	if s.LastSeq == 0 {
		return "the trail is empty"
	}
	return fmt.Sprintf("the trail holds records %d..%d", s.FirstSeq, s.LastSeq)
}

// Disagreement says how a trail in state st disagrees with cp, naming the
// missing or differing records, or "" when it agrees: it holds every
// record cp covers, and the record at cp's LastSeq is the one cp signed.
func (cp Checkpoint) Disagreement(st TrailState) string {
	switch {
	case cp.LastSeq == 0:
		return ""
	case st.LastSeq == 0:
		return fmt.Sprintf("records %d..%d are missing: the trail is empty, but %s covers them: the audit stream was deleted or wiped", cp.FirstSeq, cp.LastSeq, cp)
	case st.FirstSeq > cp.FirstSeq:
		return fmt.Sprintf("records %d..%d are missing: the trail starts at seq %d, but %s covers records from seq %d (the audit stream keeps records forever: they were removed)",
			cp.FirstSeq, st.FirstSeq-1, st.FirstSeq, cp, cp.FirstSeq)
	case st.FirstSeq == cp.FirstSeq && cp.FirstHash != "" && st.FirstHash != cp.FirstHash:
		return fmt.Sprintf("the trail was recreated: record %d has hash %s, but %s signed hash %s for it", st.FirstSeq, short(st.FirstHash), cp, short(cp.FirstHash))
	case st.LastSeq < cp.LastSeq:
		return fmt.Sprintf("records %d..%d are missing: the trail ends at seq %d, but %s covers up to seq %d: the trail was truncated or recreated",
			st.LastSeq+1, cp.LastSeq, st.LastSeq, cp, cp.LastSeq)
	case st.HashAtCheckpoint != cp.HeadHash:
		return fmt.Sprintf("record %d has hash %s, but %s signed hash %s for it: the trail was replaced", cp.LastSeq, short(st.HashAtCheckpoint), cp, short(cp.HeadHash))
	}
	return ""
}

// ForeignProblem names the foreign records cp lists, or "" for none.
func (cp Checkpoint) ForeignProblem() string {
	if cp.ForeignCount == 0 {
		return ""
	}
	list := make([]string, 0, len(cp.Foreign))
	for _, seq := range cp.Foreign {
		list = append(list, fmt.Sprint(seq))
	}
	more := ""
	if n := cp.ForeignCount - uint64(len(cp.Foreign)); n > 0 {
		more = fmt.Sprintf(" and %d more", n)
	}
	return fmt.Sprintf("%d record(s) were not written by healer's committer (no valid tag), as %s found: seq %s%s",
		cp.ForeignCount, cp, strings.Join(list, ", "), more)
}

// CheckpointCheck checks a whole trail, given record by record in order,
// as Verifier does and against the newest of a set of checkpoints, so
// that a deleted, truncated or recreated trail, or one holding records
// healer's committer did not write, fails although its chain is intact.
type CheckpointCheck struct {
	v      Verifier
	newest OpenedCheckpoint
	has    bool
	st     TrailState
}

// NewCheckpointCheck checks against the newest of cps (none: the chain
// alone is checked).
func NewCheckpointCheck(cps []OpenedCheckpoint) *CheckpointCheck {
	c := &CheckpointCheck{}
	c.newest, c.has = Newest(cps)
	return c
}

// Add checks the next record.
func (c *CheckpointCheck) Add(r Record) {
	c.v.Add(r)
	if c.st.LastSeq == 0 {
		c.st.FirstSeq, c.st.FirstHash = r.Seq, r.Hash
	}
	c.st.LastSeq = r.Seq
	if c.has && r.Seq == c.newest.LastSeq {
		c.st.HashAtCheckpoint = r.Hash
	}
}

// CheckpointResult is the outcome of a CheckpointCheck.
type CheckpointResult struct {
	VerifyResult
	// Head is the last record's hash.
	Head string `json:"head"`
	// Checkpoint is the newest checkpoint, when there was one.
	Checkpoint *OpenedCheckpoint `json:"checkpoint,omitempty"`
	// Problem says why the trail fails against the checkpoint (when the
	// chain itself is intact).
	Problem string `json:"problem,omitempty"`
}

// Result reports the outcome: OK only when the chain is intact, agrees
// with the newest checkpoint, and that checkpoint lists no foreign record.
func (c *CheckpointCheck) Result() CheckpointResult {
	res := CheckpointResult{VerifyResult: c.v.Result(), Head: c.v.Head()}
	if !c.has {
		return res
	}
	cp := c.newest
	res.Checkpoint = &cp
	if !res.OK {
		return res
	}
	if p := cp.Disagreement(c.st); p != "" {
		res.OK, res.Problem = false, p
		return res
	}
	if p := cp.ForeignProblem(); p != "" {
		res.OK, res.Problem = false, p
		if len(cp.Foreign) > 0 {
			res.FirstBad = cp.Foreign[0]
		}
	}
	return res
}

package logpipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RegistryEntry is a shipper's state for one file, as filebeat keeps it in
// its registry: for the log input the key is
// "filebeat::logs::native::<inode>-<device>" and the value has source,
// offset, timestamp, ttl and FileStateOS; for the filestream input the key
// is "filestream::<input id>::native::<inode>-<device>" and the value has
// cursor.offset, meta.source, updated and ttl.
type RegistryEntry struct {
	// Key is the registry key.
	Key string
	// Source is the path of the file, as the shipper sees it.
	Source string
	// Offset is the number of bytes of the file that the shipper has
	// shipped (and had acknowledged).
	Offset int64
	// Updated is when the shipper last wrote this entry; zero if unknown.
	Updated time.Time
	// TTL is the entry's time to live: -1 keeps it forever, 0 marks it for
	// removal (the file was removed or cleaned).
	TTL time.Duration
	// Device and Inode identify the file when HasInode is set; they come
	// from FileStateOS or from the key of a "native" file identity.
	Device, Inode uint64
	HasInode      bool
}

// Registry is a shipper's registry as read from disk: the newest
// checkpoint with the operations of log.json after it applied.
type Registry struct {
	// Dir is the registry directory.
	Dir string
	// Checkpoint is the name of the checkpoint file read ("1207.json"),
	// or "" when there is none.
	Checkpoint string
	// Active is the checkpoint that active.dat names, or "" without
	// active.dat. It may lag behind Checkpoint for a moment: filebeat
	// writes a new checkpoint before it updates active.dat.
	Active string
	// TxID is the id of the last operation applied.
	TxID uint64
	// Ops is the number of operations of log.json applied.
	Ops int
	// Entries are the entries by key.
	Entries map[string]RegistryEntry
	// LogErr is set when log.json holds an operation that cannot be
	// applied (corrupt, or out of sequence). Entries then hold the state
	// before it, which is also what filebeat restores on start.
	LogErr error
}

// Registry file names, as filebeat's memlog store writes them.
const (
	registryLog    = "log.json"
	registryMeta   = "meta.json"
	registryActive = "active.dat"
)

var (
	checkpointName = regexp.MustCompile(`^([0-9]+)\.json$`)
	nativeID       = regexp.MustCompile(`^([0-9]+)-([0-9]+)$`)
	// errRace is a read that overlapped a checkpoint of the shipper; the
	// read is repeated.
	errRace = errors.New("registry changed while it was read")
	// errTxIDGap is an operation whose id does not follow the previous one.
	errTxIDGap = errors.New("operation out of sequence")
)

// ReadRegistry reads the registry in dir. It reads the newest checkpoint
// (the highest <N>.json, which is what active.dat names and what filebeat
// itself loads on start) and applies the operations of log.json that
// follow it. An incomplete last operation of log.json (one the shipper is
// writing) is ignored; a corrupt one stops the log there and is reported
// in Registry.LogErr. A read that overlaps the shipper's checkpointing is
// repeated. A directory holding neither a checkpoint nor log.json is an
// error: it is not a registry, and reading it as an empty one would report
// every file as unshipped.
func ReadRegistry(dir string) (*Registry, error) {
	var err error
	for range 3 {
		var reg *Registry
		reg, err = readRegistryOnce(dir, false)
		if !errors.Is(err, errRace) {
			return reg, err
		}
	}
	return readRegistryOnce(dir, true)
}

func readRegistryOnce(dir string, last bool) (*Registry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read registry %s: %w", dir, err)
	}
	reg := &Registry{Dir: dir, Entries: map[string]RegistryEntry{}}
	var (
		hasLog bool
		ckptID uint64
	)
	for _, de := range des {
		name := de.Name()
		if name == registryLog {
			hasLog = true
			continue
		}
		m := checkpointName.FindStringSubmatch(name)
		if m == nil || !de.Type().IsRegular() {
			continue
		}
		id, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			continue
		}
		if reg.Checkpoint == "" || id > ckptID {
			reg.Checkpoint, ckptID = name, id
		}
	}
	if reg.Checkpoint == "" && !hasLog {
		return nil, fmt.Errorf("read registry %s: neither a checkpoint (<N>.json) nor %s: not a filebeat registry", dir, registryLog)
	}
	if err := checkMeta(filepath.Join(dir, registryMeta)); err != nil {
		return nil, fmt.Errorf("read registry %s: %w", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, registryActive)); err == nil {
		// filebeat writes the checkpoint's path as it sees it; healer may
		// see the directory elsewhere (a host path mounted in a pod).
		if p := strings.TrimSpace(string(b)); p != "" {
			reg.Active = filepath.Base(p)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read registry %s: %w", dir, err)
	}

	if reg.Checkpoint != "" {
		f, err := os.Open(filepath.Join(dir, reg.Checkpoint))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read registry %s: checkpoint %s vanished: %w", dir, reg.Checkpoint, errRace)
		}
		if err != nil {
			return nil, fmt.Errorf("read registry %s: %w", dir, err)
		}
		entries, err := ParseCheckpoint(f)
		_ = f.Close() // read-only: closing cannot lose data
		if err != nil {
			return nil, fmt.Errorf("read registry %s: checkpoint %s: %w", dir, reg.Checkpoint, err)
		}
		reg.Entries = entries
		reg.TxID = ckptID
	}

	f, err := os.Open(filepath.Join(dir, registryLog))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return reg, nil
	case err != nil:
		return nil, fmt.Errorf("read registry %s: %w", dir, err)
	}
	defer f.Close() //nolint:errcheck // read-only: closing cannot lose data
	txid, ops, err := ApplyLog(f, reg.TxID, reg.Entries)
	reg.TxID, reg.Ops = txid, ops
	if err != nil {
		if errors.Is(err, errTxIDGap) && !last {
			// The log starts after a newer checkpoint than the one read.
			return nil, fmt.Errorf("read registry %s: %w: %w", dir, errRace, err)
		}
		reg.LogErr = fmt.Errorf("registry %s: %s: %w", dir, registryLog, err)
	}
	return reg, nil
}

// checkMeta checks the store version in meta.json, if there is one.
func checkMeta(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var meta struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return fmt.Errorf("%s: %w", registryMeta, err)
	}
	if meta.Version != "1" {
		return fmt.Errorf("%s: store version %q, only \"1\" is understood", registryMeta, meta.Version)
	}
	return nil
}

// stateValue is the part of a registry value that healer reads. The
// parts that differ between inputs are decoded on their own, so that an
// input with another shape is skipped rather than failing the registry.
type stateValue struct {
	// The log input.
	Source      string          `json:"source"`
	Offset      *int64          `json:"offset"`
	Timestamp   json.RawMessage `json:"timestamp"`
	TTL         *int64          `json:"ttl"`
	FileStateOS json.RawMessage `json:"FileStateOS"`
	// The filestream input.
	Cursor  json.RawMessage `json:"cursor"`
	Meta    json.RawMessage `json:"meta"`
	Updated json.RawMessage `json:"updated"`
}

// parseEntry returns the registry entry of key with value raw, and false
// for an entry that is not about a file (another input's cursor).
func parseEntry(key string, raw json.RawMessage) (RegistryEntry, bool) {
	var v stateValue
	if err := json.Unmarshal(raw, &v); err != nil {
		return RegistryEntry{}, false
	}
	e := RegistryEntry{Key: key, Source: v.Source, TTL: -1}
	var meta struct {
		Source string `json:"source"`
	}
	if e.Source == "" && json.Unmarshal(v.Meta, &meta) == nil {
		e.Source = meta.Source
	}
	var cursor struct {
		Offset *int64 `json:"offset"`
	}
	switch {
	case v.Offset != nil:
		e.Offset = *v.Offset
	case json.Unmarshal(v.Cursor, &cursor) == nil && cursor.Offset != nil:
		e.Offset = *cursor.Offset
	}
	if v.TTL != nil {
		e.TTL = time.Duration(*v.TTL)
	}
	e.Updated = decodeTime(v.Timestamp)
	if e.Updated.IsZero() {
		e.Updated = decodeTime(v.Updated)
	}
	var osState struct {
		Inode  uint64 `json:"inode"`
		Device uint64 `json:"device"`
	}
	if json.Unmarshal(v.FileStateOS, &osState) == nil && osState.Inode != 0 {
		e.Device, e.Inode, e.HasInode = osState.Device, osState.Inode, true
	} else if i := strings.LastIndex(key, "::"); i >= 0 {
		if m := nativeID.FindStringSubmatch(key[i+2:]); m != nil {
			ino, err1 := strconv.ParseUint(m[1], 10, 64)
			dev, err2 := strconv.ParseUint(m[2], 10, 64)
			if err1 == nil && err2 == nil {
				e.Device, e.Inode, e.HasInode = dev, ino, true
			}
		}
	}
	return e, e.Source != "" || e.HasInode
}

// decodeTime decodes a libbeat timestamp: an RFC 3339 string, or the
// array [extra, seconds] where extra holds the encoding version in its top
// byte, the zone offset in minutes (-1 for UTC) in the next 16 bits and
// the nanoseconds in the low 32 bits. It returns the zero time for
// anything else.
func decodeTime(raw json.RawMessage) time.Time {
	if len(raw) == 0 {
		return time.Time{}
	}
	var pair []uint64
	if err := json.Unmarshal(raw, &pair); err == nil {
		if len(pair) != 2 || pair[0]>>56 != 0 || pair[1] > 1<<62 {
			return time.Time{}
		}
		nsec := int64(pair[0] & 0xffffffff)          //nolint:gosec // 32 bits fit
		return time.Unix(int64(pair[1]), nsec).UTC() //nolint:gosec // checked above to fit
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// ParseCheckpoint parses a registry checkpoint: a JSON array of values,
// each with its key in "_key". Values that are not about files are left
// out.
func ParseCheckpoint(r io.Reader) (map[string]RegistryEntry, error) {
	var raw []json.RawMessage
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return nil, fmt.Errorf("decode checkpoint: %w", err)
	}
	entries := make(map[string]RegistryEntry, len(raw))
	for _, b := range raw {
		var k struct {
			Key string `json:"_key"`
		}
		if json.Unmarshal(b, &k) != nil || k.Key == "" {
			continue
		}
		if e, ok := parseEntry(k.Key, b); ok {
			entries[k.Key] = e
		}
	}
	return entries, nil
}

// ApplyLog applies the operations of a registry log (log.json) that come
// after the operation with id after to entries, and returns the id of the
// last operation applied and the number applied. Each operation is a line
// {"op":"set","id":N} followed by {"k":KEY,"v":VALUE}, or
// {"op":"remove","id":N} followed by {"k":KEY}. Operations with ids up to
// after were already in the checkpoint and are skipped. An incomplete last
// operation is not an error: the shipper may be writing it. A corrupt
// operation, or one whose id does not follow the previous one, stops the
// log there with an error; the operations before it stay applied.
func ApplyLog(r io.Reader, after uint64, entries map[string]RegistryEntry) (last uint64, ops int, err error) {
	dec := json.NewDecoder(r)
	last = after
	for n := 1; dec.More(); n++ {
		var act struct {
			Op string  `json:"op"`
			ID *uint64 `json:"id"`
		}
		if err := dec.Decode(&act); err != nil {
			return last, ops, incomplete(err, n)
		}
		if act.ID == nil || (act.Op != "set" && act.Op != "remove") {
			return last, ops, fmt.Errorf("operation %d: %q with id %v: not a set or remove operation", n, act.Op, act.ID)
		}
		var body struct {
			K string          `json:"k"`
			V json.RawMessage `json:"v"`
		}
		if !dec.More() {
			return last, ops, nil // the shipper is writing this operation
		}
		if err := dec.Decode(&body); err != nil {
			return last, ops, incomplete(err, n)
		}
		id := *act.ID
		if id <= last {
			continue // already in the checkpoint
		}
		if id != last+1 {
			return last, ops, fmt.Errorf("operation %d: id %d after %d: %w", n, id, last, errTxIDGap)
		}
		last = id
		ops++
		if act.Op == "remove" {
			delete(entries, body.K)
			continue
		}
		if e, ok := parseEntry(body.K, body.V); ok {
			entries[body.K] = e
		} else {
			delete(entries, body.K)
		}
	}
	return last, ops, nil
}

// incomplete turns a decoding error at the end of the input (an operation
// still being written) into nil.
func incomplete(err error, n int) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("operation %d: %w", n, err)
}

// fileID identifies a file on a node.
type fileID struct{ dev, ino uint64 }

// registryIndex finds the registry entry of a file.
type registryIndex struct {
	byID     map[fileID]RegistryEntry
	bySource map[string][]RegistryEntry
}

// index returns the live entries of r (TTL not 0) by file identity and
// by source. When several entries name one file (inputs that read it
// side by side), the one furthest along wins.
func (r *Registry) index() registryIndex {
	ix := registryIndex{byID: map[fileID]RegistryEntry{}, bySource: map[string][]RegistryEntry{}}
	keys := make([]string, 0, len(r.Entries))
	for k := range r.Entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e := r.Entries[k]
		if e.TTL == 0 {
			continue
		}
		if e.HasInode {
			id := fileID{e.Device, e.Inode}
			if old, ok := ix.byID[id]; !ok || e.Offset > old.Offset {
				ix.byID[id] = e
			}
		}
		if e.Source != "" {
			ix.bySource[e.Source] = append(ix.bySource[e.Source], e)
		}
	}
	return ix
}

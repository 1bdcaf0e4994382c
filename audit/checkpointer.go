package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// ErrTrailDisagrees is returned by Checkpointer.Start when the audit
// stream disagrees with the newest signed checkpoint: it was deleted,
// recreated, truncated or rewritten since.
var ErrTrailDisagrees = errors.New("the audit trail disagrees with its newest signed checkpoint")

// CheckpointerConfig configures a Checkpointer.
type CheckpointerConfig struct {
	// Instance names this replica in its checkpoints.
	Instance string
	// Dir is where checkpoints are written and read (serve's
	// <data-dir>/checkpoints); Sinks are more directories they are copied
	// to and read from (audit.checkpointsDir).
	Dir   CheckpointDir
	Sinks []CheckpointDir
	// Every and Interval: a checkpoint is signed once Every records were
	// appended since the last one, and at least every Interval while
	// records keep coming.
	Every    uint64
	Interval time.Duration
}

// Checkpointer signs checkpoints of the trail and keeps them outside
// NATS; at start it checks the stream against the newest one.
type Checkpointer struct {
	cfg   CheckpointerConfig
	trail *Trail
	key   *SigningKey
	log   *slog.Logger

	mu sync.Mutex
	// last is the newest checkpoint: this replica's last one, or before
	// it signed any the newest found at start.
	last    *OpenedCheckpoint
	index   uint64 // of this instance's last checkpoint
	replace string // Replaces of the next checkpoint
}

// NewCheckpointer returns a checkpointer of trail, signing with key, which
// must be the key trail tags its records with.
func NewCheckpointer(cfg CheckpointerConfig, trail *Trail, key *SigningKey, log *slog.Logger) *Checkpointer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Instance = SafeInstance(cfg.Instance)
	return &Checkpointer{cfg: cfg, trail: trail, key: key, log: log}
}

// load reads and opens every checkpoint of the directories.
func (c *Checkpointer) load() ([]OpenedCheckpoint, error) {
	scs, paths, err := c.readAll()
	if err != nil {
		return nil, err
	}
	return OpenAll(scs, paths, c.key.Public())
}

// readAll reads the checkpoint files of the directory and the sinks.
func (c *Checkpointer) readAll() ([]SignedCheckpoint, []string, error) {
	var (
		all   []SignedCheckpoint
		paths []string
	)
	for _, d := range append([]CheckpointDir{c.cfg.Dir}, c.cfg.Sinks...) {
		scs, ps, err := d.Read()
		if err != nil {
			return nil, nil, err
		}
		all, paths = append(all, scs...), append(paths, ps...)
	}
	return all, paths, nil
}

// streamState reads the stream's first and last records, and the hash of
// the record at seq (when seq is not 0).
func (c *Checkpointer) streamState(ctx context.Context, seq uint64) (TrailState, error) {
	stream, err := c.trail.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return TrailState{}, fmt.Errorf("open stream %s: %w", bus.StreamAudit, err)
	}
	info := stream.CachedInfo().State
	st := TrailState{FirstSeq: info.FirstSeq, LastSeq: info.LastSeq}
	if st.LastSeq == 0 || info.Msgs == 0 {
		return TrailState{}, nil
	}
	hashAt := func(seq uint64) (string, error) {
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("read record %d of stream %s: %w", seq, bus.StreamAudit, err)
		}
		var rec Record
		if json.Unmarshal(msg.Data, &rec) != nil {
			return "(not a record)", nil
		}
		return rec.Hash, nil
	}
	if st.FirstHash, err = hashAt(st.FirstSeq); err != nil {
		return TrailState{}, err
	}
	if seq != 0 && seq <= st.LastSeq {
		if st.HashAtCheckpoint, err = hashAt(seq); err != nil {
			return TrailState{}, err
		}
	}
	return st, nil
}

// Start checks the audit stream against the newest checkpoint found in
// the directories, sets where the trail's tags are checked from, and signs
// a first checkpoint. A stream that disagrees with the checkpoint is
// ErrTrailDisagrees naming the checkpoint and the stream's state, unless
// accept is set: then the new trail is accepted, and an audit.accepted
// record says by acceptedBy, what the checkpoint said and what the stream
// held. A checkpoint file with a bad signature is an error either way:
// move it away to start.
func (c *Checkpointer) Start(ctx context.Context, accept bool, acceptedBy string) error {
	cps, err := c.load()
	if err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	for _, cp := range cps {
		if cp.Instance == c.cfg.Instance {
			c.index = max(c.index, cp.Index)
		}
	}
	newest, ok := Newest(cps)
	if !ok {
		st, err := c.streamState(ctx, 0)
		if err != nil {
			return err
		}
		// Records already there predate tagging (a trail written before
		// checkpoints, or by a replica that lost its directory).
		c.trail.SetTagsFrom(st.LastSeq + 1)
		if st.LastSeq > 0 {
			c.log.WarnContext(ctx, "no audit checkpoint found: the first one anchors the trail as it is now; its records were not checked for tags",
				"dir", string(c.cfg.Dir), "records", st.LastSeq)
		}
		_, err = c.Checkpoint(ctx)
		return err
	}
	st, err := c.streamState(ctx, newest.LastSeq)
	if err != nil {
		return err
	}
	problem := newest.Disagreement(st)
	if problem == "" {
		c.last = &newest
		c.trail.SetTagsFrom(newest.TagsFrom)
		c.log.InfoContext(ctx, "audit trail agrees with its newest checkpoint", "checkpoint", newest.Source,
			"checkpoint_last_seq", newest.LastSeq, "stream_first_seq", st.FirstSeq, "stream_last_seq", st.LastSeq)
		_, err = c.Checkpoint(ctx)
		return err
	}
	if !accept {
		c.log.ErrorContext(ctx, "REFUSING TO START: the audit trail disagrees with its newest signed checkpoint",
			"problem", problem, "checkpoint", newest.Source, "stream_first_seq", st.FirstSeq, "stream_last_seq", st.LastSeq)
		return fmt.Errorf("%w: %s; %s (checkpoint file %s). If this new trail is expected (the stream was recreated on purpose), start once with --accept-new-audit-trail",
			ErrTrailDisagrees, problem, st, newest.Source)
	}
	c.log.WarnContext(ctx, "accepting a new audit trail that disagrees with the newest signed checkpoint",
		"problem", problem, "checkpoint", newest.Source, "accepted_by", acceptedBy)
	c.trail.SetTagsFrom(max(st.FirstSeq, 1))
	c.replace = newest.Hash
	c.last = &OpenedCheckpoint{Checkpoint: Checkpoint{Instance: newest.Instance, Index: newest.Index, TagsFrom: max(st.FirstSeq, 1)}, Hash: newest.Hash}
	if _, err := c.trail.Append(ctx, Record{
		Kind: KindAuditAccepted, Actor: acceptedBy, Target: "audit/trail",
		Details: Details(
			"problem", problem,
			"checkpoint", newest.Checkpoint, "checkpoint_hash", newest.Hash, "checkpoint_file", newest.Source,
			"stream_first_seq", st.FirstSeq, "stream_last_seq", st.LastSeq, "stream_first_hash", st.FirstHash,
		),
	}); err != nil {
		return fmt.Errorf("audit the accepted new trail: %w", err)
	}
	_, err = c.Checkpoint(ctx)
	return err
}

// Run signs checkpoints until ctx ends: once Every records were appended
// since the last one, and every Interval when records were appended.
func (c *Checkpointer) Run(ctx context.Context) {
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.trail.Appended():
			c.mu.Lock()
			due := c.last == nil || c.trail.KnownLastSeq() >= c.last.LastSeq+c.cfg.Every
			c.mu.Unlock()
			if !due {
				continue
			}
		}
		if _, err := c.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			c.log.ErrorContext(ctx, "audit checkpoint failed", "error", err)
		}
	}
}

// Checkpoint signs a checkpoint of the trail as it is now, when it grew
// since the last one, after checking the records since then (their chain,
// and their tags), writes it to the directories and logs it. It returns
// the checkpoint, or nil when there was nothing new.
func (c *Checkpointer) Checkpoint(ctx context.Context) (*OpenedCheckpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.last
	if prev == nil {
		prev = &OpenedCheckpoint{Checkpoint: Checkpoint{TagsFrom: c.trail.tagsFrom.Load()}}
	}
	st, err := c.streamState(ctx, 0)
	if err != nil {
		return nil, err
	}
	if c.last != nil && c.replace == "" {
		if st.LastSeq < prev.LastSeq {
			return nil, fmt.Errorf("%w: %s", ErrTrailDisagrees, prev.Disagreement(st))
		}
		if st.LastSeq == prev.LastSeq {
			return nil, nil
		}
	}
	next := Checkpoint{
		Instance: c.cfg.Instance, Index: c.index + 1, Time: time.Now(),
		FirstSeq: st.FirstSeq, FirstHash: st.FirstHash, LastSeq: st.LastSeq, HeadHash: prev.HeadHash,
		TagsFrom: prev.TagsFrom, Foreign: slices.Clone(prev.Foreign), ForeignCount: prev.ForeignCount,
		Prev: prev.Hash, Replaces: c.replace,
	}
	if err := c.scanRange(ctx, prev, &next); err != nil {
		return nil, err
	}
	sc, err := c.key.Sign(next)
	if err != nil {
		return nil, err
	}
	path, err := c.cfg.Dir.Write(sc)
	if err != nil {
		return nil, err
	}
	for _, sink := range c.cfg.Sinks {
		if _, err := sink.Write(sc); err != nil {
			// The local copy is written; the sink is retried with the
			// next checkpoint.
			c.log.ErrorContext(ctx, "copy audit checkpoint to its sink", "sink", string(sink), "error", err)
		}
	}
	opened := &OpenedCheckpoint{Checkpoint: sc.cp, Hash: sc.Hash(), Source: path}
	c.last, c.index, c.replace = opened, next.Index, ""
	c.log.InfoContext(ctx, "audit checkpoint signed", "instance", next.Instance, "index", next.Index,
		"first_seq", next.FirstSeq, "last_seq", next.LastSeq, "head_hash", next.HeadHash,
		"foreign_count", next.ForeignCount, "prev", next.Prev, "key_id", sc.cp.KeyID, "checkpoint_hash", opened.Hash, "file", path)
	return opened, nil
}

// scanRange reads the records after prev up to next.LastSeq, checks that
// they extend prev's head, that their chain holds and which have no valid
// tag, and sets next's HeadHash and foreign list. A broken chain is an
// error: it is not signed.
func (c *Checkpointer) scanRange(ctx context.Context, prev *OpenedCheckpoint, next *Checkpoint) error {
	from, wantPrev := prev.LastSeq+1, prev.HeadHash
	if prev.LastSeq == 0 {
		wantPrev = "" // record 1 is checked against the genesis hash
	}
	if from < next.FirstSeq {
		// Unreachable unless records were removed; Start reported it.
		from, wantPrev = next.FirstSeq, ""
	}
	if next.LastSeq == 0 || from > next.LastSeq {
		return nil
	}
	var scanErr error
	seq := from - 1
	err := c.trail.scan(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from},
		func(streamSeq uint64, data []byte) bool {
			if streamSeq > next.LastSeq {
				return false
			}
			var rec Record
			switch {
			case json.Unmarshal(data, &rec) != nil:
				scanErr = fmt.Errorf("the message at seq %d is not a record", streamSeq)
			case rec.Seq != streamSeq || rec.Hash != rec.ComputeHash():
				scanErr = fmt.Errorf("record at seq %d was altered", streamSeq)
			case streamSeq == 1 && rec.PrevHash != GenesisHash, wantPrev != "" && rec.PrevHash != wantPrev:
				scanErr = fmt.Errorf("record %d does not extend the record before it (prev_hash %s)", streamSeq, short(rec.PrevHash))
			}
			if scanErr != nil {
				return false
			}
			if why := c.trail.isForeign(streamSeq, &rec); why != "" {
				c.trail.alarmForeign(ctx, streamSeq, &rec, why)
				next.ForeignCount++
				if len(next.Foreign) < MaxForeignListed {
					next.Foreign = append(next.Foreign, streamSeq)
				}
			}
			seq, wantPrev, next.HeadHash = streamSeq, rec.Hash, rec.Hash
			return streamSeq < next.LastSeq
		})
	if err == nil {
		err = scanErr
	}
	if err == nil && seq != next.LastSeq {
		err = fmt.Errorf("records %d..%d could not be read", seq+1, next.LastSeq)
	}
	if err != nil {
		return fmt.Errorf("audit checkpoint of records %d..%d: %w", from, next.LastSeq, err)
	}
	return nil
}

// Checkpoints returns the checkpoints of the directories, for the API.
func (c *Checkpointer) Checkpoints() ([]SignedCheckpoint, error) {
	scs, _, err := c.readAll()
	return scs, err
}

// PublicKey is the key the checkpoints verify with.
func (c *Checkpointer) PublicKey() PublicKey { return c.key.Public() }

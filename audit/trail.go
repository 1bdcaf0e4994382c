package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/selfheal/healer/bus"
)

// maxAppendAttempts bounds how often Append retries after another writer
// extended the trail first.
const maxAppendAttempts = 100

// ErrTailInvalid is returned by Append when the last message of the stream
// is not a valid record, so the chain cannot be extended. It means the
// trail was tampered with or written by something else; run Verify.
var ErrTailInvalid = errors.New("last message of the audit stream is not a valid record")

// Trail appends records to and reads records from the audit stream. It is
// safe for concurrent use, and several Trails (in one process or in several
// replicas) may append to the same stream.
type Trail struct {
	js  jetstream.JetStream
	log *slog.Logger
	// key tags the records the committer writes; nil writes no tags and
	// checks none.
	key *SigningKey

	// tagsFrom is the first seq from which records must carry a valid
	// tag; 0 until SetTagsFrom (nothing is checked before).
	tagsFrom atomic.Uint64
	// foreignSeen counts the foreign records noticed; alarmed holds their
	// seqs, so that each is alarmed once.
	foreignSeen atomic.Uint64
	amu         sync.Mutex
	alarmed     map[uint64]bool
	// lastSeq is the highest seq the committer knows to be stored;
	// appended is poked after each commit.
	lastSeq  atomic.Uint64
	appended chan struct{}

	// qmu guards the appends waiting for the committer, and whether one
	// runs: at most one goroutine commits at a time.
	qmu        sync.Mutex
	queue      []*pendingAppend
	committing bool

	// The cached tail belongs to the committer.
	tailOK   bool
	tailSeq  uint64
	tailHash string
}

// TrailOption configures a Trail.
type TrailOption func(*Trail)

// WithSigningKey makes the committer tag every record it writes with a
// key derived from k, and check the tag of the records it finds at the
// tail of the stream (see SetTagsFrom): a record without a valid tag is
// foreign, and is alarmed about (see ForeignSeen).
func WithSigningKey(k *SigningKey) TrailOption { return func(t *Trail) { t.key = k } }

// NewTrail returns a Trail on the stream bus.StreamAudit, which the caller
// creates with bus.EnsureStreams. A nil log discards log output.
func NewTrail(js jetstream.JetStream, log *slog.Logger, opts ...TrailOption) *Trail {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Trail{js: js, log: log, alarmed: map[uint64]bool{}, appended: make(chan struct{}, 1)}
	for _, o := range opts {
		o(t)
	}
	return t
}

// SetTagsFrom says from which seq on the records of the stream must carry
// the committer's tag (records before it predate tagging). Until it is
// called, tags are written but not checked.
func (t *Trail) SetTagsFrom(seq uint64) { t.tagsFrom.Store(seq) }

// ForeignSeen returns how many foreign records this Trail has noticed.
func (t *Trail) ForeignSeen() uint64 { return t.foreignSeen.Load() }

// maxAlarmed bounds the seqs remembered as alarmed: past it, a flood of
// forged records is still counted and logged but no longer audited one by
// one.
const maxAlarmed = 1000

// isForeign reports why rec, stored at seq, was not written by a
// committer holding the key, or "" when it was (or when tags are not
// checked at seq).
func (t *Trail) isForeign(seq uint64, rec *Record) string {
	from := t.tagsFrom.Load()
	switch {
	case t.key == nil || from == 0 || seq < from:
		return ""
	case rec.Tag == "":
		return "it has no tag"
	case !t.key.validTag(rec.Hash, rec.Tag):
		return "its tag is not the committer's"
	}
	return ""
}

// alarmForeign raises the alarm about a foreign record at seq: an ERROR
// log line, the ForeignSeen count and an audit.foreign record, once per
// seq. It does not wait for the record to be appended.
func (t *Trail) alarmForeign(ctx context.Context, seq uint64, rec *Record, why string) {
	t.amu.Lock()
	if t.alarmed[seq] {
		t.amu.Unlock()
		return
	}
	audited := len(t.alarmed) < maxAlarmed
	if audited {
		t.alarmed[seq] = true
	}
	t.amu.Unlock()
	t.foreignSeen.Add(1)
	t.log.ErrorContext(ctx, "AUDIT TRAIL HOLDS A RECORD HEALER DID NOT WRITE: something else with write access to the audit stream appended it",
		"stream", bus.StreamAudit, "seq", seq, "record_id", rec.ID, "record_kind", rec.Kind, "record_actor", rec.Actor, "reason", why)
	if !audited {
		return
	}
	r := Record{
		Kind: KindAuditForeign, Actor: "healer/audit", Target: "audit/" + strconv.FormatUint(seq, 10),
		Details: Details("foreign_seq", seq, "foreign_id", rec.ID, "foreign_kind", rec.Kind, "reason", why),
	}
	if err := r.normalize(time.Now()); err != nil {
		return
	}
	p := &pendingAppend{rec: r, done: make(chan struct{}), onFail: func(err error) {
		t.log.ErrorContext(ctx, "audit the foreign record", "seq", seq, "error", err)
	}}
	t.enqueue(p)
}

// Append adds r to the trail and returns the stored record. It fills Seq,
// PrevHash and Hash, sets ID when empty and Time when zero (Time is stored
// in UTC), and stores details in canonical form. Records with an unknown
// kind or details that are not a JSON object are refused with
// ErrInvalidRecord.
//
// Appends made at the same time are committed together: one committer
// chains the waiting records on the tail it has cached and publishes them
// back to back, each expecting the one before it as the stream's last
// message (its sequence and message id), then waits for their
// acknowledgements. A batch costs about one
// round trip however many records it holds. When another writer got there
// first the committer re-reads the tail and retries what did not land.
// An error means the record was not stored, or (after a lost
// acknowledgement, or when ctx ends first) that it is unknown whether it
// was: callers must then not take the audited step.
func (t *Trail) Append(ctx context.Context, r Record) (Record, error) {
	out, err := t.AppendAll(ctx, r)
	if err != nil {
		return Record{}, err
	}
	return out[0], nil
}

// AppendAll appends recs in order, each as Append does, and returns the
// stored records. They join the committer's queue together, so they are
// committed in one batch (one round trip for all, where one Append each
// would take one round trip per record) and stand next to each other in
// the chain unless another writer's records land between them. Nothing is
// appended when one of them is invalid. An error may come after a prefix
// of recs was stored; the records returned with it are the ones known to
// be stored.
func (t *Trail) AppendAll(ctx context.Context, recs ...Record) ([]Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	traceID := ""
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		traceID = sc.TraceID().String()
	}
	now := time.Now()
	ps := make([]*pendingAppend, len(recs))
	for i, r := range recs {
		if r.TraceID == "" {
			r.TraceID = traceID
		}
		if err := r.normalize(now); err != nil {
			return nil, err
		}
		ps[i] = &pendingAppend{rec: r, done: make(chan struct{})}
	}
	t.enqueue(ps...)
	out := make([]Record, 0, len(ps))
	for _, p := range ps {
		select {
		case <-p.done:
			if p.err != nil {
				return out, p.err
			}
			out = append(out, p.out)
		case <-ctx.Done():
			return out, fmt.Errorf("audit: append %s record %s: %w (it may still be appended)", p.rec.Kind, p.rec.ID, context.Cause(ctx))
		}
	}
	return out, nil
}

// enqueue queues ps for the committer, starting it when none runs.
func (t *Trail) enqueue(ps ...*pendingAppend) {
	t.qmu.Lock()
	t.queue = append(t.queue, ps...)
	if !t.committing {
		t.committing = true
		go t.commitLoop() //nolint:contextcheck // commits for every waiting caller, not under one caller's context
	}
	t.qmu.Unlock()
}

// pendingAppend is a record waiting for the committer, and its result.
type pendingAppend struct {
	rec  Record
	done chan struct{} // closed when out or err is set
	out  Record
	err  error
	// onFail, when set, is told the error of an append nobody waits for.
	onFail func(error)
}

func (p *pendingAppend) finish(out Record, err error) {
	p.out, p.err = out, err
	if err != nil && p.onFail != nil {
		p.onFail(err)
	}
	close(p.done)
}

// Commit batches: at most maxBatch records, each batch given appendTimeout.
const (
	maxBatch      = 256
	appendTimeout = 10 * time.Second
)

// commitLoop commits what is queued, batch after batch, and ends when the
// queue is empty (the next Append starts another).
func (t *Trail) commitLoop() {
	for {
		t.qmu.Lock()
		if len(t.queue) == 0 {
			t.committing = false
			t.qmu.Unlock()
			return
		}
		n := min(len(t.queue), maxBatch)
		batch := make([]*pendingAppend, n)
		copy(batch, t.queue)
		t.queue = append(t.queue[:0], t.queue[n:]...)
		t.qmu.Unlock()
		t.commit(batch)
	}
}

// commit appends batch in order, retrying the part that did not land when
// another writer extended the trail first, and finishes every pending
// append of it.
func (t *Trail) commit(batch []*pendingAppend) {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	failRest := func(err error) {
		for _, p := range batch {
			p.finish(Record{}, fmt.Errorf("audit: append %s record %s: %w", p.rec.Kind, p.rec.ID, err))
		}
	}
	for attempt := 1; len(batch) > 0; attempt++ {
		if !t.tailOK {
			if err := t.loadTail(ctx); err != nil {
				failRest(err)
				return
			}
		}
		recs, err := t.publishChained(ctx, batch)
		ok := len(recs)
		for i := range ok {
			batch[i].finish(recs[i], nil)
		}
		if ok > 0 {
			t.tailSeq, t.tailHash = recs[ok-1].Seq, recs[ok-1].Hash
			t.noteAppended(t.tailSeq)
		}
		batch = batch[ok:]
		if err == nil {
			return
		}
		// Whatever happened, the cached tail may now be stale.
		t.tailOK = false
		if !isWrongLastSequence(err) {
			failRest(fmt.Errorf("to stream %s: %w", bus.StreamAudit, err))
			return
		}
		if attempt >= maxAppendAttempts {
			failRest(fmt.Errorf("gave up after %d attempts, other writers kept extending the trail: %w", attempt, err))
			return
		}
		t.log.Debug("audit tail moved, retrying append", "expected_last_seq", t.tailSeq, "records", len(batch), "attempt", attempt)
		if attempt > 2 {
			// Several lost races in a row: back off a little, randomly,
			// so that competing writers do not keep colliding.
			wait := rand.N(time.Duration(attempt) * time.Millisecond) //nolint:gosec // jitter, not a secret
			select {
			case <-ctx.Done():
				failRest(ctx.Err())
				return
			case <-time.After(wait):
			}
		}
	}
}

// publishChained chains batch on the cached tail, publishes it without
// waiting in between, and returns the records that landed (a prefix of the
// batch, since each one expects the one before) with the error that
// stopped the rest. After an error other than another writer's, the stream
// is read back to learn which records landed although their
// acknowledgement was lost.
func (t *Trail) publishChained(ctx context.Context, batch []*pendingAppend) ([]Record, error) {
	recs := make([]Record, 0, len(batch))
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	seq, hash := t.tailSeq, t.tailHash
	prevID := "" // the cached tail is known to be at seq: the check on seq suffices for the first
	var sendErr error
	for _, p := range batch {
		rec := p.rec
		rec.Seq, rec.PrevHash = seq+1, hash
		body := rec.seal(t.key)
		opts := []jetstream.PublishOpt{jetstream.WithExpectStream(bus.StreamAudit), jetstream.WithExpectLastSequence(seq), jetstream.WithMsgID(rec.ID)}
		if prevID != "" {
			// The sequence alone is not enough here: had the record
			// before this one lost its place to another writer's, this
			// one would land on top of that record, chained to the wrong
			// hash. The previous message must be ours.
			opts = append(opts, jetstream.WithExpectLastMsgID(prevID))
		}
		f, err := t.js.PublishAsync(bus.SubjectAudit, body, opts...)
		if err != nil {
			sendErr = err
			break
		}
		recs, futures = append(recs, rec), append(futures, f)
		seq, hash, prevID = rec.Seq, rec.Hash, rec.ID
	}
	for i, f := range futures {
		var err error
		select {
		case ack := <-f.Ok():
			if ack.Sequence != recs[i].Seq {
				// Unreachable while the expected-last-sequence check holds.
				err = fmt.Errorf("stored at stream sequence %d, chained as %d", ack.Sequence, recs[i].Seq)
			}
		case err = <-f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err == nil {
			continue
		}
		if isWrongLastSequence(err) {
			return recs[:i], err
		}
		return recs[:i+t.landed(ctx, recs[i:])], err
	}
	return recs, sendErr
}

// noteAppended records that the stream reaches seq and pokes whoever
// waits on Appended.
func (t *Trail) noteAppended(seq uint64) {
	if seq > t.lastSeq.Load() {
		t.lastSeq.Store(seq)
	}
	select {
	case t.appended <- struct{}{}:
	default:
	}
}

// Appended is poked (without blocking: several commits may make one poke)
// after the committer appended records; KnownLastSeq then says how far
// the stream reaches.
func (t *Trail) Appended() <-chan struct{} { return t.appended }

// KnownLastSeq is the highest seq this Trail's committer saw stored.
func (t *Trail) KnownLastSeq() uint64 { return t.lastSeq.Load() }

// landed returns how many of recs, in order, are in the stream with the
// hashes they were given: records whose acknowledgement was lost.
func (t *Trail) landed(ctx context.Context, recs []Record) int {
	stream, err := t.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return 0
	}
	for i, rec := range recs {
		msg, err := stream.GetMsg(ctx, rec.Seq)
		if err != nil {
			return i
		}
		var stored Record
		if json.Unmarshal(msg.Data, &stored) != nil || stored.Hash != rec.Hash {
			return i
		}
	}
	return len(recs)
}

// loadTail reads the last record of the stream into the cached tail.
// Only the committer calls it.
func (t *Trail) loadTail(ctx context.Context) error {
	stream, err := t.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", bus.StreamAudit, err)
	}
	last := stream.CachedInfo().State.LastSeq
	if last == 0 {
		t.tailOK, t.tailSeq, t.tailHash = true, 0, GenesisHash
		return nil
	}
	msg, err := stream.GetMsg(ctx, last)
	if err != nil {
		return fmt.Errorf("read last record %d of stream %s: %w", last, bus.StreamAudit, err)
	}
	var rec Record
	if err := json.Unmarshal(msg.Data, &rec); err != nil {
		t.log.ErrorContext(ctx, "audit trail tail is not a valid record; refusing to extend it", "stream_seq", last, "error", err)
		return fmt.Errorf("%w: stream sequence %d: %w", ErrTailInvalid, last, err)
	}
	var problem string
	switch {
	case rec.Seq != last:
		problem = fmt.Sprintf("record %q claims seq %d", rec.ID, rec.Seq)
	case rec.Hash != rec.ComputeHash():
		problem = fmt.Sprintf("record %q has a hash that does not match its content", rec.ID)
	}
	if problem != "" {
		t.log.ErrorContext(ctx, "audit trail tail was altered; refusing to extend it", "stream_seq", last, "problem", problem)
		return fmt.Errorf("%w: at stream sequence %d, %s", ErrTailInvalid, last, problem)
	}
	// Another writer extended the trail: it should have been another
	// committer holding the key (another replica).
	if why := t.isForeign(last, &rec); why != "" {
		t.alarmForeign(ctx, last, &rec, why)
	}
	t.tailOK, t.tailSeq, t.tailHash = true, last, rec.Hash
	t.noteAppended(last)
	return nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant ||
		apiErr.ErrorCode == errCodeWrongLastMsgID
}

// errCodeWrongLastMsgID is the server's "wrong last msg ID" (10070): the
// record before one of a batch lost its place to another writer's.
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

// Default and maximum number of records Query returns.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// sinceSlack widens the start time Query asks JetStream for, because
// Filter.Since applies to the record's Time while JetStream seeks by the
// time the server stored the message, which can be a little earlier when a
// writer's clock runs ahead.
const sinceSlack = 5 * time.Minute

// ErrInvalidFilter is returned by Query for a filter it cannot apply.
var ErrInvalidFilter = errors.New("invalid audit filter")

// Filter selects records. Zero fields match everything.
type Filter struct {
	// Target, Remediator, Kind and EventID must equal the record's.
	Target, Remediator string
	Kind               Kind
	EventID            string
	// Since keeps records whose Time is at or after it.
	Since time.Time
	// After keeps records stored after stream sequence After, which is
	// the Seq of every intact record, for paging.
	After uint64
	// Limit is the maximum number of records returned: DefaultLimit when
	// zero, at most MaxLimit.
	Limit int

	// fromStart makes After 0 page from the first record, as "after=0"
	// does in the HTTP API; otherwise After 0 means After is not set.
	fromStart bool
}

// paging reports whether Query returns the first matches after After
// rather than the latest matches.
func (f *Filter) paging() bool { return f.After > 0 || f.fromStart }

// Validate reports a filter Query would refuse.
func (f *Filter) Validate() error {
	if f.Limit < 0 || f.Limit > MaxLimit {
		return fmt.Errorf("%w: limit %d: must be between 1 and %d", ErrInvalidFilter, f.Limit, MaxLimit)
	}
	if f.Kind != "" && !f.Kind.Valid() {
		return fmt.Errorf("%w: kind %q is not one of %v", ErrInvalidFilter, f.Kind, Kinds())
	}
	return nil
}

func (f *Filter) match(r *Record) bool {
	return (f.Target == "" || r.Target == f.Target) &&
		(f.Remediator == "" || r.Remediator == f.Remediator) &&
		(f.Kind == "" || r.Kind == f.Kind) &&
		(f.EventID == "" || r.EventID == f.EventID) &&
		(f.Since.IsZero() || !r.Time.Before(f.Since))
}

// kindUnreadable marks the stand-in Query returns for a stream message that
// is not a valid record. It is not a valid Kind: such a record can never be
// appended, and Verifier reports it as bad.
const kindUnreadable Kind = "unreadable"

// unreadable returns the stand-in for the message at streamSeq that could
// not be decoded.
func unreadable(streamSeq uint64, err error) Record {
	return Record{Seq: streamSeq, Kind: kindUnreadable, Details: Details("error", err.Error())}
}

// Query returns the records matching f in ascending Seq order, never nil.
// When more than the limit match, it returns the latest ones, unless After
// is set: then it returns the first ones after After, so that a caller can
// page through the trail by passing the last Seq it got as the next After.
// (Through the HTTP API, after=0 pages from the first record.)
//
// Query scans the stream from After+1, or from about Since, and filters in
// the process: its cost is proportional to the number of records scanned,
// not to the number returned. A message that is not a valid record is
// returned, when the filter has no condition but After and Limit, as a
// stand-in record with only Seq (its stream sequence), kind "unreadable"
// and details {"error": "<why>"}, so that a client paging through the
// trail sees every position; Verifier reports such a record as bad.
func (t *Trail) Query(ctx context.Context, f Filter) ([]Record, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   f.After + 1,
	}
	if !f.paging() && !f.Since.IsZero() {
		start := f.Since.Add(-sinceSlack)
		cfg = jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartTimePolicy,
			OptStartTime:  &start,
		}
	}
	// Paging (After set) keeps the first matches; otherwise a ring keeps
	// the latest.
	var (
		out  = make([]Record, 0, min(limit, 64))
		next int // oldest entry of the ring once it is full
	)
	err := t.scan(ctx, cfg, func(streamSeq uint64, data []byte) bool {
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			t.log.WarnContext(ctx, "audit stream holds a message that is not a valid record", "stream_seq", streamSeq, "error", err)
			rec = unreadable(streamSeq, err)
		}
		if !f.match(&rec) {
			return true
		}
		if len(out) < limit {
			out = append(out, rec)
			return !f.paging() || len(out) < limit
		}
		out[next] = rec
		next = (next + 1) % limit
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("audit: query stream %s: %w", bus.StreamAudit, err)
	}
	if next > 0 {
		out = append(out[next:], out[:next]...)
	}
	return out, nil
}

// Verify reads the whole trail and checks it as VerifyRecords does, and
// also that every record is stored at the stream sequence equal to its
// Seq. A broken chain is reported in the result, not as an error; an
// error means the trail could not be read.
func (t *Trail) Verify(ctx context.Context) (VerifyResult, error) {
	var v Verifier
	err := t.scan(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy},
		func(streamSeq uint64, data []byte) bool {
			var rec Record
			if err := json.Unmarshal(data, &rec); err != nil {
				v.addUndecodable(streamSeq, err)
				return true
			}
			v.add(rec, streamSeq)
			return true
		})
	if err != nil {
		return VerifyResult{}, fmt.Errorf("audit: verify stream %s: %w", bus.StreamAudit, err)
	}
	res := v.Result()
	if !res.OK {
		t.log.WarnContext(ctx, "audit chain broken", "records", res.Records, "first_bad", res.FirstBad, "reason", res.Reason)
	}
	return res, nil
}

// scan delivers the messages of the audit stream selected by cfg, in
// order, up to the last message stored when the scan starts, to fn until
// fn returns false.
func (t *Trail) scan(ctx context.Context, cfg jetstream.OrderedConsumerConfig, fn func(streamSeq uint64, data []byte) bool) error {
	stream, err := t.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	state := stream.CachedInfo().State
	last := state.LastSeq
	switch {
	case last == 0 || state.Msgs == 0:
		return nil
	case cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && cfg.OptStartSeq > last:
		return nil
	case cfg.DeliverPolicy == jetstream.DeliverByStartTimePolicy && state.LastTime.Before(*cfg.OptStartTime):
		// Nothing would be delivered, and the scan would never see last.
		return nil
	}
	// The consumer is ephemeral and deleted when the scan ends; should
	// that fail, the server removes it once inactive. Left to linger,
	// frequent queries (a page or a CLI polling) would pile consumers up
	// to the server's limit and fail.
	cfg.InactiveThreshold = 10 * time.Second
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("create ordered consumer: %w", err)
	}
	defer deleteConsumer(ctx, stream, cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read message metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		if seq > last {
			return nil
		}
		if !fn(seq, msg.Data()) || seq == last {
			return nil
		}
	}
}

// deleteConsumer removes an ordered consumer healer is done with.
func deleteConsumer(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = stream.DeleteConsumer(dctx, info.Name)
}

// Follow delivers every record stored after stream sequence after, in
// order, to fn as it is appended, until ctx ends (nil) or the stream
// cannot be read (an error). Unreadable messages are skipped. It is the
// live view of the trail for chat updates and the web page.
func (t *Trail) Follow(ctx context.Context, after uint64, fn func(Record)) error {
	stream, err := t.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return fmt.Errorf("audit: follow: open stream: %w", err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("audit: follow: create ordered consumer: %w", err)
	}
	defer deleteConsumer(ctx, stream, cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("audit: follow: consume: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("audit: follow: %w", err)
		}
		var rec Record
		if json.Unmarshal(msg.Data(), &rec) == nil {
			fn(rec)
		}
	}
}

// LastSeq is the stream sequence of the latest record (0 for none).
func (t *Trail) LastSeq(ctx context.Context) (uint64, error) {
	stream, err := t.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return 0, fmt.Errorf("audit: open stream: %w", err)
	}
	return stream.CachedInfo().State.LastSeq, nil
}

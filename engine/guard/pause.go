package guard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// PauseBucket is the NATS KV bucket of pauses and maintenance windows.
const PauseBucket = "healer_pauses"

// EnsurePauseBucket creates the pause bucket, or updates it.
func EnsurePauseBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureKV(ctx, js, bus.KV{Bucket: PauseBucket, Description: "healer: pauses, the kill switch and maintenance windows (honoured by every replica)", Replicas: replicas, History: 1})
}

// Pause holds healer back from acting, for a scope and a time. With no
// remediator and no target it is the kill switch: nothing acts.
type Pause struct {
	ID string `json:"id"`
	// Remediator limits the pause to one remediator ("node.drain"); empty
	// is every remediator.
	Remediator string `json:"remediator,omitempty"`
	// Target limits the pause to the event subjects matching this
	// pattern (path.Match: "node/worker-*", "etcd/*"); empty is every
	// target.
	Target string `json:"target,omitempty"`
	// From is when the pause begins: zero is at once, a future time makes
	// it a maintenance window.
	From time.Time `json:"from,omitzero"`
	// Until is when it ends by itself; zero is until it is cleared.
	Until time.Time `json:"until,omitzero"`
	// Reason and By say why and who, for the audit trail and whoever is
	// held back.
	Reason  string    `json:"reason"`
	By      string    `json:"by"`
	Created time.Time `json:"created"`
}

// Validate reports what is wrong with a pause being set.
func (p *Pause) Validate() error {
	var errs []error
	if strings.TrimSpace(p.Reason) == "" {
		errs = append(errs, errors.New("reason is required: whoever is held back reads it"))
	}
	if strings.TrimSpace(p.By) == "" {
		errs = append(errs, errors.New("by is required: who pauses"))
	}
	if p.Target != "" {
		if _, err := path.Match(p.Target, "x"); err != nil {
			errs = append(errs, fmt.Errorf("target %q: %w", p.Target, err))
		}
	}
	if !p.Until.IsZero() && !p.From.IsZero() && !p.Until.After(p.From) {
		errs = append(errs, errors.New("until must be after from"))
	}
	return errors.Join(errs...)
}

// Active reports whether the pause holds at t.
func (p *Pause) Active(t time.Time) bool {
	return !t.Before(p.From) && (p.Until.IsZero() || t.Before(p.Until))
}

// Expired reports whether the pause has ended at t.
func (p *Pause) Expired(t time.Time) bool { return !p.Until.IsZero() && !t.Before(p.Until) }

// Covers reports whether the pause applies to remediator on target.
func (p *Pause) Covers(remediator, target string) bool {
	if p.Remediator != "" && p.Remediator != remediator {
		return false
	}
	if p.Target == "" {
		return true
	}
	ok, err := path.Match(p.Target, target)
	return err == nil && ok
}

// KillSwitch reports whether the pause covers every remediator on every
// target.
func (p *Pause) KillSwitch() bool { return p.Remediator == "" && p.Target == "" }

// Scope describes what the pause covers, for messages.
func (p *Pause) Scope() string {
	switch {
	case p.KillSwitch():
		return "everything (kill switch)"
	case p.Target == "":
		return p.Remediator
	case p.Remediator == "":
		return "every remediator on " + p.Target
	default:
		return p.Remediator + " on " + p.Target
	}
}

// Pauses is the set of pauses in the bucket, kept current by watching it,
// so every replica honours a pause as soon as it is stored. Its methods
// are safe for concurrent use.
type Pauses struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time

	mu     sync.RWMutex
	byID   map[string]Pause
	synced bool
	err    error
	// rev is the bucket revision the watch has applied; seen is closed
	// (and replaced) when it grows, for Set and Clear to wait on.
	rev  uint64
	seen chan struct{}
}

// NewPauses returns the pauses of the bucket; Run keeps them current.
func NewPauses(kv jetstream.KeyValue, log *slog.Logger) *Pauses {
	return &Pauses{kv: kv, log: log, now: time.Now, byID: map[string]Pause{}, seen: make(chan struct{})}
}

// Run watches the bucket until ctx ends, watching again after a failure.
// Until the first full read, and while the watch is broken, Blocking
// returns ErrPausesUnknown.
func (ps *Pauses) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := ps.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		ps.mu.Lock()
		ps.synced, ps.err = false, err
		ps.mu.Unlock()
		ps.log.WarnContext(ctx, "pause bucket watch broken; not acting until it is back", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (ps *Pauses) watch(ctx context.Context) error {
	w, err := ps.kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	initial := map[string]Pause{}
	var initialRev uint64
	synced := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil { // the end of the initial values
				ps.mu.Lock()
				ps.byID, ps.synced, ps.err = initial, true, nil
				ps.advanceLocked(initialRev)
				ps.mu.Unlock()
				synced = true
				continue
			}
			target := initial
			if synced {
				ps.mu.Lock()
				target = ps.byID
			}
			switch e.Operation() {
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				delete(target, e.Key())
			default:
				var p Pause
				if err := json.Unmarshal(e.Value(), &p); err != nil {
					ps.log.ErrorContext(ctx, "unreadable pause: treated as the kill switch until removed", "key", e.Key(), "err", err)
					p = Pause{ID: e.Key(), Reason: "unreadable pause entry " + e.Key() + " (fail closed)", By: "healer"}
				}
				target[e.Key()] = p
			}
			if !synced {
				initialRev = max(initialRev, e.Revision())
				continue
			}
			ps.advanceLocked(e.Revision())
			ps.mu.Unlock()
		}
	}
}

// advanceLocked records that the watch has applied revision rev, waking
// waitSeen. ps.mu is held.
func (ps *Pauses) advanceLocked(rev uint64) {
	if rev > ps.rev {
		ps.rev = rev
		close(ps.seen)
		ps.seen = make(chan struct{})
	}
}

// waitSeen waits until this replica's watch has applied revision rev of
// the bucket, so that whoever set or cleared a pause sees it in List at
// once (and this replica honours it before the call returns). It gives up
// quietly after a few seconds: the change is stored, and the watch will
// bring it.
func (ps *Pauses) waitSeen(ctx context.Context, rev uint64) {
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		ps.mu.RLock()
		cur, seen := ps.rev, ps.seen
		ps.mu.RUnlock()
		if cur >= rev {
			return
		}
		select {
		case <-seen:
		case <-ctx.Done():
			return
		case <-timeout.C:
			ps.log.WarnContext(ctx, "pause change stored but not yet seen by this replica's watch", "revision", rev, "seen", cur)
			return
		}
	}
}

// ErrPausesUnknown is returned by Blocking while the pauses cannot be
// read: healer does not act when it cannot tell whether it may, and tries
// again later.
var ErrPausesUnknown = errors.New("pauses unknown")

// WaitSynced waits until the pauses have been read once.
func (ps *Pauses) WaitSynced(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ps.mu.RLock()
		synced, err := ps.synced, ps.err
		ps.mu.RUnlock()
		if synced {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("read pauses (bucket %s): not within %s: %w", PauseBucket, timeout, errors.Join(err, ctx.Err()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Blocking returns the pause that holds remediator back on target now,
// or nil; ErrPausesUnknown while the pauses cannot be read.
func (ps *Pauses) Blocking(remediator, target string) (*Pause, error) {
	now := ps.now()
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	if !ps.synced {
		if ps.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPausesUnknown, ps.err)
		}
		return nil, ErrPausesUnknown
	}
	var hit *Pause
	for _, p := range ps.byID {
		if p.Active(now) && p.Covers(remediator, target) && (hit == nil || p.Created.Before(hit.Created)) {
			hit = &p
		}
	}
	return hit, nil
}

// List returns the pauses not yet expired, oldest first.
func (ps *Pauses) List() []Pause {
	now := ps.now()
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	out := make([]Pause, 0, len(ps.byID))
	for _, p := range ps.byID {
		if !p.Expired(now) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Pause) int { return a.Created.Compare(b.Created) })
	return out
}

// Set stores a new pause (its ID, if empty, and Created are filled in).
func (ps *Pauses) Set(ctx context.Context, p *Pause) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.ID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		p.ID = "pause-" + hex.EncodeToString(b)
	}
	p.Created = ps.now().UTC()
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	rev, err := ps.kv.Create(ctx, p.ID, raw)
	if err != nil {
		return fmt.Errorf("store pause %s: %w", p.ID, err)
	}
	ps.waitSeen(ctx, rev)
	return nil
}

// ErrNoPause is returned by Clear for an unknown pause.
var ErrNoPause = errors.New("no such pause")

// Clear removes a pause and returns it.
func (ps *Pauses) Clear(ctx context.Context, id string) (Pause, error) {
	e, err := ps.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Pause{}, fmt.Errorf("%w: %s", ErrNoPause, id)
	}
	if err != nil {
		return Pause{}, fmt.Errorf("read pause %s: %w", id, err)
	}
	var p Pause
	_ = json.Unmarshal(e.Value(), &p)
	if err := ps.kv.Delete(ctx, id, jetstream.LastRevision(e.Revision())); err != nil {
		return Pause{}, fmt.Errorf("clear pause %s: %w", id, err)
	}
	// Delete does not say its revision; the bucket's last one is at least
	// that.
	if st, err := ps.kv.Status(ctx); err == nil {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			ps.waitSeen(ctx, bs.StreamInfo().State.LastSeq)
		}
	}
	return p, nil
}

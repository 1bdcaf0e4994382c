package etcdmember

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"

	etcddet "github.com/selfheal/healer/detectors/etcdmember"
)

// Bucket is the NATS KV bucket of replacement journals.
const Bucket = "healer_etcd_replace"

// EnsureBucket creates the journal bucket, or updates it.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureKV(ctx, js, bus.KV{Bucket: Bucket, Description: "healer: etcd member replacements in progress (etcd.replace-member)", Replicas: replicas, History: 8})
}

// Phases of a replacement, in order: the last step completed.
const (
	phaseBegun    = "begun"
	phaseRemoved  = "removed"
	phaseAdded    = "added"
	phaseStarted  = "started"
	phasePromoted = "promoted"
	phaseVerified = "verified"
)

var phaseOrder = map[string]int{phaseBegun: 0, phaseRemoved: 1, phaseAdded: 2, phaseStarted: 3, phasePromoted: 4, phaseVerified: 5}

// Journal is how far one replacement got. It is written before each step
// is taken and after it completes, so a replacement can be resumed by any
// engine with the same action id.
type Journal struct {
	ActionID string `json:"action_id"`
	Cluster  string `json:"cluster"`
	Member   string `json:"member"`
	// OldID is the failed member; NewID the replacement, once added.
	OldID etcddet.MemberID `json:"old_id"`
	NewID etcddet.MemberID `json:"new_id,omitempty"`
	// PeerURLs and ClientURLs are the failed member's, kept for the
	// replacement.
	PeerURLs   []string  `json:"peer_urls"`
	ClientURLs []string  `json:"client_urls"`
	Phase      string    `json:"phase"`
	Began      time.Time `json:"began"`
	Updated    time.Time `json:"updated"`

	rev uint64
}

// done reports whether the replacement no longer holds other membership
// changes back: the replacement votes.
func (j *Journal) done() bool { return phaseOrder[j.Phase] >= phaseOrder[phasePromoted] }

// staleBegunAfter is how long a journal may stay "begun" before another
// action may take it over. Begun means the quorum was checked and nothing
// changed yet; the step after it (the removal) takes seconds, so a begun
// journal this old was left by an attempt that stopped (settled, or
// refused as unsafe) and must not hold the member's later replacements
// back forever.
const staleBegunAfter = 10 * time.Minute

// abandoned reports whether the journal was left at "begun" long enough
// ago that another action may take it over.
func (j *Journal) abandoned(now time.Time) bool {
	return j.Phase == phaseBegun && now.Sub(j.Updated) > staleBegunAfter
}

// holds reports whether the journal holds other membership changes back.
func (j *Journal) holds(now time.Time) bool { return !j.done() && !j.abandoned(now) }

// reached reports whether the journal is at phase p or later.
func (j *Journal) reached(p string) bool { return phaseOrder[j.Phase] >= phaseOrder[p] }

// journals reads and writes journals, one key per cluster and member.
type journals struct {
	kv jetstream.KeyValue
}

// journalKey is the key of a member's journal. KV keys allow letters,
// digits, '-', '_', '=' and '.'; other bytes of a member name are escaped.
func journalKey(cluster, member string) string {
	var b strings.Builder
	b.WriteString(cluster)
	b.WriteString(".")
	for _, r := range member {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "_%x_", r)
		}
	}
	return b.String()
}

// lockKey is the cluster's membership-change lock: which action is
// changing the cluster's membership now. Member keys cannot collide with
// it: '_' in a member name is escaped.
func lockKey(cluster string) string { return cluster + "._lock" }

// clusterLock is the value of the lock key.
type clusterLock struct {
	ActionID string    `json:"action_id"`
	Member   string    `json:"member"`
	Since    time.Time `json:"since"`
}

// lock takes the cluster's membership-change lock for j's action, by
// compare-and-set, so that two engines replacing two members at the same
// instant cannot both go ahead. A lock whose holder's journal no longer
// holds (done, abandoned, gone) is taken over.
func (js *journals) lock(ctx context.Context, j *Journal) error {
	b, err := json.Marshal(clusterLock{ActionID: j.ActionID, Member: j.Member, Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	key := lockKey(j.Cluster)
	for range 10 {
		if _, err := js.kv.Create(ctx, key, b); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("take the membership lock of %s: %w", j.Cluster, err)
		}
		e, err := js.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the membership lock of %s: %w", j.Cluster, err)
		}
		var l clusterLock
		if err := json.Unmarshal(e.Value(), &l); err == nil {
			if l.ActionID == j.ActionID {
				return nil // ours: a resumed action
			}
			holder, err := js.get(ctx, j.Cluster, l.Member)
			if err != nil {
				return err
			}
			if holder != nil && holder.ActionID == l.ActionID && holder.holds(time.Now()) {
				return fmt.Errorf("membership change in flight: replacement of %s by action %s (phase %q)", l.Member, l.ActionID, holder.Phase)
			}
			// The holder finished or stopped, or began no journal (it
			// refused after locking): the lock is free.
			if holder == nil && time.Since(l.Since) < time.Minute {
				return fmt.Errorf("membership change in flight: action %s is beginning the replacement of %s", l.ActionID, l.Member)
			}
		}
		// An unreadable lock is taken over only through compare-and-set,
		// as any other.
		if _, err := js.kv.Update(ctx, key, b, e.Revision()); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("take over the membership lock of %s: %w", j.Cluster, err)
		}
	}
	return fmt.Errorf("the membership lock of %s is contended", j.Cluster)
}

// unlock releases the cluster's lock if j's action holds it.
func (js *journals) unlock(ctx context.Context, j *Journal) error {
	e, err := js.kv.Get(ctx, lockKey(j.Cluster))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var l clusterLock
	if json.Unmarshal(e.Value(), &l) != nil || l.ActionID != j.ActionID {
		return nil
	}
	err = js.kv.Delete(ctx, lockKey(j.Cluster), jetstream.LastRevision(e.Revision()))
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil // taken over meanwhile
	}
	return err
}

// get returns the member's journal, or nil.
func (js *journals) get(ctx context.Context, cluster, member string) (*Journal, error) {
	e, err := js.kv.Get(ctx, journalKey(cluster, member))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read replacement journal of %s: %w", member, err)
	}
	var j Journal
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, fmt.Errorf("replacement journal of %s: %w", member, err)
	}
	j.rev = e.Revision()
	return &j, nil
}

// begin takes the cluster's membership lock and creates a new journal; it
// fails when another action holds the lock or the member's journal (it got
// there first). A done or abandoned journal is replaced.
func (js *journals) begin(ctx context.Context, j *Journal) (err error) {
	j.Phase, j.Began, j.Updated = phaseBegun, time.Now().UTC(), time.Now().UTC()
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := js.lock(ctx, j); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = js.unlock(context.WithoutCancel(ctx), j)
		}
	}()
	key := journalKey(j.Cluster, j.Member)
	old, err := js.get(ctx, j.Cluster, j.Member)
	if err != nil {
		return err
	}
	if other, err := js.inFlight(ctx, j.Cluster, j.Member); err != nil {
		return err
	} else if other != nil {
		return fmt.Errorf("membership change in flight: replacement of %s by action %s (phase %q)", other.Member, other.ActionID, other.Phase)
	}
	var rev uint64
	switch {
	case old == nil:
		rev, err = js.kv.Create(ctx, key, b)
	case old.done(), old.abandoned(time.Now()):
		rev, err = js.kv.Update(ctx, key, b, old.rev)
	default:
		return fmt.Errorf("replacement of %s by action %s is in flight (phase %s)", j.Member, old.ActionID, old.Phase)
	}
	if err != nil {
		return fmt.Errorf("begin replacement journal of %s: %w", j.Member, err)
	}
	j.rev = rev
	return nil
}

// advance records that the journal reached phase, with compare-and-set:
// another engine writing the same journal makes it fail.
func (js *journals) advance(ctx context.Context, j *Journal, phase string) error {
	next := *j
	next.Phase, next.Updated = phase, time.Now().UTC()
	b, err := json.Marshal(&next)
	if err != nil {
		return err
	}
	rev, err := js.kv.Update(ctx, journalKey(j.Cluster, j.Member), b, j.rev)
	if err != nil {
		return fmt.Errorf("record replacement of %s %s: %w", j.Member, phase, err)
	}
	*j = next
	j.rev = rev
	if j.done() {
		// The replacement votes: other membership changes may go ahead.
		// A lock left behind is taken over by the next action anyway.
		_ = js.unlock(ctx, j)
	}
	return nil
}

// inFlight returns a journal of the cluster, for another member than
// member, whose replacement is not done: two membership changes must never
// overlap.
func (js *journals) inFlight(ctx context.Context, cluster, member string) (*Journal, error) {
	lister, err := js.kv.ListKeysFiltered(ctx, cluster+".*")
	if err != nil {
		return nil, fmt.Errorf("list replacement journals: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		if key == journalKey(cluster, member) || key == lockKey(cluster) {
			continue
		}
		e, err := js.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read replacement journal %s: %w", key, err)
		}
		var j Journal
		if err := json.Unmarshal(e.Value(), &j); err != nil || j.holds(time.Now()) {
			j.Member = strings.TrimPrefix(key, cluster+".")
			return &j, nil // an unreadable journal counts as in flight
		}
	}
	return nil, nil
}

// abandon deletes a journal whose replacement changed nothing yet, and
// releases the cluster's lock.
func (js *journals) abandon(ctx context.Context, j *Journal) error {
	if err := js.kv.Delete(ctx, journalKey(j.Cluster, j.Member), jetstream.LastRevision(j.rev)); err != nil {
		return err
	}
	return js.unlock(ctx, j)
}

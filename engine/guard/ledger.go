package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// BudgetBucket is the NATS KV bucket in which replicas share their holds on
// the blast-radius budget.
const BudgetBucket = "healer_budget"

// ledgerKey is the one key of the ledger: every reservation is a
// compare-and-set of the whole set of holds, so two replicas cannot both
// take the last place in the budget.
const ledgerKey = "holds"

// maxLedgerConflicts is how often a reservation retries after another
// replica wrote the ledger between its read and its write.
const maxLedgerConflicts = 16

// EnsureBudgetBucket creates the budget ledger's bucket, or updates it.
func EnsureBudgetBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureKV(ctx, js, bus.KV{Bucket: BudgetBucket, Description: "healer: the nodes each replica is taking out of service (the shared blast-radius budget)", Replicas: replicas, History: 1})
}

// ledgerDoc is the ledger's value: every replica's holds.
type ledgerDoc struct {
	Holds []ledgerHold `json:"holds"`
}

// ledgerHold is one replica's hold on one node, good until Until. A hold
// that is not renewed (its replica died) lapses by itself; a node its
// action took out of service is then counted by the node watch.
type ledgerHold struct {
	Node   string    `json:"node"`
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// ledger is the shared side of a Budget.
type ledger struct {
	kv     jetstream.KeyValue
	holder string
}

// load reads the ledger and the revision to write it back on; revision 0
// means it does not exist yet.
func (l *ledger) load(ctx context.Context) (ledgerDoc, uint64, error) {
	e, err := l.kv.Get(ctx, ledgerKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ledgerDoc{}, 0, nil
	}
	if err != nil {
		return ledgerDoc{}, 0, fmt.Errorf("read the shared budget ledger: %w", err)
	}
	var d ledgerDoc
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return ledgerDoc{}, 0, fmt.Errorf("decode the shared budget ledger (revision %d): %w", e.Revision(), err)
	}
	return d, e.Revision(), nil
}

// errLedgerConflict means another replica wrote the ledger since it was read.
var errLedgerConflict = errors.New("budget ledger written concurrently")

// store writes the ledger on the revision it was read at.
func (l *ledger) store(ctx context.Context, d ledgerDoc, rev uint64) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = l.kv.Create(ctx, ledgerKey, b)
	} else {
		_, err = l.kv.Update(ctx, ledgerKey, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return errLedgerConflict
	}
	if err != nil {
		return fmt.Errorf("write the shared budget ledger: %w", err)
	}
	return nil
}

// Share makes the budget count the holds of every replica using kv, and
// publish its own there under holder (the engine instance). A reservation
// then reads the ledger, checks the budget with everyone's holds, and
// writes its hold by compare-and-set; when the ledger cannot be read or
// written it fails closed. Holds are renewed every quarter of the
// configured HoldTTL until ctx ends. Call it once, after NewBudget and
// before the first Reserve.
func (b *Budget) Share(ctx context.Context, kv jetstream.KeyValue, holder string) {
	b.shared = &ledger{kv: kv, holder: holder}
	go b.keepHolds(ctx)
}

// keepHolds renews this replica's holds and refreshes the others' until ctx
// ends.
func (b *Budget) keepHolds(ctx context.Context) {
	t := time.NewTicker(b.cfg.HoldTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wctx, cancel := context.WithTimeout(ctx, b.cfg.HoldTTL/4)
		err := b.syncLedger(wctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			b.log.Warn("renewing this replica's holds on the blast-radius budget failed; they lapse if this goes on",
				"hold_ttl", b.cfg.HoldTTL, "err", err)
		}
	}
}

// syncLedger writes this replica's current holds into the ledger, renewed,
// and takes in the others'.
func (b *Budget) syncLedger(ctx context.Context) error {
	b.resMu.Lock()
	defer b.resMu.Unlock()
	for range maxLedgerConflicts {
		doc, rev, err := b.shared.load(ctx)
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.adoptLocked(doc)
		next, changed := b.ledgerLocked(doc)
		b.mu.Unlock()
		if !changed {
			return nil
		}
		err = b.shared.store(ctx, next, rev)
		if !errors.Is(err, errLedgerConflict) {
			return err
		}
	}
	return errLedgerConflict
}

// adoptLocked takes the other replicas' live holds from doc.
func (b *Budget) adoptLocked(doc ledgerDoc) {
	now := b.now()
	clear(b.others)
	for _, h := range doc.Holds {
		if h.Holder == b.shared.holder || !now.Before(h.Until) {
			continue
		}
		if h.Until.After(b.others[h.Node]) {
			b.others[h.Node] = h.Until
		}
	}
}

// ledgerLocked returns doc with the lapsed holds dropped and this replica's
// replaced by its current ones (renewed while their actions run), and
// whether it needs writing: it does while this replica holds anything, and
// when it lists a hold of this replica's or a lapsed one.
func (b *Budget) ledgerLocked(doc ledgerDoc) (next ledgerDoc, changed bool) {
	now := b.now()
	next.Holds = make([]ledgerHold, 0, len(doc.Holds)+len(b.reserved))
	for _, h := range doc.Holds {
		if h.Holder == b.shared.holder || !now.Before(h.Until) {
			changed = true // replaced below, or its replica is gone
			continue
		}
		next.Holds = append(next.Holds, h)
	}
	for node, h := range b.reserved {
		until := h.until
		if h.running > 0 {
			until = now.Add(b.cfg.HoldTTL)
		} else if !now.Before(until) {
			continue
		}
		next.Holds = append(next.Holds, ledgerHold{Node: node, Holder: b.shared.holder, Until: until})
		changed = true
	}
	return next, changed
}

package serve

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/guard"
)

type notices struct{ got []engine.Notice }

func (n *notices) Notify(_ context.Context, x engine.Notice) { n.got = append(n.got, x) }

// A remediator failing until its breaker opens is announced once, with
// its runbook.
func TestBreakerOpeningIsAnnounced(t *testing.T) {
	n := &notices{}
	cfg := guard.BreakerConfig{ConsecutiveFailures: 3, OpenFor: time.Minute}
	b := guard.NewBreakers(cfg, slog.New(slog.DiscardHandler), breakerNotices(t.Context(), n, cfg))
	for range 5 {
		_ = b.Run("node.drain", func() error { return errors.New("eviction API unreachable") })
	}
	if len(n.got) != 1 {
		t.Fatalf("%d notices, want 1: %+v", len(n.got), n.got)
	}
	got := n.got[0]
	if got.Kind != engine.NoticeBreakerOpen || got.Remediator != "node.drain" || got.Runbook != "runbooks/node.drain.md" || !strings.Contains(got.Text, "3 times") {
		t.Fatalf("notice %+v", got)
	}
	// Without a chat, nothing to tell and nothing breaks.
	nb := guard.NewBreakers(cfg, slog.New(slog.DiscardHandler), breakerNotices(t.Context(), nil, cfg))
	for range 3 {
		_ = nb.Run("node.cordon", func() error { return errors.New("x") })
	}
}

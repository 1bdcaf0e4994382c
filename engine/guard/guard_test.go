package guard

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/selfheal/healer/test/testenv"
)

func TestLimiters(t *testing.T) {
	redis := testenv.StartRedis(t)
	rl, err := NewRedis(redis.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Close() })
	for name, l := range map[string]Limiter{"redis": rl, "local": NewLocal()} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			node := Limit{Key: name + ":node/a", Max: 1, Per: 10 * time.Minute}
			cluster := Limit{Key: name + ":cluster", Max: 3, Per: time.Hour}
			for i, want := range []string{"", node.Key} {
				denied, _, err := l.Allow(ctx, []Limit{cluster, node})
				if err != nil {
					t.Fatal(err)
				}
				if got := keyOf(denied); got != want {
					t.Fatalf("call %d: denied %q, want %q", i, got, want)
				}
			}
			// The node limit's denial above must not have used the cluster limit.
			for i := range 2 {
				other := Limit{Key: fmt.Sprintf("%s:node/b%d", name, i), Max: 1, Per: 10 * time.Minute}
				if denied, _, err := l.Allow(ctx, []Limit{other, cluster}); err != nil || denied != nil {
					t.Fatalf("node b%d: denied %v err %v; the cluster limit should have had room", i, keyOf(denied), err)
				}
			}
			other := Limit{Key: name + ":node/c", Max: 1, Per: 10 * time.Minute}
			denied, retry, err := l.Allow(ctx, []Limit{other, cluster})
			if err != nil || keyOf(denied) != cluster.Key {
				t.Fatalf("fourth node: denied %q err %v, want the cluster limit", keyOf(denied), err)
			}
			if retry <= 0 || retry > time.Hour {
				t.Errorf("retry after %s, want within the hour", retry)
			}
		})
	}
}

func keyOf(l *Limit) string {
	if l == nil {
		return ""
	}
	return l.Key
}

func TestRedisDownFailsClosed(t *testing.T) {
	redis := testenv.StartRedis(t)
	rl, err := NewRedis(redis.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Close() })
	redis.Stop()
	_, _, err = rl.Allow(t.Context(), []Limit{{Key: "k", Max: 5, Per: time.Minute}})
	if !errors.Is(err, ErrLimiterUnavailable) {
		t.Fatalf("err = %v, want ErrLimiterUnavailable", err)
	}
}

func TestBreakerOpensAndHalfOpens(t *testing.T) {
	b := NewBreakers(BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Second}, slog.New(slog.DiscardHandler), nil)
	boom := errors.New("boom")
	for range 2 {
		if err := b.Run("r", func() error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
	}
	if err := b.Run("r", func() error { t.Fatal("ran while open"); return nil }); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("err = %v, want ErrBreakerOpen", err)
	}
	if b.State("other").String() != "closed" {
		t.Fatal("breakers are per remediator")
	}
	time.Sleep(1100 * time.Millisecond)
	if err := b.Run("r", func() error { return nil }); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if s := b.State("r").String(); s != "closed" {
		t.Fatalf("after a good probe: %s", s)
	}
}

func TestBudget(t *testing.T) {
	kube := testenv.StartKube(t)
	ctx := t.Context()
	names := make([]string, 20)
	for i := range names {
		names[i] = fmt.Sprintf("n%02d", i)
	}
	testenv.CreateNodes(ctx, t, kube.Client, names...)
	b := NewBudget(BudgetConfig{MinNodes: 1, Percent: 10}, kube.Client, slog.New(slog.DiscardHandler))
	if _, err := b.State(); !errors.Is(err, ErrBudgetUnknown) {
		t.Fatalf("before sync: %v, want ErrBudgetUnknown (fail closed)", err)
	}
	if _, _, err := b.Reserve(t.Context(), "n00"); !errors.Is(err, ErrBudgetUnknown) {
		t.Fatalf("reserve before sync: %v, want ErrBudgetUnknown", err)
	}
	if err := b.Start(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st, _ := b.State()
	if st.TotalNodes != 20 || st.Allowed != 2 || st.OutOfService != 0 {
		t.Fatalf("state %+v, want 20 nodes, 2 allowed", st)
	}
	// A human cordons one node: it counts.
	patch := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := kube.Client.CoreV1().Nodes().Patch(ctx, "n00", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBudget(t, b, func(s BudgetState) bool { return s.OutOfService == 1 })
	// A node goes NotReady: it counts too.
	testenv.SetNodeCondition(ctx, t, kube.Client, "n01", corev1.NodeReady, corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.")
	waitBudget(t, b, func(s BudgetState) bool { return s.OutOfService == 2 })
	// Budget spent: a healthy node cannot be taken, but the NotReady one
	// (already out) can be acted on at no extra cost.
	if _, _, err := b.Reserve(t.Context(), "n05"); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("reserve n05: %v, want ErrBudgetExhausted", err)
	}
	r, _, err := b.Reserve(t.Context(), "n01")
	if err != nil {
		t.Fatalf("reserve n01 (already out): %v", err)
	}
	r.Release(t.Context(), true)

	// Failure domains come from the zone label.
	for _, n := range []string{"n10", "n11", "n12"} {
		p := []byte(`{"metadata":{"labels":{"topology.kubernetes.io/zone":"eu-1a"}}}`)
		if _, err := kube.Client.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, p, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitBudget(t, b, func(BudgetState) bool {
		s, _ := b.StateFor("n10")
		return s.Zone == "eu-1a" && s.ZoneNodes == 3 && s.ZoneAllowed == 1 && s.ZoneOutOfService == 0
	})
}

func waitBudget(t *testing.T, b *Budget, cond func(BudgetState) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := b.State()
		if err == nil && cond(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget state %+v (err %v) never met the condition", s, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newTestBudget(cfg BudgetConfig) *Budget {
	cfg.ApplyDefaults()
	return &Budget{cfg: cfg, out: map[string]bool{}, reserved: map[string]*hold{}, others: map[string]time.Time{}, zoneOf: map[string]string{},
		zones: map[string]*zoneCount{}, now: time.Now, synced: func() bool { return true }}
}

// TestBudgetNeverExceeded is a property test: for random clusters spread
// over random zones, random sets of failing nodes and random (concurrent)
// arrival orders, reservations never take more nodes out of service than
// the cluster budget or any zone's budget allows.
func TestBudgetNeverExceeded(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		total := 1 + rng.IntN(200)
		zones := 1 + rng.IntN(4)
		b := newTestBudget(BudgetConfig{MinNodes: rng.IntN(3), Percent: rng.IntN(40), ZonePercent: rng.IntN(60)})
		cfg := b.cfg
		down := 0
		zoneTotal, zoneDown := map[string]int{}, map[string]int{}
		for i := range total {
			o := rng.IntN(10) == 0 // some nodes already out, by anyone
			z := fmt.Sprint("z", rng.IntN(zones))
			b.track(fmt.Sprint(i), z, o)
			zoneTotal[z]++
			if o {
				down++
				zoneDown[z]++
			}
		}
		allowed := max(cfg.MinNodes, total*cfg.Percent/100)
		failing := rng.Perm(total)[:rng.IntN(total)+1]
		results := make(chan bool, len(failing))
		for _, n := range failing {
			go func() {
				_, _, err := b.Reserve(t.Context(), fmt.Sprint(n))
				results <- err == nil
			}()
		}
		for range failing {
			<-results
		}
		newlyOut, zoneNew := 0, map[string]int{}
		for name := range b.reserved {
			if !b.out[name] {
				newlyOut++
				zoneNew[b.zoneOf[name]]++
			}
		}
		if newlyOut > 0 && down+newlyOut > allowed {
			t.Fatalf("round %d: %d nodes, %d already out, allowed %d, %d more taken out", round, total, down, allowed, newlyOut)
		}
		for z, n := range zoneNew {
			zAllowed := max(cfg.ZoneMinNodes, zoneTotal[z]*cfg.ZonePercent/100)
			if zoneDown[z]+n > zAllowed {
				t.Fatalf("round %d: zone %s: %d nodes, %d already out, allowed %d, %d more taken out", round, z, zoneTotal[z], zoneDown[z], zAllowed, n)
			}
		}
		if down < allowed && newlyOut == 0 && anyZoneHasRoom(b, failing, zoneTotal, zoneDown) {
			t.Fatalf("round %d: budget had room (%d out of %d allowed) but nothing was allowed", round, down, allowed)
		}
	}
}

func anyZoneHasRoom(b *Budget, nodes []int, zoneTotal, zoneDown map[string]int) bool {
	for _, n := range nodes {
		z := b.zoneOf[fmt.Sprint(n)]
		if zoneDown[z] < max(b.cfg.ZoneMinNodes, zoneTotal[z]*b.cfg.ZonePercent/100) && !b.out[fmt.Sprint(n)] {
			return true
		}
	}
	return false
}

func TestBudgetHoldsANodeUntilItsLastActionEnds(t *testing.T) {
	b := newTestBudget(BudgetConfig{MinNodes: 1, Linger: time.Minute})
	for i := range 10 {
		b.track(fmt.Sprint("n", i), "", false)
	}
	if _, _, err := b.Reserve(t.Context(), "not-a-node"); !errors.Is(err, ErrBudgetUnknown) {
		t.Fatalf("a node the watch does not know: %v, want ErrBudgetUnknown", err)
	}
	first, _, err := b.Reserve(t.Context(), "n0")
	if err != nil {
		t.Fatal(err)
	}
	second, _, err := b.Reserve(t.Context(), "n0") // another problem on the same node
	if err != nil {
		t.Fatalf("second action on the held node: %v", err)
	}
	first.Release(t.Context(), false)
	if _, _, err := b.Reserve(t.Context(), "n1"); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("n0 is still being acted on, yet n1 got in: %v", err)
	}
	second.Release(t.Context(), true) // took it out; the watch has not shown it yet
	if _, _, err := b.Reserve(t.Context(), "n1"); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("n0 lingers until the watch shows it, yet n1 got in: %v", err)
	}
	b.observe(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n0"}, Spec: corev1.NodeSpec{Unschedulable: true}})
	if st, _ := b.State(); st.OutOfService != 1 || st.InFlight != 0 {
		t.Fatalf("after the watch caught up: %+v", st)
	}
}

func TestRedisURLPasswordStaysOutOfErrors(t *testing.T) {
	_, err := NewRedis("redis://:s3cret-password@redis:notaport/0", "")
	if err == nil {
		t.Fatal("bad URL accepted")
	}
	if strings.Contains(err.Error(), "s3cret-password") {
		t.Fatalf("error leaks the password: %v", err)
	}
	r, err := NewRedis("redis://:s3cret-password@127.0.0.1:6390/0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if d := r.Describe(); strings.Contains(d, "s3cret") {
		t.Fatalf("Describe leaks the password: %s", d)
	}
}

// TestBudgetSyncedMeansCounted: the budget is known only once every node
// of the first list is counted, not when the informer's cache holds them
// (the counts lag it). Run on client-go's fake clientset: the property is
// of the informer plumbing, and 20,000 nodes make the lag show.
func TestBudgetSyncedMeansCounted(t *testing.T) {
	const total, cordoned = 20000, 2000
	objs := make([]runtime.Object, total)
	for i := range objs {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%05d", i)},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
		n.Spec.Unschedulable = i < cordoned
		objs[i] = n
	}
	b := NewBudget(BudgetConfig{Percent: 20}, fake.NewClientset(objs...), slog.New(slog.DiscardHandler))
	if err := b.Start(t.Context(), time.Minute); err != nil {
		t.Fatal(err)
	}
	st, err := b.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalNodes != total || st.OutOfService != cordoned {
		t.Fatalf("just after sync: %d nodes, %d out of service; want %d and %d", st.TotalNodes, st.OutOfService, total, cordoned)
	}
}

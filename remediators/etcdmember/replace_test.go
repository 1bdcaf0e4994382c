package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/action"
	etcddet "github.com/selfheal/healer/detectors/etcdmember"
	"github.com/selfheal/healer/test/testenv"
)

func member(id etcddet.MemberID, healthy bool) etcddet.Member {
	return etcddet.Member{ID: id, Name: fmt.Sprintf("m%d", id), Reachable: healthy, Healthy: healthy, Leader: 1, RaftTerm: 2,
		PeerURLs: []string{fmt.Sprintf("http://10.0.0.%d:2380", id)}, ClientURLs: []string{fmt.Sprintf("http://10.0.0.%d:2379", id)}}
}

func TestCheckReplace(t *testing.T) {
	snap := func(ms ...etcddet.Member) *etcddet.Snapshot { return &etcddet.Snapshot{Members: ms} }
	learner := func(m etcddet.Member) etcddet.Member { m.IsLearner = true; return m }
	unstarted := func(id etcddet.MemberID) etcddet.Member {
		return etcddet.Member{ID: id, PeerURLs: []string{"http://10.0.0.9:2380"}}
	}
	sick := func(m etcddet.Member) etcddet.Member { m.Reachable = true; m.Healthy = false; return m }
	noLeader := func(s *etcddet.Snapshot) *etcddet.Snapshot {
		for i := range s.Members {
			s.Members[i].Leader = 0
		}
		return s
	}
	tests := []struct {
		name string
		snap *etcddet.Snapshot
		want error  // nil, ErrNotNeeded or ErrUnsafe
		why  string // part of the message
	}{
		{"one of three lost: safe", snap(member(1, true), member(2, true), member(3, false)), nil, ""},
		{"two of five lost: safe", snap(member(1, true), member(2, true), member(3, false), member(4, true), member(5, false)), nil, ""},
		{"two of three lost: quorum at stake", snap(member(1, true), member(2, false), member(3, false)), action.ErrUnsafe, "would leave 1 healthy of 2 voters"},
		{"three of five lost", snap(member(1, true), member(2, false), member(3, false), member(4, true), member(5, false)), action.ErrUnsafe, "would leave 2 healthy of 4 voters"},
		{"two voters only", snap(member(1, true), member(3, false)), action.ErrUnsafe, "has 2 voters"},
		{"a learner is in flight", snap(member(1, true), member(2, true), member(3, false), learner(member(4, true))), action.ErrUnsafe, "m4 is a learner"},
		{"a member added but never started", snap(member(1, true), member(2, true), member(3, false), unstarted(9)), action.ErrUnsafe, "never started"},
		{"no leader", noLeader(snap(member(1, true), member(2, true), member(3, false))), action.ErrUnsafe, "no member knows a leader"},
		{"the member answers again", snap(member(1, true), member(2, true), member(3, true)), action.ErrNotNeeded, "answers again"},
		{"reachable but unhealthy is not replaced", snap(member(1, true), member(2, true), sick(member(3, false))), action.ErrNotNeeded, "answers again"},
		{"the member is gone", snap(member(1, true), member(2, true), member(4, true)), action.ErrNotNeeded, "no longer in the cluster"},
		{"the target is a learner", snap(member(1, true), member(2, true), member(4, true), learner(member(3, false))), action.ErrUnsafe, "is a learner"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkReplace(tc.snap, "m3", 3)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("checkReplace = %v, want nil", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("checkReplace = %v, want %v", err, tc.want)
			case tc.want != nil && !strings.Contains(err.Error(), tc.why):
				t.Fatalf("checkReplace = %q, want it to say %q", err, tc.why)
			}
		})
	}
	t.Run("a member renamed since the event", func(t *testing.T) {
		_, err := checkReplace(snap(member(1, true), member(2, true), member(3, false)), "other", 3)
		if !errors.Is(err, action.ErrUnsafe) {
			t.Fatalf("checkReplace = %v, want ErrUnsafe", err)
		}
	})
}

func TestValidate(t *testing.T) {
	r, err := New(Config{}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		params map[string]any
		ok     bool
	}{
		{map[string]any{"member_id": "8e9e05c52164694d"}, true},
		{map[string]any{}, false},
		{map[string]any{"member_id": "not-hex"}, false},
		{map[string]any{"member_id": "0"}, false},
		{map[string]any{"member_id": 12}, false},
		{map[string]any{"member_id": "ab", "force": true}, false},
	} {
		err := r.Validate(tc.params)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, action.ErrInvalidParams)) {
			t.Errorf("Validate(%v) = %v, want ok %v", tc.params, err, tc.ok)
		}
	}
	// Unconfigured, it refuses to act.
	if err := r.Check(t.Context(), action.Request{ID: "a", Target: "etcd/m1", Params: map[string]any{"member_id": "ab"}}); !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("unconfigured Check = %v, want ErrUnsafe", err)
	}
}

// waitUnreachable waits until the detector's prober sees member name down.
func waitUnreachable(t *testing.T, r *Replace, name string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		s, err := r.prober.Probe(t.Context())
		if err == nil {
			for _, m := range s.Members {
				if m.Name == name && !m.Reachable {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("member %s still reachable", name)
}

// A killed follower is replaced: same name and peer URL, a new id, a
// fresh data dir (the old one kept aside), every key written before still
// readable from it, and each step reported in order.
func TestReplaceKilledMember(t *testing.T) {
	c := startCluster(t, 3)
	cli := client(t, c.Endpoints()...)
	ctx := t.Context()
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%03d", i), strings.Repeat("v", 100)); err != nil {
			t.Fatal(err)
		}
	}
	lead, err := c.Leader(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	victim := (lead + 1) % 3
	name := c.Member(victim).Spec.Name
	oldID := memberID(t, cli, name)
	r := newReplace(t, c, journalBucket(t), localProvisioner(t, c))
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	waitUnreachable(t, r, name)

	req := action.Request{ID: "act-1", Target: "etcd/" + name, Params: map[string]any{"member_id": oldID.String()}}
	if err := r.Check(ctx, req); err != nil {
		t.Fatalf("Check = %v, want nil", err)
	}
	rec := &recorder{}
	res, err := r.Act(ctx, req, rec.progress)
	if err != nil {
		t.Fatalf("Act: %v (steps %v)", err, rec.Steps())
	}
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.Verify(vctx, req); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.Changed {
		t.Fatalf("Act result %+v: want Changed", res)
	}
	newID := memberID(t, cli, name)
	if newID == oldID {
		t.Fatalf("member %s still has the old id %s", name, oldID)
	}
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range resp.Members {
		if etcddet.MemberID(m.ID) == newID && (m.IsLearner || !slices.Equal(m.PeerURLs, []string{c.Member(victim).Spec.PeerURL})) {
			t.Fatalf("replacement %+v: want a voter with peer URL %s", m, c.Member(victim).Spec.PeerURL)
		}
	}
	if len(resp.Members) != 3 {
		t.Fatalf("%d members, want 3", len(resp.Members))
	}
	if got := asideDirs(t, dataDirOf(c, victim)); len(got) != 1 {
		t.Fatalf("old data dirs kept aside: %v, want one", got)
	}
	one := client(t, c.Member(victim).Spec.ClientURL)
	got, err := one.Get(ctx, "k", clientv3WithPrefix()...)
	if err != nil || got.Count != 50 {
		t.Fatalf("replacement reads %v keys (%v), want 50", got, err)
	}
	steps := compact(rec.Steps())
	want := []string{"quorum checked", "member removed", "learner added", "provision", "member started", "promoted"}
	if !testenv.IsSubsequence(want, steps) {
		t.Fatalf("progress steps %v, want in order %v", steps, want)
	}
	// Done: the same request again needs nothing.
	if err := r.Check(ctx, action.Request{ID: "act-2", Target: req.Target, Params: req.Params}); !errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("Check after replacement = %v, want ErrNotNeeded", err)
	}
	// A journal begun by an action that changed nothing yet (healer died
	// right after opening it) is closed when its member turns out healthy,
	// so it holds no later replacement back.
	j := &Journal{ActionID: "act-3", Cluster: "test", Member: name, OldID: newID, PeerURLs: []string{c.Member(victim).Spec.PeerURL}, ClientURLs: []string{c.Member(victim).Spec.ClientURL}}
	if err := r.journals.begin(ctx, j); err != nil {
		t.Fatal(err)
	}
	req3 := action.Request{ID: "act-3", Target: req.Target, Params: map[string]any{"member_id": newID.String()}}
	if err := r.Check(ctx, req3); !errors.Is(err, action.ErrNotNeeded) {
		t.Fatalf("Check of a begun journal whose member is healthy = %v, want ErrNotNeeded", err)
	}
	if left, err := r.journals.get(ctx, "test", name); err != nil || left != nil {
		t.Fatalf("journal after that: %+v, %v; want it gone", left, err)
	}
}

// Killing two of three loses quorum: Check refuses, and nothing is
// removed.
func TestRefusesWhenQuorumWouldBeLost(t *testing.T) {
	c := startCluster(t, 3)
	cli := client(t, c.Endpoints()...)
	lead, err := c.Leader(t.Context(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a, b := (lead+1)%3, (lead+2)%3
	name := c.Member(a).Spec.Name
	id := memberID(t, cli, name)
	r := newReplace(t, c, journalBucket(t), localProvisioner(t, c))
	for _, i := range []int{a, b} {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	req := action.Request{ID: "act-q", Target: "etcd/" + name, Params: map[string]any{"member_id": id.String()}}
	err = r.Check(t.Context(), req)
	if !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("Check with 2 of 3 down = %v, want ErrUnsafe", err)
	}
	t.Logf("refused: %v", err)
	if _, err := r.Act(t.Context(), req, (&recorder{}).progress); !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("Act with 2 of 3 down = %v, want ErrUnsafe", err)
	}
	survivor := client(t, c.Member(lead).Spec.ClientURL)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	resp, err := survivor.MemberList(ctx, clientv3WithSerializable()...)
	if err != nil || len(resp.Members) != 3 {
		t.Fatalf("member list %v, %v: want all 3 members still there", resp, err)
	}
}

// A replacement interrupted after the learner was added (the host went
// away, or healer was killed) is resumed by the same action from its
// journal, and a different action is refused meanwhile.
func TestResumeAfterInterruption(t *testing.T) {
	c := startCluster(t, 3)
	cli := client(t, c.Endpoints()...)
	lead, err := c.Leader(t.Context(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	victim := (lead + 2) % 3
	name := c.Member(victim).Spec.Name
	oldID := memberID(t, cli, name)
	prov := &failingProvisioner{next: localProvisioner(t, c), fails: 1}
	kv := journalBucket(t)
	r := newReplace(t, c, kv, prov)
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	waitUnreachable(t, r, name)
	req := action.Request{ID: "act-r", Target: "etcd/" + name, Params: map[string]any{"member_id": oldID.String()}}
	if err := r.Check(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Act(t.Context(), req, (&recorder{}).progress); err == nil {
		t.Fatal("first Act succeeded; the provisioner was to fail")
	}
	// Another action must not start a second change now.
	other := action.Request{ID: "act-other", Target: req.Target, Params: req.Params}
	if err := r.Check(t.Context(), other); !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("Check of another action mid-replacement = %v, want ErrUnsafe (in flight)", err)
	}
	// Nor may another member's replacement overlap with this one.
	otherName := c.Member(lead).Spec.Name
	otherReq := action.Request{ID: "act-b", Target: "etcd/" + otherName, Params: map[string]any{"member_id": memberID(t, cli, otherName).String()}}
	if err := r.Check(t.Context(), otherReq); !errors.Is(err, action.ErrUnsafe) || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("Check of another member mid-replacement = %v, want ErrUnsafe (in flight)", err)
	}
	// A new remediator (healer restarted) with the same journal resumes.
	r2 := newReplace(t, c, kv, prov)
	if err := r2.Check(t.Context(), req); err != nil {
		t.Fatalf("Check on resume = %v", err)
	}
	rec := &recorder{}
	if _, err := r2.Act(t.Context(), req, rec.progress); err != nil {
		t.Fatalf("resumed Act: %v (steps %v)", err, rec.Steps())
	}
	vctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := r2.Verify(vctx, req); err != nil {
		t.Fatal(err)
	}
	steps := compact(rec.Steps())
	if steps[0] != "resume" || slices.Contains(steps, "member removed") || slices.Contains(steps, "learner added") {
		t.Fatalf("resumed steps %v: want resume, then only provision onwards", steps)
	}
	resp, err := cli.MemberList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Members) != 3 {
		t.Fatalf("%d members after resume, want 3 (one learner only was ever added)", len(resp.Members))
	}
}

func compact(steps []string) []string {
	var out []string
	for _, s := range steps {
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

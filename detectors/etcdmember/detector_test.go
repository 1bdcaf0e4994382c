package etcdmember

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/selfheal/healer/bus"
)

// running is a detector running against a test cluster.
type running struct {
	rec *recorder
	mu  sync.Mutex
	// last is the last successful snapshot.
	last  Snapshot
	polls int
}

// Last returns the last successful snapshot and the number of polls.
func (r *running) Last() (Snapshot, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.polls
}

// runDetector runs a detector with cfg until the test ends.
func runDetector(t *testing.T, cfg Config) *running {
	t.Helper()
	r := &running{rec: newRecorder()}
	d, err := New(cfg, r.rec, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	d.afterPoll = func(s Snapshot, _ []Transition) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.polls++
		if !s.Time.IsZero() {
			r.last = s
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
	})
	return r
}

// waitSnapshot waits for a snapshot that satisfies ok.
func (r *running) waitSnapshot(t *testing.T, timeout time.Duration, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, _ := r.Last()
		if !s.Time.IsZero() && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot with %s within %s; last: %+v", what, timeout, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allHealthy(n int) func(Snapshot) bool {
	return func(s Snapshot) bool {
		q := s.Quorum()
		return q.Voters == n && q.HealthyVoters == n && q.LeaderID != 0
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func decodeData(t *testing.T, e *bus.Event) EventData {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Fatalf("event %s %s: %v", e.Type, e.Subject, err)
	}
	var d EventData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		t.Fatalf("decode data of %s: %v", e.Type, err)
	}
	return d
}

func is(typ, status, subject string) func(*bus.Event) bool {
	return func(e *bus.Event) bool { return e.Type == typ && e.Status == status && e.Subject == subject }
}

// A follower stopped is lost only after LostAfter, with the quorum view of
// a three-member cluster with two healthy voters, and quorum is at risk;
// restarted from its data directory, both resolve.
func TestDetectorMemberLostAndBack(t *testing.T) {
	c := startEtcdCluster(t, 3, clusterOptions{})
	cfg := c.Config()
	r := runDetector(t, cfg)
	before := r.waitSnapshot(t, 10*time.Second, "three healthy voters and a leader", allHealthy(3))
	leader := c.Leader(t)
	victim := (leader + 1) % 3
	m := c.Members[victim]
	id := c.ID(t, victim)

	stoppedAt := time.Now()
	c.Stop(victim)
	lost, i := r.rec.waitFor(t, 0, cfg.LostAfter+10*time.Second, "EtcdMemberLost firing", is(TypeMemberLost, bus.StatusFiring, "etcd/"+m.Name))
	if waited := time.Since(stoppedAt); waited < cfg.LostAfter {
		t.Errorf("EtcdMemberLost %s after the stop; want at least lostAfter %s", waited, cfg.LostAfter)
	}
	d := decodeData(t, lost)
	wantQ := Quorum{Voters: 3, HealthyVoters: 2, Learners: 0, Quorum: 2, LeaderID: before.Quorum().LeaderID, LeaderName: c.Members[leader].Name}
	if q := d.Quorum; q.Voters != wantQ.Voters || q.HealthyVoters != wantQ.HealthyVoters || q.Learners != 0 || q.Quorum != 2 ||
		q.LeaderID != wantQ.LeaderID || q.LeaderName != wantQ.LeaderName {
		t.Errorf("quorum = %+v, want %+v", q, wantQ)
	}
	if d.Cluster != "test" || d.Member == nil || d.Member.ID != id || d.Member.Name != m.Name ||
		!slices.Equal(d.Member.PeerURLs, []string{m.PeerURL}) || !slices.Equal(d.Member.ClientURLs, []string{m.ClientURL}) ||
		d.Member.IsLearner || d.Member.Reachable {
		t.Errorf("data = %+v, member %+v; want member %s (%s) %s %s, unreachable", d, d.Member, id, m.Name, m.PeerURL, m.ClientURL)
	}
	if d.Error == "" || d.LostAfter != "2s" || d.Since.Before(stoppedAt) {
		t.Errorf("error %q, lost_after %q, since %s (stopped at %s)", d.Error, d.LostAfter, d.Since, stoppedAt)
	}
	if lost.Key != "test/"+id.String()+":lost" {
		t.Errorf("key = %q", lost.Key)
	}
	risk, _ := r.rec.waitFor(t, 0, 5*time.Second, "EtcdQuorumAtRisk firing", is(TypeQuorumAtRisk, bus.StatusFiring, SubjectCluster))
	if q := decodeData(t, risk).Quorum; q.Voters != 3 || q.HealthyVoters != 2 || q.Quorum != 2 {
		t.Errorf("quorum at risk: quorum = %+v", q)
	}

	c.Restart(t, victim)
	back, _ := r.rec.waitFor(t, i, 15*time.Second, "EtcdMemberLost resolved", is(TypeMemberLost, bus.StatusResolved, "etcd/"+m.Name))
	if back.Key != lost.Key || back.ID == lost.ID {
		t.Errorf("resolved key %q id %s; firing key %q id %s: want the same key, another id", back.Key, back.ID, lost.Key, lost.ID)
	}
	bd := decodeData(t, back)
	if bd.Removed || bd.Member == nil || !bd.Member.Reachable || !bd.Since.Equal(d.Since) {
		t.Errorf("resolved data = %+v, member %+v", bd, bd.Member)
	}
	r.rec.waitFor(t, 0, 10*time.Second, "EtcdQuorumAtRisk resolved", is(TypeQuorumAtRisk, bus.StatusResolved, SubjectCluster))

	for _, e := range r.rec.Events() {
		if e.Type == TypeLeaderChanged {
			t.Errorf("leader changed although only a follower stopped: %s", e.Data)
		}
		if e.Type == TypeMemberLost && e.Subject != "etcd/"+m.Name {
			t.Errorf("member lost for %s, which kept running", e.Subject)
		}
	}
}

// Stopping the leader makes another member leader: EtcdLeaderChanged names
// both.
func TestDetectorLeaderChanged(t *testing.T) {
	c := startEtcdCluster(t, 3, clusterOptions{})
	r := runDetector(t, c.Config())
	before := r.waitSnapshot(t, 10*time.Second, "three healthy voters and a leader", allHealthy(3))
	old := before.Quorum()
	leader := c.Leader(t)
	if c.ID(t, leader) != old.LeaderID {
		t.Fatalf("detector sees leader %s, the cluster %s", old.LeaderID, c.ID(t, leader))
	}
	c.Stop(leader)
	e, _ := r.rec.waitFor(t, 0, 15*time.Second, "EtcdLeaderChanged", is(TypeLeaderChanged, bus.StatusFiring, SubjectCluster))
	d := decodeData(t, e)
	if d.PreviousLeaderID != old.LeaderID || d.PreviousLeaderName != c.Members[leader].Name {
		t.Errorf("previous leader %s (%s), want %s (%s)", d.PreviousLeaderID, d.PreviousLeaderName, old.LeaderID, c.Members[leader].Name)
	}
	if d.Quorum.LeaderID == 0 || d.Quorum.LeaderID == old.LeaderID || d.Quorum.LeaderName == "" || d.Quorum.RaftTerm <= old.RaftTerm {
		t.Errorf("new leader %s (%s) term %d; old %s term %d", d.Quorum.LeaderID, d.Quorum.LeaderName, d.Quorum.RaftTerm, old.LeaderID, old.RaftTerm)
	}
	if d.Quorum.Voters != 3 || len(d.Members) != 3 {
		t.Errorf("quorum %+v with %d members, want 3 voters", d.Quorum, len(d.Members))
	}
	if e.Key != "test:leader" {
		t.Errorf("key = %q", e.Key)
	}
}

// A backend quota that writes exhaust raises NOSPACE for the members;
// disarming it resolves the events.
func TestDetectorAlarm(t *testing.T) {
	c := startEtcdCluster(t, 3, clusterOptions{QuotaBackendBytes: 1 << 20})
	r := runDetector(t, c.Config())
	r.waitSnapshot(t, 10*time.Second, "three healthy voters and a leader", allHealthy(3))
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	value := string(make([]byte, 64<<10))
	for i := 0; ; i++ {
		_, err := cli.Put(ctx, "fill/"+string(rune('a'+i%26))+time.Now().String(), value)
		if err == rpctypes.ErrNoSpace { //nolint:errorlint // the client returns the sentinel itself
			break
		}
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if i > 1000 {
			t.Fatal("1000 puts of 64 KiB and no NOSPACE under a 1 MiB quota")
		}
	}
	e, _ := r.rec.waitFor(t, 0, 10*time.Second, "EtcdAlarm NOSPACE firing", func(e *bus.Event) bool {
		return e.Type == TypeAlarm && e.Status == bus.StatusFiring
	})
	d := decodeData(t, e)
	if d.Alarm != AlarmNoSpace || d.Member == nil || e.Subject != "etcd/"+d.Member.Name || d.Quorum.Voters != 3 {
		t.Errorf("alarm event %s: data %+v member %+v", e.Subject, d, d.Member)
	}

	alarms, err := cli.AlarmList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alarms.Alarms {
		if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm}); err != nil {
			t.Fatalf("disarm %s of %x: %v", a.Alarm, a.MemberID, err)
		}
	}
	back, _ := r.rec.waitFor(t, 0, 10*time.Second, "EtcdAlarm resolved", func(x *bus.Event) bool {
		return x.Type == TypeAlarm && x.Status == bus.StatusResolved && x.Key == e.Key
	})
	if back.ID == e.ID || back.Subject != e.Subject {
		t.Errorf("resolved %s %s, firing %s %s", back.ID, back.Subject, e.ID, e.Subject)
	}

	// CORRUPT cannot be made by writing; activate it as etcd's corruption
	// check would.
	id := c.ID(t, 0)
	maint := pb.NewMaintenanceClient(cli.ActiveConnection())
	if _, err := maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: uint64(id), Alarm: pb.AlarmType_CORRUPT}); err != nil {
		t.Fatalf("activate CORRUPT: %v", err)
	}
	corrupt, _ := r.rec.waitFor(t, 0, 10*time.Second, "EtcdAlarm CORRUPT firing", func(e *bus.Event) bool {
		return e.Type == TypeAlarm && e.Status == bus.StatusFiring && e.Key == "test/"+id.String()+":alarm:CORRUPT"
	})
	if d := decodeData(t, corrupt); d.Alarm != AlarmCorrupt || d.Member.Name != c.Members[0].Name {
		t.Errorf("CORRUPT event data %+v member %+v", d, d.Member)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: uint64(id), Alarm: pb.AlarmType_CORRUPT}); err != nil {
		t.Fatalf("disarm CORRUPT: %v", err)
	}
	r.rec.waitFor(t, 0, 10*time.Second, "EtcdAlarm CORRUPT resolved", func(x *bus.Event) bool {
		return x.Type == TypeAlarm && x.Status == bus.StatusResolved && x.Key == corrupt.Key
	})
}

// A cluster that no endpoint answers says nothing about its members: it
// may be healer's network or credentials. The member is not lost however
// long it lasts, and the detector keeps polling.
func TestDetectorUnreachableClusterConcludesNothing(t *testing.T) {
	c := startEtcdCluster(t, 1, clusterOptions{})
	cfg := c.Config()
	r := runDetector(t, cfg)
	r.waitSnapshot(t, 10*time.Second, "one healthy voter", allHealthy(1))
	c.Stop(0)
	stopped := time.Now()
	_, before := r.Last()
	for {
		_, polls := r.Last()
		if polls >= before+2 && time.Since(stopped) > cfg.LostAfter+time.Second {
			break
		}
		if time.Since(stopped) > 15*time.Second {
			t.Fatalf("%d polls in %s while the cluster was down; the detector stopped polling", polls-before, time.Since(stopped))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if evs := r.rec.Events(); len(evs) != 0 {
		t.Errorf("events while the cluster was unreachable: %+v", evs)
	}
	c.Restart(t, 0)
	r.waitSnapshot(t, 10*time.Second, "the member back", func(s Snapshot) bool { return s.Time.After(time.Now().Add(-time.Second)) && allHealthy(1)(s) })
	if evs := r.rec.Events(); len(evs) != 0 {
		t.Errorf("events after the cluster came back: %+v", evs)
	}
}

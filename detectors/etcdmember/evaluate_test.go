package etcdmember

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

// Member builders for the table tests: ids are small numbers, names "mN".
func up(id MemberID, leader MemberID) Member {
	return Member{ID: id, Name: fmt.Sprintf("m%d", id), Reachable: true, Healthy: true, Leader: leader, RaftTerm: 2,
		PeerURLs: []string{fmt.Sprintf("http://10.0.0.%d:2380", id)}, ClientURLs: []string{fmt.Sprintf("http://10.0.0.%d:2379", id)}}
}

func down(id MemberID) Member {
	m := up(id, 0)
	m.Reachable, m.Healthy, m.StatusError = false, false, "connection refused"
	return m
}

func sick(id MemberID, leader MemberID) Member {
	m := up(id, leader)
	m.Healthy, m.HealthError = false, "context deadline exceeded"
	return m
}

func withID(m Member, id MemberID) Member { m.ID = id; return m }

func learner(m Member) Member { m.IsLearner = true; return m }

func withTerm(m Member, term uint64) Member { m.RaftTerm = term; return m }

// describe renders a transition for comparison: "type status subject",
// then what matters for its type.
func describe(tr Transition) string {
	d := tr.Data
	q := d.Quorum
	s := fmt.Sprintf("%s %s %s since=%s q=%d/%d/%d/l%d", tr.Type, tr.Status, tr.Subject, d.Since.Sub(t0),
		q.HealthyVoters, q.Voters, q.Quorum, q.Learners)
	switch tr.Type {
	case TypeMemberLost:
		if d.Removed {
			s += " removed"
		}
		if d.ReplacedBy != 0 {
			s += " replaced_by=" + d.ReplacedBy.String()
		}
		if d.Error != "" {
			s += " err"
		}
	case TypeAlarm:
		s += " " + d.Alarm
	case TypeLeaderChanged:
		s += fmt.Sprintf(" %s(%s)->%s(%s)", d.PreviousLeaderID, d.PreviousLeaderName, q.LeaderID, q.LeaderName)
	case TypeQuorumAtRisk:
		if d.QuorumLost {
			s += " lost"
		}
	}
	return s
}

func TestEvaluator(t *testing.T) {
	const lostAfter = time.Minute
	type round struct {
		at      time.Duration // since t0
		members []Member
		alarms  []Alarm // nil with alarmsUnknown false: none active
		unknown bool    // the alarm list failed
		want    []string
	}
	ms := func(m ...Member) []Member { return m }
	five := func(first Member) []Member { return ms(first, up(2, 2), up(3, 2), up(4, 2), up(5, 2)) }
	tests := []struct {
		name   string
		rounds []round
	}{
		{"a member is lost only after lostAfter unreachable, once, and resolved when it answers", []round{
			{0, five(up(1, 2)), nil, false, nil},
			{10 * time.Second, five(down(1)), nil, false, nil},
			{40 * time.Second, five(down(1)), nil, false, nil},
			{69 * time.Second, five(down(1)), nil, false, nil},
			{70 * time.Second, five(down(1)), nil, false, []string{"EtcdMemberLost firing etcd/m1 since=10s q=4/5/3/l0 err"}},
			{80 * time.Second, five(down(1)), nil, false, nil},
			{90 * time.Second, five(sick(1, 2)), nil, false, []string{"EtcdMemberLost resolved etcd/m1 since=10s q=4/5/3/l0"}},
			{100 * time.Second, five(up(1, 2)), nil, false, nil},
		}},
		{"an answer before lostAfter starts the wait again", []round{
			{0, five(down(1)), nil, false, nil},
			{50 * time.Second, five(up(1, 2)), nil, false, nil},
			{55 * time.Second, five(down(1)), nil, false, nil},
			{110 * time.Second, five(down(1)), nil, false, nil},
			{115 * time.Second, five(down(1)), nil, false, []string{"EtcdMemberLost firing etcd/m1 since=55s q=4/5/3/l0 err"}},
		}},
		{"reachable but unhealthy is not lost", []round{
			{0, five(sick(1, 0)), nil, false, nil},
			{2 * time.Minute, five(sick(1, 0)), nil, false, nil},
		}},
		{"a lost member removed from the cluster resolves as removed; a pending one is forgotten", []round{
			{0, ms(down(1), up(2, 2), up(3, 2), up(4, 2), down(5)), nil, false, nil},
			{30 * time.Second, ms(down(1), up(2, 2), up(3, 2), up(4, 2), up(5, 2)), nil, false, nil},
			{40 * time.Second, ms(down(1), up(2, 2), up(3, 2), up(4, 2), down(5)), nil, false, nil},
			{time.Minute, ms(down(1), up(2, 2), up(3, 2), up(4, 2), down(5)), nil, false, []string{"EtcdMemberLost firing etcd/m1 since=0s q=3/5/3/l0 err"}},
			// quorum has been at risk since 40s only; m1 and m5 are
			// removed at 90s
			{90 * time.Second, ms(up(2, 2), up(3, 2), up(4, 2)), nil, false, []string{"EtcdMemberLost resolved etcd/m1 since=0s q=3/3/2/l0 removed"}},
			{10 * time.Minute, ms(up(2, 2), up(3, 2), up(4, 2), down(5)), nil, false, nil},
		}},
		{"a replaced member resolves when its replacement (same peer URL) is a healthy voter", []round{
			{0, ms(down(1), up(2, 2), up(3, 2)), nil, false, nil},
			{time.Minute, ms(down(1), up(2, 2), up(3, 2)), nil, false, []string{"EtcdMemberLost firing etcd/m1 since=0s q=2/3/2/l0 err", "EtcdQuorumAtRisk firing etcd/cluster since=0s q=2/3/2/l0"}},
			// removed, and added back as learner 0x11 with m1's peer URL
			{70 * time.Second, ms(up(2, 2), up(3, 2), learner(Member{ID: 0x11, PeerURLs: up(1, 0).PeerURLs})), nil, false, nil},
			{80 * time.Second, ms(up(2, 2), up(3, 2), learner(withID(up(1, 2), 0x11))), nil, false, nil},
			{90 * time.Second, ms(up(2, 2), up(3, 2), withID(sick(1, 2), 0x11)), nil, false, nil},
			{95 * time.Second, ms(up(2, 2), up(3, 2), withID(up(1, 2), 0x11)), nil, false, []string{"EtcdMemberLost resolved etcd/m1 since=0s q=3/3/2/l0 removed replaced_by=11", "EtcdQuorumAtRisk resolved etcd/cluster since=0s q=3/3/2/l0"}},
		}},
		{"a learner is lost like a voter and never counts as a voter", []round{
			{0, ms(up(1, 1), up(2, 1), up(3, 1), learner(down(4))), nil, false, nil},
			{time.Minute, ms(up(1, 1), up(2, 1), up(3, 1), learner(down(4))), nil, false, []string{"EtcdMemberLost firing etcd/m4 since=0s q=3/3/2/l1 err"}},
		}},
		{"a member that never started is named by its id", []round{
			{0, ms(up(1, 1), up(2, 1), up(3, 1), learner(Member{ID: 0xab, StatusError: "no client URLs"})), nil, false, nil},
			{time.Minute, ms(up(1, 1), up(2, 1), up(3, 1), learner(Member{ID: 0xab, StatusError: "no client URLs"})), nil, false, []string{"EtcdMemberLost firing etcd/ab since=0s q=3/3/2/l1 err"}},
		}},
		{"quorum is at risk after lostAfter with healthy voters at quorum, and resolved above it", []round{
			{0, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, nil},
			{10 * time.Second, ms(up(1, 1), up(2, 1), sick(3, 1)), nil, false, nil},
			{20 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, nil},
			{30 * time.Second, ms(up(1, 1), up(2, 1), sick(3, 0)), nil, false, nil},
			{90 * time.Second, ms(up(1, 1), up(2, 1), sick(3, 0)), nil, false, []string{"EtcdQuorumAtRisk firing etcd/cluster since=30s q=2/3/2/l0"}},
			{100 * time.Second, ms(up(1, 1), sick(2, 0), sick(3, 0)), nil, false, nil},
			{110 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, []string{"EtcdQuorumAtRisk resolved etcd/cluster since=30s q=3/3/2/l0"}},
		}},
		{"quorum already lost fires as lost", []round{
			{0, ms(up(1, 0), sick(2, 0), sick(3, 0)), nil, false, nil},
			{time.Minute, ms(up(1, 0), sick(2, 0), sick(3, 0)), nil, false, []string{"EtcdQuorumAtRisk firing etcd/cluster since=0s q=1/3/2/l0 lost"}},
		}},
		{"a single voter is never at risk; two voters always are", []round{
			{0, ms(up(1, 1)), nil, false, nil},
			{time.Hour, ms(up(1, 1)), nil, false, nil},
			{time.Hour + time.Second, ms(up(1, 1), up(2, 1)), nil, false, nil},
			{time.Hour + time.Minute + time.Second, ms(up(1, 1), up(2, 1)), nil, false, []string{"EtcdQuorumAtRisk firing etcd/cluster since=1h0m1s q=2/2/2/l0"}},
			{2 * time.Hour, ms(up(1, 1), up(2, 1), learner(up(3, 1))), nil, false, nil},
			{3 * time.Hour, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, []string{"EtcdQuorumAtRisk resolved etcd/cluster since=1h0m1s q=3/3/2/l0"}},
		}},
		{"an alarm fires at once, keeps its state while alarms are unknown, and resolves when disarmed", []round{
			{0, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, nil},
			{10 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), []Alarm{{2, AlarmNoSpace}, {1, AlarmNoSpace}, {2, AlarmNoSpace}}, false,
				[]string{"EtcdAlarm firing etcd/m1 since=10s q=3/3/2/l0 NOSPACE", "EtcdAlarm firing etcd/m2 since=10s q=3/3/2/l0 NOSPACE"}},
			{20 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), []Alarm{{1, AlarmNoSpace}, {2, AlarmNoSpace}}, false, nil},
			{30 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), nil, true, nil},
			{40 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), []Alarm{{2, AlarmNoSpace}, {3, AlarmCorrupt}}, false,
				[]string{"EtcdAlarm resolved etcd/m1 since=10s q=3/3/2/l0 NOSPACE", "EtcdAlarm firing etcd/m3 since=40s q=3/3/2/l0 CORRUPT"}},
			{50 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false,
				[]string{"EtcdAlarm resolved etcd/m2 since=10s q=3/3/2/l0 NOSPACE", "EtcdAlarm resolved etcd/m3 since=40s q=3/3/2/l0 CORRUPT"}},
		}},
		{"an alarm of a member no longer in the cluster is named by its id and stays until disarmed", []round{
			{0, ms(up(1, 1), up(2, 1), up(3, 1)), []Alarm{{0x99, AlarmNoSpace}}, false, []string{"EtcdAlarm firing etcd/99 since=0s q=3/3/2/l0 NOSPACE"}},
			{time.Hour, ms(up(1, 1), up(2, 1), up(3, 1)), []Alarm{{0x99, AlarmNoSpace}}, false, nil},
			{2 * time.Hour, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, []string{"EtcdAlarm resolved etcd/99 since=0s q=3/3/2/l0 NOSPACE"}},
		}},
		{"a leader change is reported against the last leader known; polls without a leader change nothing", []round{
			{0, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false, nil},
			{5 * time.Second, ms(down(1), up(2, 0), up(3, 0)), nil, false, nil},
			{10 * time.Second, ms(down(1), withTerm(up(2, 1), 2), withTerm(up(3, 2), 3)), nil, false,
				[]string{"EtcdLeaderChanged firing etcd/cluster since=10s q=2/3/2/l0 1(m1)->2(m2)"}},
			{15 * time.Second, ms(up(1, 2), up(2, 2), up(3, 2)), nil, false, nil},
			{20 * time.Second, ms(up(1, 1), up(2, 1), up(3, 1)), nil, false,
				[]string{"EtcdLeaderChanged firing etcd/cluster since=20s q=3/3/2/l0 2(m2)->1(m1)"}},
		}},
		{"transitions come in order: members, removed members, alarms, leader, quorum", []round{
			{0, ms(up(1, 1), down(2), up(3, 1), up(4, 1)), nil, false, nil},
			{time.Minute, ms(down(1), down(2), up(3, 3), up(4, 3)), []Alarm{{3, AlarmNoSpace}}, false, []string{
				"EtcdMemberLost firing etcd/m2 since=0s q=2/4/3/l0 err",
				"EtcdAlarm firing etcd/m3 since=1m0s q=2/4/3/l0 NOSPACE",
				"EtcdLeaderChanged firing etcd/cluster since=1m0s q=2/4/3/l0 1(m1)->3(m3)",
				"EtcdQuorumAtRisk firing etcd/cluster since=0s q=2/4/3/l0 lost",
			}},
			{2 * time.Minute, ms(up(3, 3), up(4, 3), down(1)), nil, false, []string{
				"EtcdMemberLost firing etcd/m1 since=1m0s q=2/3/2/l0 err",
				"EtcdMemberLost resolved etcd/m2 since=0s q=2/3/2/l0 removed",
				"EtcdAlarm resolved etcd/m3 since=1m0s q=2/3/2/l0 NOSPACE",
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEvaluator("prod", lostAfter)
			for i, r := range tt.rounds {
				now := t0.Add(r.at)
				trs := e.Observe(Snapshot{Time: now, Members: r.members, Alarms: r.alarms, AlarmsKnown: !r.unknown})
				var got []string
				for _, tr := range trs {
					got = append(got, describe(tr))
					if !tr.At.Equal(now) {
						t.Errorf("round %d: %s at %s, want %s", i, tr.Type, tr.At, now)
					}
					if tr.Data.Cluster != "prod" || !strings.HasPrefix(tr.Key, "prod") {
						t.Errorf("round %d: %s cluster %q key %q", i, tr.Type, tr.Data.Cluster, tr.Key)
					}
				}
				if !slices.Equal(got, r.want) {
					t.Errorf("round %d (+%s):\n got %q\nwant %q", i, r.at, got, r.want)
				}
			}
		})
	}
}

func TestEvaluatorLostAndLeader(t *testing.T) {
	e := NewEvaluator("prod", time.Minute)
	e.Observe(Snapshot{Time: t0, Members: []Member{up(1, 1), down(2), up(3, 1)}, AlarmsKnown: true})
	if got := e.Lost(); len(got) != 0 {
		t.Errorf("Lost() = %v before lostAfter", got)
	}
	e.Observe(Snapshot{Time: t0.Add(time.Minute), Members: []Member{up(1, 1), down(2), up(3, 1)}, AlarmsKnown: true})
	if got := e.Lost(); !slices.Equal(got, []MemberID{2}) {
		t.Errorf("Lost() = %v, want [2]", got)
	}
	if e.Leader() != 1 {
		t.Errorf("Leader() = %s, want 1", e.Leader())
	}
}

// The member events carry the member as last seen and the quorum view;
// the cluster events carry every member.
func TestEvaluatorData(t *testing.T) {
	e := NewEvaluator("prod", time.Minute)
	members := []Member{up(1, 1), down(2), up(3, 1)}
	e.Observe(Snapshot{Time: t0, Members: members, AlarmsKnown: true})
	trs := e.Observe(Snapshot{Time: t0.Add(time.Minute), Members: members, AlarmsKnown: true})
	if len(trs) != 2 {
		t.Fatalf("got %d transitions, want lost and quorum at risk", len(trs))
	}
	lost, risk := trs[0], trs[1]
	want := Quorum{Voters: 3, HealthyVoters: 2, Quorum: 2, LeaderID: 1, LeaderName: "m1", RaftTerm: 2}
	if lost.Data.Quorum != want || risk.Data.Quorum != want {
		t.Errorf("quorum %+v and %+v, want %+v", lost.Data.Quorum, risk.Data.Quorum, want)
	}
	if m := lost.Data.Member; m == nil || m.ID != 2 || m.Name != "m2" || m.PeerURLs[0] != "http://10.0.0.2:2380" || m.StatusError != "connection refused" {
		t.Errorf("lost member = %+v", m)
	}
	if lost.Key != "prod/2:lost" || lost.Subject != "etcd/m2" || lost.Data.Error != "connection refused" || lost.Data.LostAfter != "1m0s" {
		t.Errorf("lost = %+v", lost)
	}
	if len(risk.Data.Members) != 3 || risk.Key != "prod:quorum" || risk.Data.Member != nil {
		t.Errorf("quorum at risk = %+v", risk)
	}
	if lost.Status != bus.StatusFiring || risk.Status != bus.StatusFiring {
		t.Errorf("statuses %s, %s", lost.Status, risk.Status)
	}
}

func TestQuorum(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		want    Quorum
		risk    bool
	}{
		{"none", nil, Quorum{Quorum: 1}, false},
		{"one", []Member{up(1, 1)}, Quorum{Voters: 1, HealthyVoters: 1, Quorum: 1, LeaderID: 1, LeaderName: "m1", RaftTerm: 2}, false},
		{"three healthy", []Member{up(1, 1), up(2, 1), up(3, 1)}, Quorum{Voters: 3, HealthyVoters: 3, Quorum: 2, LeaderID: 1, LeaderName: "m1", RaftTerm: 2}, false},
		{"four with one down", []Member{up(1, 1), up(2, 1), up(3, 1), down(4)}, Quorum{Voters: 4, HealthyVoters: 3, Quorum: 3, LeaderID: 1, LeaderName: "m1", RaftTerm: 2}, true},
		{"five with a learner and one sick", []Member{up(1, 1), up(2, 1), up(3, 1), sick(4, 1), up(5, 1), learner(up(6, 1))},
			Quorum{Voters: 5, HealthyVoters: 4, Learners: 1, Quorum: 3, LeaderID: 1, LeaderName: "m1", RaftTerm: 2}, false},
		{"the leader of the highest term wins; an unknown leader has no name",
			[]Member{withTerm(up(1, 1), 4), withTerm(up(2, 9), 5), down(3)},
			Quorum{Voters: 3, HealthyVoters: 2, Quorum: 2, LeaderID: 9, RaftTerm: 5}, true},
		{"unreachable members' leaders do not count", []Member{func() Member { m := down(1); m.Leader = 1; return m }(), sick(2, 0), sick(3, 0)},
			Quorum{Voters: 3, Quorum: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Snapshot{Members: tt.members}
			got := s.Quorum()
			if got != tt.want {
				t.Errorf("Quorum() = %+v, want %+v", got, tt.want)
			}
			if got.AtRisk() != tt.risk {
				t.Errorf("AtRisk() = %v, want %v", got.AtRisk(), tt.risk)
			}
		})
	}
}

package etcdmember

import (
	"cmp"
	"slices"
	"time"

	"github.com/selfheal/healer/bus"
)

// Transition is a change the evaluator reports: an event to publish.
type Transition struct {
	// Type is one of the event types (TypeMemberLost, ...).
	Type string
	// Status is bus.StatusFiring or bus.StatusResolved.
	Status string
	// Subject is the event's subject: "etcd/<member name>" or
	// "etcd/cluster".
	Subject string
	// Key names the problem instance; the firing and the resolved event
	// of one problem share it.
	Key string
	// At is the time of the poll that made the transition.
	At time.Time
	// Data is the event's data.
	Data EventData
}

// Evaluator turns snapshots of the cluster into transitions. It is pure:
// time comes from each snapshot, and it does no I/O. It is not safe for
// concurrent use.
//
//   - A member that is unreachable in every snapshot for lostAfter is lost
//     (EtcdMemberLost firing); it is resolved at the first snapshot in which
//     it is reachable, or in which it is no longer a member. A member that
//     was replaced (another member has its peer URL) is resolved when the
//     replacement is a healthy voter, with ReplacedBy set.
//   - An alarm fires when it first appears in a snapshot's alarms and is
//     resolved at the first snapshot with known alarms that lacks it.
//   - The leader changed when a snapshot's leader differs from the last
//     leader known (EtcdLeaderChanged, firing only). Snapshots without a
//     leader change nothing.
//   - Quorum is at risk when it has stayed at risk (Quorum.AtRisk) for
//     lostAfter; it is resolved at the first snapshot in which it is not.
type Evaluator struct {
	cluster   string
	lostAfter time.Duration

	members map[MemberID]*unreachable
	alarms  map[Alarm]*raised
	leader  MemberID
	// leaderName is the leader's name when it was last seen.
	leaderName string
	atRisk     *unreachable
}

// unreachable is a member that did not answer, or a quorum at risk.
type unreachable struct {
	since time.Time
	fired bool
	last  Member
}

type raised struct {
	since time.Time
	last  Member
}

// NewEvaluator returns an evaluator for the cluster with nothing wrong
// and no leader known.
func NewEvaluator(cluster string, lostAfter time.Duration) *Evaluator {
	return &Evaluator{cluster: cluster, lostAfter: lostAfter, members: map[MemberID]*unreachable{}, alarms: map[Alarm]*raised{}}
}

// Observe takes one snapshot and returns its transitions: the members'
// in member-list order, then those of removed members by id, then alarms
// by member id and type, then a leader change, then the quorum. A poll that
// failed as a whole (no member list) must not be passed: skip it, and
// everything keeps its state.
func (e *Evaluator) Observe(s Snapshot) []Transition {
	now := s.Time
	q := s.Quorum()
	base := EventData{Cluster: e.cluster, Quorum: q}
	var out []Transition
	seen := make(map[MemberID]bool, len(s.Members))
	for _, m := range s.Members {
		seen[m.ID] = true
		st := e.members[m.ID]
		switch {
		case !m.Reachable:
			if st == nil {
				st = &unreachable{since: now}
				e.members[m.ID] = st
			}
			st.last = m
			if !st.fired && now.Sub(st.since) >= e.lostAfter {
				st.fired = true
				out = append(out, e.memberLost(base, bus.StatusFiring, st, m, now, false))
			}
		case st != nil:
			if st.fired {
				out = append(out, e.memberLost(base, bus.StatusResolved, st, m, now, false))
			}
			delete(e.members, m.ID)
		}
	}
	for _, id := range sortedKeys(e.members, func(a, b MemberID) int { return cmp.Compare(a, b) }) {
		if seen[id] {
			continue
		}
		st := e.members[id]
		if st.fired {
			r := replacement(&s, &st.last)
			if r != nil && (r.IsLearner || !r.Healthy) {
				continue // its replacement is joining: resolved once it votes and is healthy
			}
			t := e.memberLost(base, bus.StatusResolved, st, st.last, now, true)
			if r != nil {
				t.Data.ReplacedBy = r.ID
			}
			out = append(out, t)
		}
		delete(e.members, id)
	}

	if s.AlarmsKnown {
		var alarms []Transition
		active := make(map[Alarm]bool, len(s.Alarms))
		for _, a := range s.Alarms {
			if active[a] {
				continue
			}
			active[a] = true
			if e.alarms[a] == nil {
				r := &raised{since: now, last: memberOf(&s, a.MemberID)}
				e.alarms[a] = r
				alarms = append(alarms, e.alarm(base, bus.StatusFiring, a, r, now))
			}
		}
		for a, r := range e.alarms {
			if active[a] {
				continue
			}
			if m := s.Member(a.MemberID); m != nil {
				r.last = *m
			}
			alarms = append(alarms, e.alarm(base, bus.StatusResolved, a, r, now))
			delete(e.alarms, a)
		}
		slices.SortFunc(alarms, func(x, y Transition) int {
			return compareAlarms(Alarm{x.Data.Member.ID, x.Data.Alarm}, Alarm{y.Data.Member.ID, y.Data.Alarm})
		})
		out = append(out, alarms...)
	}

	if q.LeaderID != 0 {
		if e.leader != 0 && q.LeaderID != e.leader {
			d := base
			d.Since = now
			d.PreviousLeaderID, d.PreviousLeaderName = e.leader, e.leaderName
			d.Members = s.Members
			out = append(out, Transition{
				Type: TypeLeaderChanged, Status: bus.StatusFiring, Subject: SubjectCluster,
				Key: e.cluster + ":leader", At: now, Data: d,
			})
		}
		e.leader, e.leaderName = q.LeaderID, q.LeaderName
	}

	switch {
	case q.AtRisk():
		if e.atRisk == nil {
			e.atRisk = &unreachable{since: now}
		}
		if !e.atRisk.fired && now.Sub(e.atRisk.since) >= e.lostAfter {
			e.atRisk.fired = true
			out = append(out, e.quorum(base, bus.StatusFiring, e.atRisk.since, s, now))
		}
	case e.atRisk != nil:
		if e.atRisk.fired {
			out = append(out, e.quorum(base, bus.StatusResolved, e.atRisk.since, s, now))
		}
		e.atRisk = nil
	}
	return out
}

// Lost returns the ids of the members that are lost (fired and not
// resolved), sorted.
func (e *Evaluator) Lost() []MemberID {
	var ids []MemberID
	for id, st := range e.members {
		if st.fired {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Leader returns the last leader known, or 0.
func (e *Evaluator) Leader() MemberID { return e.leader }

func (e *Evaluator) memberLost(base EventData, status string, st *unreachable, m Member, now time.Time, removed bool) Transition {
	d := base
	d.Member = &m
	d.Since = st.since
	d.LostAfter = e.lostAfter.String()
	d.Removed = removed
	if status == bus.StatusFiring {
		d.Error = m.StatusError
	}
	return Transition{
		Type: TypeMemberLost, Status: status, Subject: memberSubject(&m),
		Key: e.cluster + "/" + m.ID.String() + ":lost", At: now, Data: d,
	}
}

func (e *Evaluator) alarm(base EventData, status string, a Alarm, r *raised, now time.Time) Transition {
	d := base
	m := r.last
	d.Member = &m
	d.Since = r.since
	d.Alarm = a.Type
	return Transition{
		Type: TypeAlarm, Status: status, Subject: memberSubject(&m),
		Key: e.cluster + "/" + a.MemberID.String() + ":alarm:" + a.Type, At: now, Data: d,
	}
}

func (e *Evaluator) quorum(base EventData, status string, since time.Time, s Snapshot, now time.Time) Transition {
	d := base
	d.Since = since
	d.Members = s.Members
	d.QuorumLost = base.Quorum.FaultTolerance() < 0
	d.Serializable = s.Serializable
	return Transition{
		Type: TypeQuorumAtRisk, Status: status, Subject: SubjectCluster,
		Key: e.cluster + ":quorum", At: now, Data: d,
	}
}

// memberOf returns the member with the id from the snapshot, or one that
// has only the id when it is not a member (an alarm may outlive its
// member).
// replacement returns the member that took over a removed member's peer
// URL (etcd.replace-member adds the replacement with the same one), or nil.
func replacement(s *Snapshot, old *Member) *Member {
	for i := range s.Members {
		m := &s.Members[i]
		if m.ID == old.ID {
			continue
		}
		for _, u := range m.PeerURLs {
			if slices.Contains(old.PeerURLs, u) {
				return m
			}
		}
	}
	return nil
}

func memberOf(s *Snapshot, id MemberID) Member {
	if m := s.Member(id); m != nil {
		return *m
	}
	return Member{ID: id}
}

func memberSubject(m *Member) string { return "etcd/" + m.DisplayName() }

func compareAlarms(a, b Alarm) int {
	if c := cmp.Compare(a.MemberID, b.MemberID); c != 0 {
		return c
	}
	return cmp.Compare(a.Type, b.Type)
}

func sortedKeys[K comparable, V any](m map[K]V, compare func(a, b K) int) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compare)
	return keys
}

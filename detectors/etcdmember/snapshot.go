package etcdmember

import (
	"fmt"
	"strconv"
	"time"
)

// MemberID is an etcd member id. Its text form is lower-case hexadecimal
// without leading zeros, as etcdctl prints it ("8e9e05c52164694d").
type MemberID uint64

// String returns the id in hexadecimal.
func (id MemberID) String() string { return strconv.FormatUint(uint64(id), 16) }

// MarshalText encodes the id in hexadecimal.
func (id MemberID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes an id in hexadecimal.
func (id *MemberID) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 16, 64)
	if err != nil {
		return fmt.Errorf("member id %q: want hexadecimal: %w", b, err)
	}
	*id = MemberID(v)
	return nil
}

// Member is one member of the cluster as the member list names it, and
// what probing it found. It is also the member in event data.
type Member struct {
	ID         MemberID `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	IsLearner  bool     `json:"is_learner"`

	// Reachable is true when the member answered a status request at one
	// of its client URLs.
	Reachable bool `json:"reachable"`
	// StatusError says why it did not; a member with no client URLs was
	// added but has never started.
	StatusError string `json:"status_error,omitempty"`
	// Healthy is true when the member is reachable and serves requests:
	// a voter answered a linearizable read of the health key (or denied
	// it for lack of permission), a learner knows a leader.
	Healthy bool `json:"healthy"`
	// HealthError says why a reachable member is not healthy.
	HealthError string `json:"health_error,omitempty"`

	// The member's status, when it is reachable.
	Version     string   `json:"version,omitempty"`
	Leader      MemberID `json:"leader,omitempty"`
	RaftTerm    uint64   `json:"raft_term,omitempty"`
	RaftIndex   uint64   `json:"raft_index,omitempty"`
	DBSize      int64    `json:"db_size,omitempty"`
	DBSizeInUse int64    `json:"db_size_in_use,omitempty"`
	// DBSizeQuota is the backend quota; a DBSize reaching it raises the
	// NOSPACE alarm.
	DBSizeQuota int64 `json:"db_size_quota,omitempty"`
	// Errors are the errors the member reports about itself, such as
	// "etcdserver: no leader" or an active alarm.
	Errors []string `json:"errors,omitempty"`
}

// DisplayName is the member's name, or its id for a member that has never
// started and so has no name yet.
func (m *Member) DisplayName() string {
	if m.Name != "" {
		return m.Name
	}
	return m.ID.String()
}

// Alarm is an alarm raised on the cluster for one member.
type Alarm struct {
	// MemberID is the member the alarm was raised for.
	MemberID MemberID
	// Type is the alarm: AlarmNoSpace or AlarmCorrupt.
	Type string
}

// Alarm types, as etcd names them.
const (
	AlarmNoSpace = "NOSPACE"
	AlarmCorrupt = "CORRUPT"
)

// Snapshot is what one poll of the cluster found.
type Snapshot struct {
	// Time is when the poll began.
	Time time.Time
	// Members are the members of the cluster, in the order of the member
	// list.
	Members []Member
	// Serializable is true when the member list came from one member's
	// local view because no linearizable list could be had: the cluster
	// has probably lost quorum, and the list may be stale.
	Serializable bool
	// AlarmsKnown is false when the alarm list could not be read; Alarms
	// is then empty and the alarms keep the state they had.
	AlarmsKnown bool
	// AlarmsError says why the alarm list could not be read.
	AlarmsError string
	// Alarms are the active alarms, when AlarmsKnown.
	Alarms []Alarm
}

// Quorum is the cluster's quorum as a poll saw it. Every event carries it.
type Quorum struct {
	// Voters are the members that are not learners.
	Voters int `json:"voters"`
	// HealthyVoters are the voters that are healthy.
	HealthyVoters int `json:"healthy_voters"`
	// Learners are the members that are learners.
	Learners int `json:"learners"`
	// Quorum is the number of voters that must agree: Voters/2+1.
	Quorum int `json:"quorum"`
	// LeaderID and LeaderName are the leader, as the reachable member
	// with the highest raft term reports it; empty when none knows one.
	LeaderID   MemberID `json:"leader_id,omitempty"`
	LeaderName string   `json:"leader_name,omitempty"`
	// RaftTerm is that member's raft term.
	RaftTerm uint64 `json:"raft_term,omitempty"`
}

// FaultTolerance is how many more healthy voters the cluster can lose and
// keep its quorum; negative when quorum is already lost.
func (q Quorum) FaultTolerance() int { return q.HealthyVoters - q.Quorum }

// AtRisk reports whether one more voter failing would lose quorum (or it
// is lost already). A single-voter cluster never tolerates a failure, by
// design, and is not reported.
func (q Quorum) AtRisk() bool { return q.Voters >= 2 && q.FaultTolerance() <= 0 }

// Quorum returns the quorum view of the snapshot.
func (s *Snapshot) Quorum() Quorum {
	var q Quorum
	var term uint64
	for i := range s.Members {
		m := &s.Members[i]
		if m.IsLearner {
			q.Learners++
			continue
		}
		q.Voters++
		if m.Healthy {
			q.HealthyVoters++
		}
	}
	q.Quorum = q.Voters/2 + 1
	for i := range s.Members {
		m := &s.Members[i]
		if m.Reachable && m.Leader != 0 && (q.LeaderID == 0 || m.RaftTerm > term) {
			q.LeaderID, term = m.Leader, m.RaftTerm
		}
	}
	if q.LeaderID != 0 {
		q.RaftTerm = term
		if m := s.Member(q.LeaderID); m != nil {
			q.LeaderName = m.Name
		}
	}
	return q
}

// Member returns the member with the id, or nil.
func (s *Snapshot) Member(id MemberID) *Member {
	for i := range s.Members {
		if s.Members[i].ID == id {
			return &s.Members[i]
		}
	}
	return nil
}

package etcdmember

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/selfheal/healer/bus"
)

// EventSource is the CloudEvents source of events from this detector.
const EventSource = "etcdmember"

// Event types.
const (
	// TypeMemberLost is a member unreachable for LostAfter; resolved when
	// it answers again or is removed from the cluster. Subject
	// "etcd/<member name>".
	TypeMemberLost = "EtcdMemberLost"
	// TypeAlarm is an alarm (NOSPACE, CORRUPT) raised for a member;
	// resolved when it is disarmed. Subject "etcd/<member name>".
	TypeAlarm = "EtcdAlarm"
	// TypeLeaderChanged says another member became leader. It is
	// informational and never resolved. Subject SubjectCluster.
	TypeLeaderChanged = "EtcdLeaderChanged"
	// TypeQuorumAtRisk is a cluster that cannot lose one more voter
	// without losing quorum (or has lost it), for LostAfter; resolved when
	// it can again. Subject SubjectCluster.
	TypeQuorumAtRisk = "EtcdQuorumAtRisk"
)

// SubjectCluster is the subject of the events about the whole cluster.
const SubjectCluster = "etcd/cluster"

// EventData is the data of every event of this detector. A remediator
// decodes it with encoding/json.
type EventData struct {
	// Cluster is the configured ClusterName.
	Cluster string `json:"cluster"`
	// Member is the member the event is about: for EtcdMemberLost and
	// EtcdAlarm. For a lost member, as it was last seen.
	Member *Member `json:"member,omitempty"`
	// Members are all members, for the cluster events.
	Members []Member `json:"members,omitempty"`
	// Quorum is the quorum view of the poll that made the event.
	Quorum Quorum `json:"quorum"`
	// Since is when the problem began: the first poll in which the member
	// was unreachable, the alarm was seen or quorum was at risk; for a
	// leader change, the poll that saw it.
	Since time.Time `json:"since"`
	// LostAfter is the configured LostAfter, for EtcdMemberLost.
	LostAfter string `json:"lost_after,omitempty"`
	// Error is why the member could not be reached, for a firing
	// EtcdMemberLost.
	Error string `json:"error,omitempty"`
	// Removed is true for an EtcdMemberLost resolved because the member
	// is no longer in the member list.
	Removed bool `json:"removed,omitempty"`
	// ReplacedBy is the member that took over the removed member's peer
	// URL, once it is a healthy voter (etcd.replace-member's work).
	ReplacedBy MemberID `json:"replaced_by,omitempty"`
	// Alarm is the alarm type, for EtcdAlarm: AlarmNoSpace or
	// AlarmCorrupt.
	Alarm string `json:"alarm,omitempty"`
	// PreviousLeaderID and PreviousLeaderName are the leader before, for
	// EtcdLeaderChanged; the new one is in Quorum.
	PreviousLeaderID   MemberID `json:"previous_leader_id,omitempty"`
	PreviousLeaderName string   `json:"previous_leader_name,omitempty"`
	// QuorumLost is true for an EtcdQuorumAtRisk with fewer healthy
	// voters than the quorum.
	QuorumLost bool `json:"quorum_lost,omitempty"`
	// Serializable is true when the member list came from one member's
	// local view (see Snapshot.Serializable).
	Serializable bool `json:"serializable,omitempty"`
}

// EventID is the id of the event for a transition: the same cluster,
// type, key, status and start of the problem always give the same id. A
// leader change is identified by the previous and the new leader and the
// raft term, not by when it was seen, so detectors that see the same
// change give it the same id.
func EventID(t *Transition) string {
	h := sha256.New()
	parts := []string{t.Data.Cluster, t.Type, t.Key, t.Status}
	if t.Type == TypeLeaderChanged {
		parts = append(parts, t.Data.PreviousLeaderID.String(), t.Data.Quorum.LeaderID.String(),
			strconv.FormatUint(t.Data.Quorum.RaftTerm, 10))
	} else {
		parts = append(parts, t.Data.Since.UTC().Format(time.RFC3339Nano))
	}
	for _, s := range parts {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "em-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Event returns the event reporting the transition.
func (t *Transition) Event() (*bus.Event, error) {
	raw, err := json.Marshal(t.Data)
	if err != nil {
		return nil, fmt.Errorf("encode %s event for %s: %w", t.Type, t.Subject, err)
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              EventID(t),
		Source:          EventSource,
		Type:            t.Type,
		Subject:         t.Subject,
		Time:            t.At.UTC(),
		DataContentType: "application/json",
		Status:          t.Status,
		Key:             t.Key,
		Data:            raw,
	}, nil
}

// Package etcdmember is the detector for the members of an etcd cluster,
// such as a Kubernetes control plane's. Every Interval it lists the
// members (linearizably; from one member's local view when quorum is lost),
// asks each member at its own client URLs for its status (leader, raft
// term and index, database size, errors) and, like `etcdctl endpoint
// health`, reads a health key linearizably from it, and lists the alarms.
//
// From these snapshots it reports, with the quorum view of the cluster
// (voters, healthy voters, learners, quorum, leader) on every event:
//
//   - EtcdMemberLost, subject "etcd/<member name>": a member unreachable
//     for LostAfter, not at the first failed poll; resolved when it answers
//     again or is removed from the member list. Replacing the member is the
//     job of the etcd.replace-member remediator; this package only reports.
//   - EtcdAlarm, subject "etcd/<member name>": a NOSPACE or CORRUPT alarm,
//     at once; resolved when it is disarmed.
//   - EtcdLeaderChanged, subject "etcd/cluster": another member became
//     leader. Informational, never resolved.
//   - EtcdQuorumAtRisk, subject "etcd/cluster": for LostAfter, no more
//     healthy voters than the quorum, so that one more failure loses
//     quorum (or it is lost); resolved when the cluster tolerates a
//     failure again. A single-voter cluster is never reported.
//
// The evaluation is pure: an Evaluator takes Snapshots, with their time,
// and returns Transitions, which become bus events with ids derived from
// the cluster, the problem and when it began. The Prober does the I/O, and
// a remediator can use it to check the quorum just before it acts. A poll
// that reaches no member concludes nothing: healer being cut off from the
// cluster, or holding bad credentials, never makes members lost.
package etcdmember

// Package etcdmember is the etcd.replace-member remediator: it replaces a
// lost etcd member the way a careful operator does, keeping the member's
// name and peer URL and never risking quorum.
//
// Just before acting it refuses (action.ErrUnsafe) when the change could
// cost quorum: the cluster has fewer than three voters, removing the member
// would leave fewer healthy voters than a majority of the rest, another
// membership change is in flight (a learner, a member that never started,
// another replacement's journal), no leader is known, or the member list
// cannot be read linearizably. A member that answers again, or is gone,
// needs nothing (action.ErrNotNeeded).
//
// Then, each step reported as progress and recorded in a journal (NATS KV
// bucket healer_etcd_replace) before the next begins:
//
//  1. remove the failed member;
//  2. add the replacement as a learner with the same peer URLs;
//  3. start it through a Provisioner, with a fresh data directory and
//     --initial-cluster-state=existing: on a master, the node agent
//     rewrites etcd's static-pod manifest (AgentProvisioner); in tests and
//     `healer demo`, a local process (Local);
//  4. wait until it has caught up with the leader, and promote it to a
//     voter (etcd itself refuses to promote a learner that lags).
//
// Verify waits until the replacement is a healthy voter and the whole
// cluster is healthy, then reads every key from the replacement at one
// revision and checks the count against the cluster's.
//
// Every step is idempotent and the journal says how far a replacement got,
// so an engine that restarts halfway (healer was killed) resumes the same
// action where it stopped; the cluster itself is read again at each step.
package etcdmember

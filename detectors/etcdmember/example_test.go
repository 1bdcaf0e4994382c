package etcdmember_test

import (
	"fmt"
	"time"

	"github.com/selfheal/healer/detectors/etcdmember"
)

// The evaluator is pure: snapshots in, transitions out. A member that
// stops answering is lost only once it has stayed unreachable for
// lostAfter.
func ExampleEvaluator() {
	e := etcdmember.NewEvaluator("prod", time.Minute)
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	member := func(id etcdmember.MemberID, up bool) etcdmember.Member {
		m := etcdmember.Member{ID: id, Name: fmt.Sprintf("cp-%d", id), Reachable: up, Healthy: up}
		if up {
			m.Leader, m.RaftTerm = 1, 7
		}
		return m
	}
	for _, at := range []time.Duration{0, 30 * time.Second, 60 * time.Second} {
		s := etcdmember.Snapshot{
			Time:        t0.Add(at),
			Members:     []etcdmember.Member{member(1, true), member(2, true), member(3, false)},
			AlarmsKnown: true,
		}
		for _, tr := range e.Observe(s) {
			q := tr.Data.Quorum
			fmt.Printf("+%s %s %s %s healthy %d of %d voters, quorum %d, leader %s\n",
				at, tr.Type, tr.Status, tr.Subject, q.HealthyVoters, q.Voters, q.Quorum, q.LeaderName)
		}
	}
	// Output:
	// +1m0s EtcdMemberLost firing etcd/cp-3 healthy 2 of 3 voters, quorum 2, leader cp-1
	// +1m0s EtcdQuorumAtRisk firing etcd/cluster healthy 2 of 3 voters, quorum 2, leader cp-1
}

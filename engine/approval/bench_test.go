package approval

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkVoteToAnswer measures how long the waiting engine takes to see
// a vote cast on another replica: Decide's compare-and-set, then the
// waiter's KV watch. The request is stored before the timer runs.
func BenchmarkVoteToAnswer(b *testing.B) {
	f := newFixtureServer(b)
	f.cfg = Config{Approvers: []Approver{{Name: "alice", TokenFile: tokenFile(b, "alice")}}}
	engineSide, voter := f.broker(b), f.broker(b)
	var total time.Duration
	for i := range b.N {
		ar := request(1)
		ar.Key = fmt.Sprintf("act.bench-%d", i)
		b.StopTimer()
		ch, req := approveAsync(b, b.Context(), engineSide, ar)
		b.StartTimer()
		start := time.Now()
		if _, err := decide(b.Context(), voter, req.ID, ballot{Via: ViaCLI, User: tok("alice"), Approve: true, Digest: req.Digest}); err != nil {
			b.Fatal(err)
		}
		if a := <-ch; a.err != nil || !a.a.Approved {
			b.Fatalf("answer %+v", a)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/vote")
}

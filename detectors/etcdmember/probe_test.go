package etcdmember

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/test/testenv"
)

func newProber(t *testing.T, cfg Config) *Prober {
	t.Helper()
	p, err := NewProber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// Over TLS with client certificate authentication, the configured
// certificate gets a healthy member; without it nothing answers, and that
// is ErrUnreachable, not a lost member.
func TestProbeTLS(t *testing.T) {
	c := startEtcdCluster(t, 1, clusterOptions{TLS: newTestPKI(t)})
	cfg := c.Config()
	s, err := newProber(t, cfg).Probe(t.Context())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if len(s.Members) != 1 || !s.Members[0].Healthy || s.Serializable || !s.AlarmsKnown {
		t.Fatalf("snapshot = %+v", s)
	}
	m := s.Members[0]
	if m.Name != "m0" || m.Version == "" || m.DBSize == 0 || m.RaftTerm == 0 || m.Leader != m.ID || !strings.HasPrefix(m.ClientURLs[0], "https://") {
		t.Errorf("member = %+v", m)
	}

	cfg.TLS = &TLS{CAFile: cfg.TLS.CAFile}
	_, err = newProber(t, cfg).Probe(t.Context())
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Probe without a client certificate = %v, want ErrUnreachable", err)
	}
}

// A learner that was added but never started has no client URLs and is
// unreachable; with two of three voters stopped the member list comes from
// the last one's local view and quorum is lost; with none, the cluster is
// unreachable.
func TestProbeLearnerAndQuorumLoss(t *testing.T) {
	c := startEtcdCluster(t, 3, clusterOptions{LooseReconfig: true})
	cli := c.Client(t)
	peer := "http://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	added, err := cli.MemberAddAsLearner(t.Context(), []string{peer})
	if err != nil {
		t.Fatalf("add learner: %v", err)
	}
	cfg := c.Config()
	p := newProber(t, cfg)
	s, err := p.Probe(t.Context())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	l := s.Member(MemberID(added.Member.ID))
	if l == nil || !l.IsLearner || l.Reachable || l.Name != "" || len(l.ClientURLs) != 0 || !strings.Contains(l.StatusError, "has not started") {
		t.Fatalf("learner = %+v", l)
	}
	if q := s.Quorum(); q.Voters != 3 || q.HealthyVoters != 3 || q.Learners != 1 || q.Quorum != 2 || q.LeaderID == 0 || q.AtRisk() {
		t.Errorf("quorum = %+v", q)
	}

	leader := c.Leader(t)
	c.Stop(leader)
	c.Stop((leader + 1) % 3)
	last := c.Members[(leader+2)%3]
	start := time.Now()
	s, err = p.Probe(t.Context())
	if err != nil {
		t.Fatalf("Probe with one voter left: %v", err)
	}
	if took := time.Since(start); took > 3*cfg.RequestTimeout {
		t.Errorf("Probe took %s; want at most three request timeouts", took)
	}
	if !s.Serializable {
		t.Error("member list linearizable without quorum")
	}
	q := s.Quorum()
	if q.Voters != 3 || q.HealthyVoters != 0 || q.FaultTolerance() != -2 || !q.AtRisk() {
		t.Errorf("quorum = %+v", q)
	}
	for _, m := range s.Members {
		if m.Reachable != (m.Name == last.Name) {
			t.Errorf("member %s reachable %v (%s)", m.DisplayName(), m.Reachable, m.StatusError)
		}
		if m.Name == last.Name && (m.Healthy || m.HealthError == "") {
			t.Errorf("the member without quorum is healthy: %+v", m)
		}
	}
	if s.AlarmsKnown {
		t.Error("alarms known without quorum")
	}

	c.Stop((leader + 2) % 3)
	if _, err := p.Probe(t.Context()); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Probe with every member stopped = %v, want ErrUnreachable", err)
	}
}

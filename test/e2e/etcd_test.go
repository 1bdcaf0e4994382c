package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/selfheal/healer/audit"
	etcddet "github.com/selfheal/healer/detectors/etcdmember"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/internal/etcdlocal"
	etcdrem "github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/test/testenv"
)

// etcdEnv is a local etcd cluster of member processes and what healer
// needs to watch and replace its members.
type etcdEnv struct {
	cluster *etcdlocal.Cluster
	cli     *clientv3.Client
	command []string
}

func startEtcd(t testing.TB, members int) *etcdEnv {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	command := []string{exe, "-test.run=^$"}
	c, err := etcdlocal.StartCluster(t.Context(), etcdlocal.ClusterConfig{Members: members, Dir: t.TempDir(), Command: command, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Destroy) // with any replacement healer started
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return &etcdEnv{cluster: c, cli: cli, command: command}
}

// config is serve's configuration for the cluster: polled every 250ms, a
// member lost after 2s, replacements started as local processes.
func (e *etcdEnv) config(command []string) serve.Config {
	members := map[string]etcdrem.LocalMember{}
	for _, m := range e.cluster.Members() {
		members[m.Spec.Name] = etcdrem.LocalMember{DataDir: m.Spec.DataDir, LogFile: m.Spec.LogFile}
	}
	return serve.Config{
		NoKubernetes: true,
		Etcd: &etcddet.Config{
			ClusterName: "e2e", Endpoints: e.cluster.Endpoints(),
			Interval: 250 * time.Millisecond, LostAfter: 2 * time.Second,
			RequestTimeout: time.Second, DialTimeout: 500 * time.Millisecond,
		},
		EtcdReplace: etcdrem.Config{
			Provisioner: etcdrem.ProvisionerLocal, PollInterval: 100 * time.Millisecond, CatchUpTimeout: time.Minute,
			Local: etcdrem.LocalConfig{Command: command, Members: members, NoFsync: true},
		},
		Engine: engine.Config{AckWait: 3 * time.Second, RetryDelay: 500 * time.Millisecond},
	}
}

// putKeys writes n keys under /e2e/.
func (e *etcdEnv) putKeys(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		if _, err := e.cli.Put(t.Context(), fmt.Sprintf("/e2e/key-%04d", i), strings.Repeat("v", 128)); err != nil {
			t.Fatal(err)
		}
	}
}

// memberIDs returns the member ids by name, from a linearizable list.
func (e *etcdEnv) members(t testing.TB) map[string]*clientv3.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	out := map[string]*clientv3.Member{}
	for _, m := range resp.Members {
		out[m.Name] = (*clientv3.Member)(m)
	}
	return out
}

// writer writes a key every 10ms, one at a time, and remembers when the
// writes that failed began.
type writer struct {
	mu       sync.Mutex
	ok       int
	failures []time.Time
	errs     []string
	stop     context.CancelFunc
	done     chan struct{}
}

func startWriter(t testing.TB, cli *clientv3.Client) *writer {
	ctx, cancel := context.WithCancel(t.Context())
	w := &writer{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ctx.Err() == nil; i++ {
			began := time.Now()
			wctx, c := context.WithTimeout(ctx, 2*time.Second)
			_, err := cli.Put(wctx, "/e2e/writer", fmt.Sprint(i))
			c()
			if ctx.Err() != nil {
				return
			}
			w.mu.Lock()
			if err != nil {
				w.failures = append(w.failures, began)
				w.errs = append(w.errs, err.Error())
			} else {
				w.ok++
			}
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *writer) halt() {
	w.stop()
	<-w.done
}

// result stops the writer and returns its counts and the span of its
// failures.
func (w *writer) result() (ok, failed int, span time.Duration) {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.failures) > 0 {
		span = w.failures[len(w.failures)-1].Sub(w.failures[0])
	}
	return w.ok, len(w.failures), span
}

// progressSteps returns the steps of the action.progress records.
func progressSteps(recs []audit.Record) []string {
	var out []string
	for _, r := range recs {
		if r.Kind != audit.KindActionProgress {
			continue
		}
		var d struct {
			Step string `json:"step"`
		}
		_ = json.Unmarshal(r.Details, &d)
		if len(out) == 0 || out[len(out)-1] != d.Step {
			out = append(out, d.Step)
		}
	}
	return out
}

// waitReplaced waits until the audit trail has the replacement of target
// verified, and returns the target's records.
func waitReplaced(t *testing.T, h *env, target string, timeout time.Duration) []audit.Record {
	t.Helper()
	var recs []audit.Record
	waitFor(t, timeout, "etcd.replace-member verified on "+target, func() (bool, string) {
		recs = h.records(url.Values{"target": {target}})
		for _, r := range recs {
			if r.Remediator == etcdrem.Name && (r.Kind == audit.KindActionFailed || r.Kind == audit.KindSuppressed) {
				t.Fatalf("replacement of %s did not happen: %s%s", target, r.Kind, describe(recs))
			}
			if r.Kind == audit.KindVerified && r.Remediator == etcdrem.Name {
				return true, ""
			}
		}
		return false, describe(recs)
	})
	return recs
}

// A killed member is replaced through the whole pipeline while a writer
// keeps writing: detection, decision, each step, verification; the
// replacement has the name and peer URL, a new id, votes, and serves every
// key. Writes fail only during the election of a killed leader.
func TestEtcdMemberReplaced(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members int
		leader  bool
	}{
		{"3 members, follower killed", 3, false},
		{"5 members, follower killed", 5, false},
		{"3 members, leader killed", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEtcd(t, tc.members)
			e.putKeys(t, 100)
			h := startHealer(t, e.config(e.command))
			lead, err := e.cluster.Leader(t.Context(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			victim := (lead + 1) % tc.members
			if tc.leader {
				victim = lead
			}
			vm := e.cluster.Member(victim)
			before := e.members(t)[vm.Spec.Name]
			w := startWriter(t, e.cli)
			time.Sleep(500 * time.Millisecond) // healthy polls first
			killed := time.Now()
			if err := e.cluster.Kill(victim); err != nil {
				t.Fatal(err)
			}
			target := "etcd/" + vm.Spec.Name
			recs := waitReplaced(t, h, target, 60*time.Second)
			healed := time.Since(killed)
			ok, failed, span := w.result()
			t.Logf("%s killed → replacement verified in %s; writer: %d ok, %d failed over %s", vm.Spec.Name, healed.Round(time.Millisecond), ok, failed, span)
			for i, at := range w.failures {
				t.Logf("a write begun at kill%+v failed: %s", at.Sub(killed).Round(time.Millisecond), w.errs[i])
			}
			var started time.Time
			for _, r := range recs {
				if r.Kind == audit.KindActionStarted {
					started = r.Time
				}
				t.Logf("at kill+%s: %s %s", r.Time.Sub(killed).Round(time.Millisecond), r.Kind, cutDetails(r.Details))
			}

			// The story, in order.
			ks := kinds(recs)
			for _, want := range [][]string{{"event", "decision", "action.started", "action.progress", "action.finished", "verified"}} {
				if !testenv.IsSubsequence(want, ks) {
					t.Fatalf("records %v, want in order %v%s", ks, want, describe(recs))
				}
			}
			steps := progressSteps(recs)
			if want := []string{"quorum checked", "member removed", "learner added", "provision", "member started", "promoted"}; !testenv.IsSubsequence(want, steps) {
				t.Fatalf("progress steps %v, want in order %v", steps, want)
			}
			// The cluster: whole again, the same name and peer URL, a new
			// id, a voter; every key readable from the replacement.
			ms := e.members(t)
			if len(ms) != tc.members {
				t.Fatalf("%d members, want %d", len(ms), tc.members)
			}
			after := ms[vm.Spec.Name]
			switch {
			case after == nil:
				t.Fatalf("no member %s after the replacement", vm.Spec.Name)
			case after.ID == before.ID:
				t.Fatalf("member %s still has its old id", vm.Spec.Name)
			case after.IsLearner:
				t.Fatalf("member %s is still a learner", vm.Spec.Name)
			case !slices.Equal(after.PeerURLs, before.PeerURLs):
				t.Fatalf("peer URLs %v, want %v", after.PeerURLs, before.PeerURLs)
			}
			one, err := clientv3.New(clientv3.Config{Endpoints: []string{vm.Spec.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer one.Close()
			resp, err := one.Get(t.Context(), "/e2e/key-", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || resp.Count != 100 {
				t.Fatalf("the replacement serves %v keys (%v), want 100", resp, err)
			}
			// Writes: the one in flight to the killed member may be lost,
			// and those begun while a killed leader is replaced by an
			// election (500ms here); none begun after that, and none while
			// healer replaced the member.
			for _, at := range w.failures {
				if at.After(killed.Add(1500*time.Millisecond)) || !at.Before(started) {
					t.Errorf("a write begun at kill+%s failed: beyond the kill and its election", at.Sub(killed).Round(time.Millisecond))
				}
			}
			if !tc.leader && failed > 1 {
				t.Errorf("%d writes failed when a follower was killed, want at most the one in flight to it", failed)
			}
		})
	}
}

// Two of three members killed: quorum is lost, so healer refuses to
// change anything; each refusal is a suppressed record with its reason,
// and no member is removed.
func TestEtcdTwoOfThreeLostIsRefused(t *testing.T) {
	e := startEtcd(t, 3)
	h := startHealer(t, e.config(e.command))
	lead, err := e.cluster.Leader(t.Context(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a, b := (lead+1)%3, (lead+2)%3
	time.Sleep(500 * time.Millisecond)
	for _, i := range []int{a, b} {
		if err := e.cluster.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	targets := []string{"etcd/" + e.cluster.Member(a).Spec.Name, "etcd/" + e.cluster.Member(b).Spec.Name}
	for _, target := range targets {
		waitFor(t, 30*time.Second, "the replacement of "+target+" refused", func() (bool, string) {
			recs := h.records(url.Values{"target": {target}})
			for _, r := range recs {
				if r.Kind == audit.KindActionStarted {
					t.Fatalf("an action started on %s with quorum lost:%s", target, describe(recs))
				}
				if r.Kind == audit.KindSuppressed && r.Remediator == etcdrem.Name {
					why := reason(r)
					if !strings.Contains(why, "unsafe") || (!strings.Contains(why, "quorum") && !strings.Contains(why, "linearizable")) {
						t.Fatalf("suppressed with reason %q, want it to say why (quorum)", why)
					}
					t.Logf("%s: suppressed: %s", target, why)
					return true, ""
				}
			}
			return false, describe(recs)
		})
	}
	survivor, err := clientv3.New(clientv3.Config{Endpoints: []string{e.cluster.Member(lead).Spec.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer survivor.Close()
	resp, err := survivor.MemberList(t.Context(), clientv3.WithSerializable())
	if err != nil || len(resp.Members) != 3 {
		t.Fatalf("member list %v (%v): want all three members still there", resp, err)
	}
	for _, m := range resp.Members {
		if m.IsLearner {
			t.Fatalf("a learner was added: %v", m)
		}
	}
}

// healer stops after it has added the learner and before it promotes it
// (the first healer cannot start members: its command is missing); a new
// healer on the same data dir resumes the same action from its journal and
// finishes: one learner added, started, promoted, verified.
func TestEtcdReplacementResumesAfterHealerRestart(t *testing.T) {
	e := startEtcd(t, 3)
	e.putKeys(t, 50)
	dataDir := t.TempDir()
	cfg1 := e.config([]string{"/nonexistent/etcd-member"})
	cfg1.DataDir = dataDir
	h1 := startHealer(t, cfg1)
	lead, err := e.cluster.Leader(t.Context(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	victim := (lead + 2) % 3
	vm := e.cluster.Member(victim)
	target := "etcd/" + vm.Spec.Name
	time.Sleep(500 * time.Millisecond)
	if err := e.cluster.Kill(victim); err != nil {
		t.Fatal(err)
	}
	var actionID string
	waitFor(t, 30*time.Second, "learner added by the first healer", func() (bool, string) {
		recs := h1.records(url.Values{"target": {target}})
		if slices.Contains(progressSteps(recs), "learner added") && slices.Contains(kinds(recs), "action.started") {
			for _, r := range recs {
				if r.Kind == audit.KindActionStarted {
					actionID = r.ID
				}
			}
			return true, ""
		}
		return false, describe(recs)
	})
	h1.stop()
	ms := e.members(t)
	if m := ms[vm.Spec.Name]; m != nil && !m.IsLearner {
		t.Fatalf("member %s is a voter before the second healer ran", vm.Spec.Name)
	}

	cfg2 := e.config(e.command)
	cfg2.DataDir = dataDir
	h2 := startHealer(t, cfg2)
	recs := waitReplaced(t, h2, target, 60*time.Second)
	var resumed bool
	for _, r := range recs {
		var d struct {
			Step  string `json:"step"`
			Phase string `json:"phase"`
		}
		_ = json.Unmarshal(r.Details, &d)
		if r.Kind == audit.KindActionProgress && d.Step == "resume" {
			resumed = true
			if d.Phase != "added" {
				t.Fatalf("resumed after phase %q, want added", d.Phase)
			}
		}
	}
	if !resumed {
		t.Fatalf("no resume step in the trail:%s", describe(recs))
	}
	t.Logf("first action record %s; resumed and verified by the second healer", actionID)
	var learnersAdded int
	for _, s := range progressSteps(recs) {
		if s == "learner added" {
			learnersAdded++
		}
	}
	if learnersAdded != 1 {
		t.Fatalf("learner added %d times, want once", learnersAdded)
	}
	ms = e.members(t)
	if len(ms) != 3 || ms[vm.Spec.Name] == nil || ms[vm.Spec.Name].IsLearner {
		t.Fatalf("members after resume: %v, want 3 voters with %s", ms, vm.Spec.Name)
	}
}

func cutDetails(b []byte) string {
	if len(b) > 160 {
		return string(b[:160]) + "…"
	}
	return string(b)
}

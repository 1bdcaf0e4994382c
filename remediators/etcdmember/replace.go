package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/selfheal/healer/action"
	etcddet "github.com/selfheal/healer/detectors/etcdmember"
)

// Name is the remediator's policy name.
const Name = "etcd.replace-member"

// Replace is the etcd.replace-member remediator.
type Replace struct {
	cfg      Config
	cluster  string
	prober   *etcddet.Prober
	journals *journals
	prov     Provisioner
	log      *slog.Logger
}

var _ action.Remediator = (*Replace)(nil)

// Deps are what the remediator acts with.
type Deps struct {
	// Cluster is the etcd cluster's client configuration: the etcdmember
	// detector's.
	Cluster etcddet.Config
	// Journal is the journal bucket (EnsureBucket).
	Journal jetstream.KeyValue
	// Provisioner starts replacements.
	Provisioner Provisioner
}

// New returns the remediator. With nil deps it can only describe itself
// (Info, Validate) and refuses to act.
func New(cfg Config, deps *Deps, log *slog.Logger) (*Replace, error) {
	cfg.ApplyDefaults()
	r := &Replace{cfg: cfg, log: log}
	if deps == nil {
		return r, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Journal == nil || deps.Provisioner == nil {
		return nil, errors.New("etcd.replace-member: a journal bucket and a provisioner are required")
	}
	p, err := etcddet.NewProber(deps.Cluster)
	if err != nil {
		return nil, err
	}
	c := deps.Cluster
	c.ApplyDefaults()
	r.cluster, r.prober, r.journals, r.prov = c.ClusterName, p, &journals{kv: deps.Journal}, deps.Provisioner
	return r, nil
}

// Close closes the remediator's etcd clients.
func (r *Replace) Close() error {
	if r.prober == nil {
		return nil
	}
	return r.prober.Close()
}

// Info describes the remediator.
func (r *Replace) Info() action.Info {
	return action.Info{
		Name:       Name,
		Summary:    "Replaces a lost etcd member with a fresh one of the same name and peer URL: remove, add as learner, start, promote once caught up; refuses whenever quorum could be at stake.",
		TargetKind: "etcd",
		// The member is already out of service; replacing it takes no node
		// out and does not count against the budget.
		Disruptive: false,
		Runbook:    "runbooks/etcd.replace-member.md",
		Example:    `{"remediator": "etcd.replace-member", "params": {"member_id": "8e9e05c52164694d"}, "approval": "none", "reason": "etcd member lost"}`,
	}
}

// Validate checks the params: member_id, the hexadecimal id of the lost
// member as the event reported it, binds the action to that very member
// (a member since replaced by someone else is not replaced again).
func (r *Replace) Validate(params map[string]any) error {
	for k := range params {
		if k != "member_id" {
			return fmt.Errorf("%w: %s: unknown parameter %q", action.ErrInvalidParams, Name, k)
		}
	}
	_, err := memberIDParam(params)
	return err
}

func memberIDParam(params map[string]any) (etcddet.MemberID, error) {
	s, err := action.StringParam(params, "member_id", "")
	if err != nil {
		return 0, err
	}
	if s == "" {
		return 0, fmt.Errorf("%w: %s: member_id is required (the lost member's id, from the event)", action.ErrInvalidParams, Name)
	}
	var id etcddet.MemberID
	if err := id.UnmarshalText([]byte(s)); err != nil || id == 0 {
		return 0, fmt.Errorf("%w: %s: member_id %q: want a non-zero hexadecimal member id", action.ErrInvalidParams, Name, s)
	}
	return id, nil
}

// snapshot probes the cluster; a member list that is not linearizable
// (quorum lost, or healer sees only part of the cluster) is unsafe to act
// on.
func (r *Replace) snapshot(ctx context.Context) (*etcddet.Snapshot, error) {
	if r.prober == nil {
		return nil, fmt.Errorf("%w: %s is not configured (etcd and etcdReplace)", action.ErrUnsafe, Name)
	}
	s, err := r.prober.Probe(ctx)
	if err != nil {
		if errors.Is(err, etcddet.ErrUnreachable) {
			return nil, fmt.Errorf("%w: cannot tell the cluster's state: %w", action.ErrUnsafe, err)
		}
		return nil, err
	}
	if s.Serializable {
		return nil, fmt.Errorf("%w: no linearizable member list: the cluster has probably lost quorum", action.ErrUnsafe)
	}
	return &s, nil
}

// Check re-reads the cluster and refuses whenever the replacement could
// cost quorum. A replacement this action began earlier (the engine
// restarted) is resumed if the cluster still has its quorum.
func (r *Replace) Check(ctx context.Context, req action.Request) error {
	id, err := memberIDParam(req.Params)
	if err != nil {
		return err
	}
	name := req.TargetName()
	s, err := r.snapshot(ctx)
	if err != nil {
		return err
	}
	j, err := r.journal(ctx, name)
	if err != nil {
		return fmt.Errorf("%w: %w", action.ErrUnsafe, err)
	}
	if j != nil && j.ActionID == req.ID {
		if j.Phase == phaseBegun && s.Member(j.OldID) == nil {
			return fmt.Errorf("%w: member %s (%s) left the cluster while its replacement was only begun (healer may have removed it before it could record so): check the member list and the runbook", action.ErrUnsafe, name, j.OldID)
		}
		if j.Phase == phaseBegun {
			// Nothing was changed yet: decide afresh, and when the answer
			// is no, close the journal so it holds nothing back.
			if _, err := checkReplace(s, name, id); err != nil {
				if aerr := r.journals.abandon(ctx, j); aerr != nil {
					r.log.WarnContext(ctx, "abandon replacement journal", "member", name, "err", aerr)
				}
				return err
			}
			return nil
		}
		return checkResume(s, j)
	}
	if j != nil && j.holds(time.Now()) {
		return fmt.Errorf("%w: membership change in flight: replacement of %s by action %s since %s is at phase %q (see the runbook to finish or clear it)",
			action.ErrUnsafe, j.Member, j.ActionID, j.Began.Format(time.RFC3339), j.Phase)
	}
	if other, err := r.journals.inFlight(ctx, r.cluster, name); err != nil {
		return fmt.Errorf("%w: %w", action.ErrUnsafe, err)
	} else if other != nil {
		return fmt.Errorf("%w: membership change in flight: replacement of %s by action %s is at phase %q", action.ErrUnsafe, other.Member, other.ActionID, other.Phase)
	}
	_, err = checkReplace(s, name, id)
	return err
}

func (r *Replace) journal(ctx context.Context, member string) (*Journal, error) {
	if r.journals == nil {
		return nil, fmt.Errorf("%s is not configured", Name)
	}
	return r.journals.get(ctx, r.cluster, member)
}

// quorumView is what a check found, for the audit trail.
type quorumView struct {
	Voters, HealthyVoters, Quorum   int
	VotersAfter, HealthyAfter, Need int
}

func (v quorumView) details() map[string]any {
	return map[string]any{
		"voters": v.Voters, "healthy_voters": v.HealthyVoters, "quorum": v.Quorum,
		"voters_after_removal": v.VotersAfter, "healthy_after_removal": v.HealthyAfter, "majority_after_removal": v.Need,
	}
}

// checkReplace decides whether the member may be replaced now: it is
// needed (the member is there and does not answer) and safe (no other
// change in flight, at least three voters, a leader, and a majority of
// healthy voters left after removing it).
func checkReplace(s *etcddet.Snapshot, name string, id etcddet.MemberID) (quorumView, error) {
	q := s.Quorum()
	v := quorumView{Voters: q.Voters, HealthyVoters: q.HealthyVoters, Quorum: q.Quorum}
	old := s.Member(id)
	if old == nil {
		for i := range s.Members {
			if m := &s.Members[i]; m.Name == name && m.Healthy {
				return v, fmt.Errorf("%w: member %s is %s now, a healthy member (already replaced)", action.ErrNotNeeded, name, m.ID)
			}
		}
		return v, fmt.Errorf("%w: member %s (%s) is no longer in the cluster", action.ErrNotNeeded, name, id)
	}
	if old.Name != name && old.Name != "" {
		return v, fmt.Errorf("%w: member %s is named %q, not %q: the event does not describe the cluster", action.ErrUnsafe, id, old.Name, name)
	}
	if old.IsLearner {
		return v, fmt.Errorf("%w: member %s is a learner: a membership change is in flight", action.ErrUnsafe, name)
	}
	if old.Reachable {
		// Running, if not healthy: removing it would stop it. A member is
		// replaced only when it does not answer at all.
		return v, fmt.Errorf("%w: member %s answers again", action.ErrNotNeeded, name)
	}
	for i := range s.Members {
		m := &s.Members[i]
		switch {
		case m.ID == id:
		case m.IsLearner:
			return v, fmt.Errorf("%w: membership change in flight: %s is a learner", action.ErrUnsafe, m.DisplayName())
		case m.Name == "":
			return v, fmt.Errorf("%w: membership change in flight: member %s was added but never started", action.ErrUnsafe, m.ID)
		}
	}
	if q.Voters < 3 {
		return v, fmt.Errorf("%w: the cluster has %d voters; replacing one of fewer than 3 would leave no fault tolerance during the change", action.ErrUnsafe, q.Voters)
	}
	if q.LeaderID == 0 {
		return v, fmt.Errorf("%w: no member knows a leader", action.ErrUnsafe)
	}
	v.VotersAfter = q.Voters - 1
	v.HealthyAfter = q.HealthyVoters // the member itself is not healthy
	v.Need = v.VotersAfter/2 + 1
	if v.HealthyAfter < v.Need {
		return v, fmt.Errorf("%w: removing %s would leave %d healthy of %d voters, fewer than the majority of %d: replacing it could lose quorum (%d of %d voters are healthy now)",
			action.ErrUnsafe, name, v.HealthyAfter, v.VotersAfter, v.Need, q.HealthyVoters, q.Voters)
	}
	return v, nil
}

// checkResume decides whether a replacement this action began may go on:
// the cluster has its quorum and no other change is in flight.
func checkResume(s *etcddet.Snapshot, j *Journal) error {
	q := s.Quorum()
	if q.HealthyVoters < q.Quorum {
		return fmt.Errorf("%w: resuming the replacement of %s: %d healthy of %d voters, below quorum %d", action.ErrUnsafe, j.Member, q.HealthyVoters, q.Voters, q.Quorum)
	}
	for i := range s.Members {
		m := &s.Members[i]
		if (m.IsLearner || m.Name == "") && !ours(m, j) {
			return fmt.Errorf("%w: resuming the replacement of %s: another membership change is in flight (%s)", action.ErrUnsafe, j.Member, m.DisplayName())
		}
	}
	return nil
}

// ours reports whether m is the replacement of j: its id, or (added but
// not yet journaled) its peer URL.
func ours(m *etcddet.Member, j *Journal) bool {
	if j.NewID != 0 {
		return m.ID == j.NewID
	}
	return m.ID != j.OldID && slices.ContainsFunc(m.PeerURLs, func(u string) bool { return slices.Contains(j.PeerURLs, u) })
}

// Act replaces the member, resuming from its journal when this action
// began it before.
func (r *Replace) Act(ctx context.Context, req action.Request, progress action.Progress) (action.Result, error) {
	start := time.Now()
	id, err := memberIDParam(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	name := req.TargetName()
	j, err := r.journal(ctx, name)
	if err != nil {
		return action.Result{}, err
	}
	resumed := j != nil && j.ActionID == req.ID
	if !resumed {
		if j, err = r.begin(ctx, req, name, id, progress); err != nil {
			return action.Result{}, err
		}
	} else {
		if j.Phase == phaseBegun {
			s, err := r.snapshot(ctx)
			if err != nil {
				return action.Result{}, err
			}
			if s.Member(j.OldID) == nil {
				return action.Result{}, fmt.Errorf("%w: member %s (%s) left the cluster while its replacement was only begun: check the member list", action.ErrUnsafe, name, j.OldID)
			}
			if _, err := checkReplace(s, name, j.OldID); err != nil {
				return action.Result{}, err
			}
		}
		progress(ctx, "resume", map[string]any{"member": name, "phase": j.Phase, "old_id": j.OldID.String(), "new_id": j.NewID.String(),
			"message": fmt.Sprintf("resuming the replacement of %s after phase %q", name, j.Phase)})
	}
	cli := r.prober.Cluster()

	if !j.reached(phaseRemoved) {
		_, err := cli.MemberRemove(ctx, uint64(j.OldID))
		switch {
		case err == nil, errors.Is(err, rpctypes.ErrMemberNotFound):
		default:
			// The remove may have been applied although it failed here (a
			// timeout): keep the journal, so the retry resumes, unless the
			// member is certainly still there.
			if list, lerr := cli.MemberList(ctx); lerr == nil && slices.ContainsFunc(list.Members, func(m *etcdserverpb.Member) bool { return m.ID == uint64(j.OldID) }) {
				if aerr := r.journals.abandon(ctx, j); aerr != nil {
					r.log.WarnContext(ctx, "abandon replacement journal", "member", name, "err", aerr)
				}
			}
			if errors.Is(err, rpctypes.ErrUnhealthy) {
				return action.Result{}, fmt.Errorf("%w: etcd refused to remove %s: %w", action.ErrUnsafe, name, err)
			}
			return action.Result{}, fmt.Errorf("remove member %s (%s): %w", name, j.OldID, err)
		}
		if err := r.journals.advance(ctx, j, phaseRemoved); err != nil {
			return action.Result{}, err
		}
		progress(ctx, "member removed", map[string]any{"member": name, "old_id": j.OldID.String()})
	}

	if !j.reached(phaseAdded) {
		newID, err := r.addLearner(ctx, j, progress)
		if err != nil {
			return action.Result{}, err
		}
		j.NewID = newID
		if err := r.journals.advance(ctx, j, phaseAdded); err != nil {
			return action.Result{}, err
		}
		progress(ctx, "learner added", map[string]any{"member": name, "new_id": newID.String(), "peer_urls": j.PeerURLs})
	}

	if !j.reached(phaseStarted) {
		if err := r.waitKnown(ctx, j); err != nil {
			return action.Result{}, err
		}
		spec, err := r.memberSpec(ctx, j)
		if err != nil {
			return action.Result{}, err
		}
		if err := r.prov.Start(ctx, spec, progress); err != nil {
			return action.Result{}, fmt.Errorf("start replacement %s: %w", name, err)
		}
		if err := r.journals.advance(ctx, j, phaseStarted); err != nil {
			return action.Result{}, err
		}
		progress(ctx, "member started", map[string]any{"member": name, "new_id": j.NewID.String(), "initial_cluster": spec.InitialCluster})
	}

	if resumed && j.Phase == phaseStarted {
		// The provisioner's process may have died with the healer that
		// started it; Start is idempotent and starts it again if so.
		spec, err := r.memberSpec(ctx, j)
		if err != nil {
			return action.Result{}, err
		}
		if err := r.prov.Start(ctx, spec, progress); err != nil {
			return action.Result{}, fmt.Errorf("start replacement %s again: %w", name, err)
		}
	}
	if !j.reached(phasePromoted) {
		if err := r.promote(ctx, j, progress); err != nil {
			return action.Result{}, err
		}
		if err := r.journals.advance(ctx, j, phasePromoted); err != nil {
			return action.Result{}, err
		}
		progress(ctx, "promoted", map[string]any{"member": name, "new_id": j.NewID.String(), "message": name + " votes again"})
	}
	return action.Result{
		Changed: true,
		Message: fmt.Sprintf("replaced etcd member %s: %s removed, %s added as learner, started, promoted", name, j.OldID, j.NewID),
		Details: map[string]any{
			"member": name, "old_id": j.OldID.String(), "new_id": j.NewID.String(), "peer_urls": j.PeerURLs,
			"resumed": resumed, "took": time.Since(start).Round(time.Millisecond).String(),
		},
	}, nil
}

// begin checks the cluster once more and opens the journal.
func (r *Replace) begin(ctx context.Context, req action.Request, name string, id etcddet.MemberID, progress action.Progress) (*Journal, error) {
	s, err := r.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	v, err := checkReplace(s, name, id)
	if err != nil {
		return nil, err
	}
	old := s.Member(id)
	if len(old.PeerURLs) == 0 || len(old.ClientURLs) == 0 {
		return nil, fmt.Errorf("%w: member %s advertises no peer or client URLs to keep", action.ErrUnsafe, name)
	}
	j := &Journal{ActionID: req.ID, Cluster: r.cluster, Member: name, OldID: id, PeerURLs: old.PeerURLs, ClientURLs: old.ClientURLs}
	if err := r.journals.begin(ctx, j); err != nil {
		return nil, fmt.Errorf("%w: %w", action.ErrUnsafe, err)
	}
	d := v.details()
	d["member"], d["old_id"], d["peer_urls"] = name, id.String(), old.PeerURLs
	d["message"] = fmt.Sprintf("quorum holds without %s: %d healthy of %d voters after removal, majority %d", name, v.HealthyAfter, v.VotersAfter, v.Need)
	progress(ctx, "quorum checked", d)
	return j, nil
}

// addLearner adds the replacement as a learner with the old peer URLs, or
// finds the one an earlier attempt added.
func (r *Replace) addLearner(ctx context.Context, j *Journal, progress action.Progress) (etcddet.MemberID, error) {
	cli := r.prober.Cluster()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return 0, fmt.Errorf("member list: %w", err)
	}
	for _, m := range list.Members {
		mm := etcddet.Member{ID: etcddet.MemberID(m.ID), PeerURLs: m.PeerURLs}
		if ours(&mm, j) {
			if !m.IsLearner {
				return 0, fmt.Errorf("%w: member %s with %s's peer URL is a voter that healer did not promote", action.ErrUnsafe, mm.ID, j.Member)
			}
			return mm.ID, nil // added by an earlier attempt
		}
	}
	// etcd refuses a member add ("unhealthy cluster") until its leader has
	// been connected to every voter for 5 seconds, as after an election:
	// that clears by itself, within CatchUpTimeout.
	wctx, cancel := context.WithTimeoutCause(ctx, r.cfg.CatchUpTimeout, fmt.Errorf("etcd refused to add %s as learner for %s", j.Member, r.cfg.CatchUpTimeout))
	defer cancel()
	for {
		resp, err := cli.MemberAddAsLearner(wctx, j.PeerURLs)
		if err == nil {
			return etcddet.MemberID(resp.Member.ID), nil
		}
		if !errors.Is(err, rpctypes.ErrUnhealthy) {
			return 0, fmt.Errorf("add %s as learner: %w", j.Member, err)
		}
		progress(ctx, "waiting", map[string]any{"member": j.Member, "message": "etcd refuses the learner until its leader has been connected to every voter for 5s: " + err.Error()})
		select {
		case <-wctx.Done():
			return 0, fmt.Errorf("add %s as learner: %w: %w", j.Member, context.Cause(wctx), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitKnown waits until every voter that answers lists the learner: a
// member that starts before its peers know it is refused by them, and its
// first attempt to publish itself then takes etcd's whole request timeout
// (5s and more) to fail.
func (r *Replace) waitKnown(ctx context.Context, j *Journal) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := r.prober.Cluster().MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	for _, m := range list.Members {
		if m.IsLearner || m.ID == uint64(j.NewID) || len(m.ClientURLs) == 0 {
			continue
		}
		cli, err := r.prober.NewClient(m.ClientURLs)
		if err != nil {
			return err
		}
		for {
			resp, err := cli.MemberList(ctx, clientv3.WithSerializable())
			if err == nil && slices.ContainsFunc(resp.Members, func(x *etcdserverpb.Member) bool { return x.ID == uint64(j.NewID) }) {
				break
			}
			if ctx.Err() != nil {
				break // a voter that does not answer is not waited for
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cli.Close()
	}
	return nil
}

// memberSpec is the spec the provisioner starts: the voters and the
// replacement make its initial cluster.
func (r *Replace) memberSpec(ctx context.Context, j *Journal) (MemberSpec, error) {
	list, err := r.prober.Cluster().MemberList(ctx)
	if err != nil {
		return MemberSpec{}, fmt.Errorf("member list: %w", err)
	}
	var initial []string
	for _, m := range list.Members {
		switch {
		case m.ID == uint64(j.NewID):
			for _, u := range m.PeerURLs {
				initial = append(initial, j.Member+"="+u)
			}
		case m.IsLearner:
		default:
			if m.Name == "" {
				return MemberSpec{}, fmt.Errorf("%w: voter %x has no name yet", action.ErrUnsafe, m.ID)
			}
			for _, u := range m.PeerURLs {
				initial = append(initial, m.Name+"="+u)
			}
		}
	}
	s := MemberSpec{ActionID: j.ActionID, Name: j.Member, ID: j.NewID.String(), PeerURLs: j.PeerURLs, ClientURLs: j.ClientURLs, InitialCluster: strings.Join(initial, ",")}
	return s, s.Validate()
}

// promote waits until the learner has caught up with the leader, then
// promotes it; etcd refuses a learner that lags, and that is retried.
func (r *Replace) promote(ctx context.Context, j *Journal, progress action.Progress) error {
	ctx, cancel := context.WithTimeoutCause(ctx, r.cfg.CatchUpTimeout, fmt.Errorf("replacement %s did not catch up within %s", j.Member, r.cfg.CatchUpTimeout))
	defer cancel()
	cli := r.prober.Cluster()
	var last string
	var reported time.Time
	for {
		s, err := r.prober.Probe(ctx)
		switch {
		case err != nil:
			last = err.Error()
		default:
			m, q := s.Member(j.NewID), s.Quorum()
			lead := s.Member(q.LeaderID)
			switch {
			case m == nil:
				return fmt.Errorf("%w: the replacement %s (%s) left the member list", action.ErrUnsafe, j.Member, j.NewID)
			case !m.IsLearner:
				return nil // promoted already (by an attempt that did not record it)
			case !m.Reachable || lead == nil:
				last = "replacement not answering yet: " + m.StatusError
			default:
				lag := uint64(0)
				if lead.RaftIndex > m.RaftIndex {
					lag = lead.RaftIndex - m.RaftIndex
				}
				if time.Since(reported) >= time.Second {
					reported = time.Now()
					progress(ctx, "catching up", map[string]any{"member": j.Member, "raft_index": m.RaftIndex, "leader_raft_index": lead.RaftIndex, "lag": lag})
				}
				if lag > r.cfg.MaxLag {
					last = fmt.Sprintf("lags the leader by %d entries", lag)
					break
				}
				_, err := cli.MemberPromote(ctx, uint64(j.NewID))
				switch {
				case err == nil, errors.Is(err, rpctypes.ErrMemberNotLearner):
					return nil
				default:
					last = "promote: " + err.Error() // ErrLearnerNotReady: not caught up yet
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", context.Cause(ctx), last)
		case <-time.After(r.cfg.PollInterval):
		}
	}
}

// Verify waits until the replacement is a healthy voter and every voter
// is healthy, then reads every key from the replacement.
func (r *Replace) Verify(ctx context.Context, req action.Request) error {
	j, err := r.journal(ctx, req.TargetName())
	if err != nil {
		return err
	}
	if j == nil || j.ActionID != req.ID {
		return fmt.Errorf("no replacement of %s by action %s in the journal", req.TargetName(), req.ID)
	}
	var last error
	for {
		if last = r.verifyOnce(ctx, j); last == nil {
			if j.Phase != phaseVerified {
				return r.journals.advance(ctx, j, phaseVerified)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify replacement of %s: %w", j.Member, last)
		case <-time.After(r.cfg.PollInterval):
		}
	}
}

func (r *Replace) verifyOnce(ctx context.Context, j *Journal) error {
	s, err := r.snapshot(ctx)
	if err != nil {
		return err
	}
	m, q := s.Member(j.NewID), s.Quorum()
	switch {
	case m == nil:
		return fmt.Errorf("replacement %s (%s) is not a member", j.Member, j.NewID)
	case m.IsLearner:
		return fmt.Errorf("replacement %s is still a learner", j.Member)
	case !m.Healthy:
		return fmt.Errorf("replacement %s is not healthy: %s%s", j.Member, m.StatusError, m.HealthError)
	case q.HealthyVoters < q.Voters:
		return fmt.Errorf("%d of %d voters healthy", q.HealthyVoters, q.Voters)
	}
	n, err := r.readAll(ctx, m.ClientURLs)
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "etcd replacement verified", "member", j.Member, "new_id", j.NewID.String(), "keys_read", n, "voters", q.Voters)
	return nil
}

// readAll reads every key and value from the member at one revision and
// compares the count with the cluster's at that revision.
func (r *Replace) readAll(ctx context.Context, urls []string) (int64, error) {
	head, err := r.prober.Cluster().Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count keys: %w", err)
	}
	rev, want := head.Header.Revision, head.Count
	mc, err := r.prober.NewClient(urls)
	if err != nil {
		return 0, err
	}
	defer func() { _ = mc.Close() }()
	var got int64
	key := ""
	for {
		resp, err := mc.Get(ctx, key, clientv3.WithFromKey(), clientv3.WithRev(rev), clientv3.WithLimit(1000))
		if err != nil {
			return got, fmt.Errorf("read keys from the replacement at revision %d: %w", rev, err)
		}
		got += int64(len(resp.Kvs))
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if got != want {
		return got, fmt.Errorf("the replacement returned %d keys at revision %d, the cluster has %d", got, rev, want)
	}
	return got, nil
}

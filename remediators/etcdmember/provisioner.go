package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
	"github.com/selfheal/healer/internal/etcdlocal"
)

// Provisioner starts a replacement member on the host that runs it, with a
// fresh data directory, joining the running cluster.
type Provisioner interface {
	// Start starts the member. It must be idempotent for spec.ActionID: a
	// member already started by this action is left running, and its data
	// directory is not replaced again. The old data directory is kept
	// aside, not deleted. An error wrapping action.ErrUnsafe means the
	// member cannot be provisioned here at all (not configured).
	Start(ctx context.Context, spec MemberSpec, progress action.Progress) error
}

// MemberSpec is a replacement member to start.
type MemberSpec struct {
	// ActionID is the action replacing the member.
	ActionID string `json:"action_id"`
	// Name is the member's name, the same as the failed member's.
	Name string `json:"name"`
	// ID is the replacement's member id (as etcdctl prints it).
	ID string `json:"id"`
	// PeerURLs and ClientURLs are the failed member's.
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	// InitialCluster is "name=peerURL,..." of the voters and this member,
	// for --initial-cluster.
	InitialCluster string `json:"initial_cluster"`
}

// maxURLs bounds the URL lists of a spec and maxInitial its initial
// cluster: far more than any etcd cluster has.
const (
	maxURLs    = 8
	maxInitial = 64
)

// Validate reports what is missing or malformed. The action id and the
// member name become parts of file names on the host, and the URLs and the
// initial cluster parts of the member's command line, so each is checked
// against agentparam's allow-lists, not merely for being there.
func (s *MemberSpec) Validate() error {
	var errs []error
	if s.ActionID == "" || s.Name == "" || s.InitialCluster == "" {
		errs = append(errs, errors.New("action_id, name and initial_cluster are required"))
	}
	if len(s.PeerURLs) == 0 || len(s.ClientURLs) == 0 {
		errs = append(errs, errors.New("peer_urls and client_urls are required"))
	}
	if s.ActionID != "" {
		errs = append(errs, agentparam.ID("action_id", s.ActionID))
	}
	if s.Name != "" {
		errs = append(errs, agentparam.ID("name", s.Name))
	}
	if s.ID != "" {
		errs = append(errs, agentparam.HexID("id", s.ID))
	}
	for _, l := range []struct {
		param string
		urls  []string
	}{{"peer_urls", s.PeerURLs}, {"client_urls", s.ClientURLs}} {
		if len(l.urls) > maxURLs {
			errs = append(errs, fmt.Errorf("%s: %d URLs, at most %d", l.param, len(l.urls), maxURLs))
			continue
		}
		for i, u := range l.urls {
			if _, err := agentparam.URL(fmt.Sprintf("%s[%d]", l.param, i), u); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.InitialCluster != "" {
		errs = append(errs, validInitialCluster(s.InitialCluster))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: replacement member spec: %w", action.ErrInvalidParams, err)
	}
	return nil
}

// validInitialCluster checks --initial-cluster: name=URL pairs, separated
// by commas.
func validInitialCluster(v string) error {
	pairs := strings.Split(v, ",")
	if len(pairs) > maxInitial {
		return fmt.Errorf("initial_cluster: %d members, at most %d", len(pairs), maxInitial)
	}
	for i, p := range pairs {
		name, u, ok := strings.Cut(p, "=")
		if !ok {
			return &agentparam.Error{Param: fmt.Sprintf("initial_cluster[%d]", i), Value: p, Reason: "want name=URL"}
		}
		if err := agentparam.ID(fmt.Sprintf("initial_cluster[%d] name", i), name); err != nil {
			return err
		}
		if _, err := agentparam.URL(fmt.Sprintf("initial_cluster[%d] URL", i), u); err != nil {
			return err
		}
	}
	return nil
}

// Local starts replacements as local processes (etcdlocal), for tests and
// `healer demo`.
type Local struct {
	cfg LocalConfig
}

var _ Provisioner = (*Local)(nil)

// NewLocal returns the local provisioner.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Local{cfg: cfg}, nil
}

// spec is the etcdlocal spec of a replacement.
func (l *Local) spec(s MemberSpec) (etcdlocal.Spec, error) {
	m, ok := l.cfg.Members[s.Name]
	if !ok {
		return etcdlocal.Spec{}, fmt.Errorf("%w: member %s is not one this host runs (etcdReplace.local.members)", action.ErrUnsafe, s.Name)
	}
	return etcdlocal.Spec{
		Name: s.Name, DataDir: m.DataDir, LogFile: m.LogFile,
		PeerURL: s.PeerURLs[0], ClientURL: s.ClientURLs[0],
		InitialCluster: s.InitialCluster, ClusterState: etcdlocal.StateExisting, NoFsync: l.cfg.NoFsync,
	}, nil
}

// Start moves the old data directory aside (to <dataDir>.replaced-<action>)
// and starts the member process.
func (l *Local) Start(ctx context.Context, s MemberSpec, progress action.Progress) error {
	if err := s.Validate(); err != nil {
		return err
	}
	spec, err := l.spec(s)
	if err != nil {
		return err
	}
	if pid, ok := etcdlocal.Running(spec); ok {
		owner, _ := os.ReadFile(ownerFile(spec))
		if strings.TrimSpace(string(owner)) == s.ActionID {
			progress(ctx, "provision", map[string]any{"member": s.Name, "pid": pid, "message": "already started by this action"})
			return nil
		}
		return fmt.Errorf("%w: member %s is already running here (pid %d) and was not started by this action", action.ErrUnsafe, s.Name, pid)
	}
	aside := strings.TrimRight(spec.DataDir, "/") + ".replaced-" + s.ActionID
	owner, _ := os.ReadFile(ownerFile(spec))
	if strings.TrimSpace(string(owner)) != s.ActionID {
		// The data directory is the failed member's: keep it aside.
		if _, err := os.Stat(spec.DataDir); err == nil {
			if err := os.Rename(spec.DataDir, aside); err != nil {
				return fmt.Errorf("keep the old data dir of %s aside: %w", s.Name, err)
			}
			progress(ctx, "provision", map[string]any{"member": s.Name, "old_data_dir": aside})
		}
		if err := os.WriteFile(ownerFile(spec), []byte(s.ActionID+"\n"), 0o600); err != nil {
			return fmt.Errorf("record the owner of %s's data dir: %w", s.Name, err)
		}
	}
	p, err := etcdlocal.StartProcess(l.cfg.Command, spec)
	if err != nil {
		return err
	}
	progress(ctx, "provision", map[string]any{"member": s.Name, "pid": p.PID, "data_dir": spec.DataDir, "message": "started a local member process"})
	return nil
}

// ownerFile records which action made the member's current data dir.
func ownerFile(s etcdlocal.Spec) string { return strings.TrimRight(s.DataDir, "/") + ".action" }

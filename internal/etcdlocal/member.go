package etcdlocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Cluster states, as etcd's --initial-cluster-state names them.
const (
	StateNew      = "new"
	StateExisting = "existing"
)

// SpecEnv names the environment variable that carries a member's Spec, as
// JSON, to a child process (see StartProcess and RunIfAsked).
const SpecEnv = "HEALER_ETCD_MEMBER_SPEC"

// Spec is one member to run.
type Spec struct {
	// Name is the member's name (--name).
	Name string `json:"name"`
	// DataDir is the member's data directory (--data-dir).
	DataDir string `json:"data_dir"`
	// PeerURL and ClientURL are where the member listens and what it
	// advertises, for peers and clients.
	PeerURL   string `json:"peer_url"`
	ClientURL string `json:"client_url"`
	// InitialCluster is "name=peerURL,..." of every voter and this
	// member (--initial-cluster).
	InitialCluster string `json:"initial_cluster"`
	// ClusterState is StateNew for a member of a new cluster, StateExisting
	// for one joining a running cluster.
	ClusterState string `json:"cluster_state"`
	// Token is the initial cluster token of a new cluster.
	Token string `json:"token,omitempty"`
	// LogFile receives the member's log; empty discards it.
	LogFile string `json:"log_file,omitempty"`
	// NoFsync turns off fsync, for tests and demos on slow disks only: a
	// crash of the machine can lose acknowledged writes.
	NoFsync bool `json:"no_fsync,omitempty"`
}

// Validate reports what is missing or malformed.
func (s *Spec) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if s.DataDir == "" {
		errs = append(errs, errors.New("data_dir is required"))
	}
	for _, u := range []struct{ name, v string }{{"peer_url", s.PeerURL}, {"client_url", s.ClientURL}} {
		if _, err := url.Parse(u.v); err != nil || u.v == "" {
			errs = append(errs, fmt.Errorf("%s %q: want a URL", u.name, u.v))
		}
	}
	if s.InitialCluster == "" {
		errs = append(errs, errors.New("initial_cluster is required"))
	}
	if s.ClusterState != StateNew && s.ClusterState != StateExisting {
		errs = append(errs, fmt.Errorf("cluster_state %q: want %q or %q", s.ClusterState, StateNew, StateExisting))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("etcd member spec: %w", err)
	}
	return nil
}

// config is the embed configuration of the spec.
func (s *Spec) config() (*embed.Config, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	peer, _ := url.Parse(s.PeerURL)
	client, _ := url.Parse(s.ClientURL)
	cfg := embed.NewConfig()
	cfg.Name = s.Name
	cfg.Dir = s.DataDir
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster = s.InitialCluster
	cfg.InitialClusterToken = s.Token
	cfg.ClusterState = s.ClusterState
	cfg.UnsafeNoFsync = s.NoFsync
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"/dev/null"}
	if s.LogFile != "" {
		cfg.LogOutputs = []string{s.LogFile}
	}
	// A demo or test cluster elects within a second of losing its leader.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	return cfg, nil
}

// Run runs the member in this process until ctx ends or the member fails.
// ready, when not nil, is closed once the member has joined its cluster.
func Run(ctx context.Context, s Spec, ready chan<- struct{}) error {
	cfg, err := s.config()
	if err != nil {
		return err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd member %s: %w", s.Name, err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		if ready != nil {
			close(ready)
		}
	case err := <-e.Err():
		return fmt.Errorf("etcd member %s failed before it was ready: %w", s.Name, err)
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd member %s: %w", s.Name, err)
	case <-e.Server.StopNotify():
		return fmt.Errorf("etcd member %s stopped (removed from the cluster?)", s.Name)
	case <-ctx.Done():
		return nil
	}
}

// SpecFromEnv reads the Spec a parent process put in SpecEnv.
func SpecFromEnv() (Spec, bool, error) {
	raw := os.Getenv(SpecEnv)
	if raw == "" {
		return Spec{}, false, nil
	}
	var s Spec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Spec{}, true, fmt.Errorf("%s: %w", SpecEnv, err)
	}
	return s, true, s.Validate()
}

// RunIfAsked turns the process into the member SpecEnv describes, when it
// is set, and never returns then: it runs until SIGTERM or SIGINT and exits
// 0, or exits 1 when the member fails. Call it first thing in a test's
// TestMain, so tests can run members from their own binary.
func RunIfAsked() {
	s, ok, err := SpecFromEnv()
	if !ok {
		return
	}
	os.Exit(RunMain(context.Background(), s, err))
}

// RunMain runs the member s (or reports specErr) until ctx ends or SIGTERM
// or SIGINT, and returns the process's exit code.
func RunMain(ctx context.Context, s Spec, specErr error) int {
	if specErr != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", specErr)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ready := make(chan struct{})
	go func() {
		select {
		case <-ready:
			fmt.Fprintf(os.Stderr, "etcd member %s ready (pid %d), clients at %s\n", s.Name, os.Getpid(), s.ClientURL)
		case <-time.After(time.Minute):
		}
	}()
	if err := Run(ctx, s, ready); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

package serve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/selfheal/healer/audit"
)

// AuditConfig is where serve's audit signing key is and how it signs
// checkpoints of the trail (see package audit).
type AuditConfig struct {
	// SigningKeyFile is the Ed25519 key (PEM PKCS #8, mode 0600) that signs
	// checkpoints and from which the records' tags are derived. Default
	// <dataDir>/audit-signing.key. When there is no file there, serve
	// generates one (and says so loudly): every replica must use the same
	// key, so with several replicas give them one file (the chart mounts
	// a Secret).
	SigningKeyFile string `json:"signingKeyFile"`
	// CheckpointRecords and CheckpointInterval: a checkpoint is signed
	// after this many records, and at least this often while records are
	// appended. Defaults 1000 and 60s.
	CheckpointRecords  uint64        `json:"checkpointRecords"`
	CheckpointInterval time.Duration `json:"checkpointInterval"`
	// CheckpointsDir is a directory checkpoints are copied to, besides
	// <dataDir>/checkpoints, and read from at start: storage that outlives
	// the data dir and that NATS cannot reach (a persistent volume shared
	// by the replicas).
	CheckpointsDir string `json:"checkpointsDir"`

	// AcceptNewTrail starts on an audit stream that disagrees with the
	// newest checkpoint, and audits it (audit.accepted). Only the
	// --accept-new-audit-trail flag sets it: a configuration file keeping
	// it set would accept every replacement of the trail unseen.
	AcceptNewTrail bool `json:"-"`
}

// ApplyDefaults fills zero fields; dataDir is serve's data dir.
func (c *AuditConfig) ApplyDefaults(dataDir string) {
	if c.SigningKeyFile == "" {
		c.SigningKeyFile = filepath.Join(dataDir, "audit-signing.key")
	}
	if c.CheckpointRecords == 0 {
		c.CheckpointRecords = 1000
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Minute
	}
}

// Validate reports settings the checkpointer cannot work with.
func (c *AuditConfig) Validate() error {
	var errs []error
	if c.CheckpointInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("audit.checkpointInterval %s: must be at least 100ms", c.CheckpointInterval))
	}
	if c.CheckpointRecords > 1_000_000 {
		errs = append(errs, fmt.Errorf("audit.checkpointRecords %d: at most 1000000", c.CheckpointRecords))
	}
	return errors.Join(errs...)
}

// CheckpointsDir is where serve keeps its own checkpoints.
func (c *Config) CheckpointsDir() string { return filepath.Join(c.DataDir, "checkpoints") }

// setupAudit loads (or makes) the signing key, opens the trail with it,
// checks the stream against the newest checkpoint (refusing to start on a
// trail that disagrees, unless told to accept it) and starts signing
// checkpoints until the server closes.
func (s *Server) setupAudit(ctx context.Context) error {
	cfg := s.cfg.Audit
	key, created, err := audit.LoadOrCreateSigningKey(cfg.SigningKeyFile)
	if err != nil {
		return err
	}
	pubPath := filepath.Join(s.cfg.DataDir, "audit-signing.pub")
	if err := key.WritePublicKey(pubPath); err != nil {
		return err
	}
	if created {
		s.log.Warn("generated a new audit signing key: checkpoints signed before with another key will not verify, and every replica must use this same key",
			"signing_key_file", cfg.SigningKeyFile, "public_key_file", pubPath, "key_id", key.Public().ID())
	} else {
		s.log.Info("audit signing key loaded", "signing_key_file", cfg.SigningKeyFile, "public_key_file", pubPath, "key_id", key.Public().ID())
	}
	s.trail = audit.NewTrail(s.js, s.log, audit.WithSigningKey(key))

	host, _ := os.Hostname()
	ccfg := audit.CheckpointerConfig{
		Instance: host, Dir: audit.CheckpointDir(s.cfg.CheckpointsDir()),
		Every: cfg.CheckpointRecords, Interval: cfg.CheckpointInterval,
	}
	if cfg.CheckpointsDir != "" {
		ccfg.Sinks = []audit.CheckpointDir{audit.CheckpointDir(cfg.CheckpointsDir)}
	}
	cp := audit.NewCheckpointer(ccfg, s.trail, key, s.log)
	if err := cp.Start(ctx, cfg.AcceptNewTrail, acceptedBy(host)); err != nil {
		return err
	}
	s.checkpoints = cp
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { cp.Run(runCtx) })
	s.closers = append(s.closers, func() {
		stop()
		wg.Wait()
		// A last checkpoint covers what this run appended.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := cp.Checkpoint(fctx); err != nil {
			s.log.Error("final audit checkpoint", "error", err)
		}
	})
	return nil
}

// acceptedBy names who accepted a new trail: the flag, the OS user and
// the host.
func acceptedBy(host string) string {
	name := "unknown user"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return fmt.Sprintf("healer serve --accept-new-audit-trail (OS user %s on %s)", name, host)
}

// registerAuditMetrics exports the count of foreign audit records.
func (s *Server) registerAuditMetrics(meter metric.Meter) error {
	_, err := meter.Int64ObservableCounter("healer_audit_foreign_records",
		metric.WithDescription("Records found in the audit stream that healer's committer did not write (no valid tag): something else appended them. Any value above 0 is an incident."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(s.trail.ForeignSeen())) //nolint:gosec // a count
			return nil
		}))
	return err
}

package certrenew

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
)

// Verb names on the wire.
const (
	// VerbRenew re-issues a configured certificate.
	VerbRenew = "cert.renew"
	// VerbCheck reports a configured certificate: the file's, the CA's and
	// the live endpoint's.
	VerbCheck = "cert.check"
)

// Verbs is the node half: the certificate verbs of one master's agent.
type Verbs struct {
	cfg   Config
	certs map[string]Cert
	log   *slog.Logger
	now   func() time.Time
	mu    sync.Mutex // one renewal at a time
}

// NewVerbs builds the node half; cfg gets its defaults and is validated.
func NewVerbs(cfg Config, log *slog.Logger) (*Verbs, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verbs{cfg: cfg, certs: map[string]Cert{}, log: log.With("remediator", Name), now: time.Now}
	for _, c := range cfg.Certs {
		v.certs[c.Name] = c
	}
	return v, nil
}

// Verbs returns the node verbs to register with the agent.
func (v *Verbs) Verbs() []action.NodeVerb {
	return []action.NodeVerb{verb{VerbRenew, v.renew}, verb{VerbCheck, v.check}}
}

type verb struct {
	name string
	run  func(context.Context, action.NodeRequest, action.Progress) (action.Result, error)
}

func (v verb) Name() string { return v.name }
func (v verb) Run(ctx context.Context, req action.NodeRequest, p action.Progress) (action.Result, error) {
	return v.run(ctx, req, p)
}

var _ action.NodeVerb = verb{}

// cert finds the configured certificate that params name, by "cert"
// (its name) or "file" (its certificate file, as the certexpiry detector
// reports it). Both are checked by agentparam before they are looked up.
func (v *Verbs) cert(params map[string]any) (Cert, error) {
	name, file, err := targetParams(params)
	if err != nil {
		return Cert{}, err
	}
	if file != "" {
		for _, c := range v.cfg.Certs {
			if filepath.Clean(c.CertFile) == file {
				return c, nil
			}
		}
		return Cert{}, fmt.Errorf("%w: no renewable certificate is configured with file %s on this node", action.ErrInvalidParams, agentparam.Quote(file))
	}
	c, ok := v.certs[name]
	if !ok {
		return Cert{}, fmt.Errorf("%w: certificate %q is not configured on this node", action.ErrInvalidParams, name)
	}
	return c, nil
}

// backupPath is where the certificate replaced by action id is kept; id
// has passed agentparam.ID, so the backup stays beside the certificate.
func backupPath(c Cert, id string) string { return c.CertFile + ".healer-" + id + ".bak" }

func (v *Verbs) renew(ctx context.Context, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	c, err := v.cert(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	// The action id names the backup file.
	if err := agentparam.ID("action id", req.ID); err != nil {
		return action.Result{}, fmt.Errorf("%s: %w", VerbRenew, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old, err := readCert(c.CertFile)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: %s: %w", action.ErrUnsafe, c.Name, err)
	}
	backup := backupPath(c, req.ID)
	if _, err := os.Stat(backup); err == nil {
		// A retry of a renewal that already wrote the file.
		return action.Result{Message: c.Name + " already renewed by this action", Details: describe(c, old, nil)}, nil
	}
	key, err := readKey(c.KeyFile)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: %s: %w", action.ErrUnsafe, c.Name, err)
	}
	ca, err := readCert(c.CAFile)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: %s: CA: %w", action.ErrUnsafe, c.Name, err)
	}
	caKey, err := readKey(c.CAKeyFile)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: %s: CA key: %w", action.ErrUnsafe, c.Name, err)
	}
	r, err := reissue(old, key, ca, caKey, c.Validity, v.cfg.MinCALeft, v.now())
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: renew %s: %w", action.ErrUnsafe, c.Name, err)
	}
	if err := writeAtomic(c.CertFile, backup, r.pem); err != nil {
		return action.Result{}, fmt.Errorf("renew %s: %w", c.Name, err)
	}
	details := describe(c, r.new, old)
	details["backup"] = backup
	progress(ctx, "certificate written", details)
	v.log.WarnContext(ctx, "certificate renewed", "cert", c.Name, "serial", serialHex(r.new), "not_after", r.new.NotAfter, "backup", backup, "action_id", req.ID)
	return action.Result{Changed: true, Message: fmt.Sprintf("%s renewed until %s", c.Name, r.new.NotAfter.UTC().Format(time.RFC3339)), Details: details}, nil
}

func describe(c Cert, cur, old *x509.Certificate) map[string]any {
	d := map[string]any{
		"cert": c.Name, "file": c.CertFile, "serial": serialHex(cur), "not_after": cur.NotAfter.UTC(),
		"subject": cur.Subject.CommonName, "dns_names": cur.DNSNames, "key_type": keyType(cur.PublicKey),
		"component": c.Component, "endpoint": c.Endpoint,
	}
	if old != nil {
		d["old_serial"], d["old_not_after"] = serialHex(old), old.NotAfter.UTC()
	}
	return d
}

func (v *Verbs) check(ctx context.Context, req action.NodeRequest, _ action.Progress) (action.Result, error) {
	c, err := v.cert(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	cur, err := readCert(c.CertFile)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: %s: %w", action.ErrUnsafe, c.Name, err)
	}
	d := describe(c, cur, nil)
	now := v.now()
	d["days_left"] = cur.NotAfter.Sub(now).Hours() / 24
	if ca, err := readCert(c.CAFile); err == nil {
		d["ca_not_after"] = ca.NotAfter.UTC()
		d["ca_days_left"] = ca.NotAfter.Sub(now).Hours() / 24
		d["ca_ok"] = ca.NotAfter.Sub(now) >= v.cfg.MinCALeft
	} else {
		d["ca_error"] = err.Error()
		d["ca_ok"] = false
	}
	if c.Endpoint != "" {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		leaf, err := liveLeaf(lctx, c.Endpoint)
		cancel()
		if err != nil {
			d["live_error"] = err.Error()
		} else {
			d["live_serial"] = serialHex(leaf)
			d["live_not_after"] = leaf.NotAfter.UTC()
			d["live_matches_file"] = leaf.SerialNumber.Cmp(cur.SerialNumber) == 0
		}
	}
	return action.Result{Message: fmt.Sprintf("%s valid until %s", c.Name, cur.NotAfter.UTC().Format(time.RFC3339)), Details: d}, nil
}

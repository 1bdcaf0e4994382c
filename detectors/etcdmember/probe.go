package etcdmember

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ErrUnreachable is returned by Probe when no endpoint answered the member
// list: healer cannot see the cluster, which says nothing about its
// members (it may be healer's network or credentials), so nothing is
// concluded from such a poll.
var ErrUnreachable = errors.New("etcd cluster unreachable")

// Prober polls an etcd cluster: the member list, each member's status and
// health, and the alarms. It keeps a client for the configured endpoints
// and one for each member's client URLs. Its methods are safe for
// concurrent use.
type Prober struct {
	cfg  Config
	tls  *tls.Config
	now  func() time.Time
	list *clientv3.Client

	mu      sync.Mutex
	members map[MemberID]*memberClient
	closed  bool
}

// memberClient is the client of one member, talking to its client URLs
// only.
type memberClient struct {
	urls  string // the client URLs it was made for, joined
	cli   *clientv3.Client
	maint clientv3.Maintenance // status over cli's connection
}

// NewProber returns a prober for the cluster; cfg gets its defaults applied
// and is validated, and the TLS files are read. Creating it does not
// connect: Probe does. Close it when done.
func NewProber(cfg Config) (*Prober, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := tlsConfig(&cfg)
	if err != nil {
		return nil, err
	}
	p := &Prober{cfg: cfg, tls: tc, now: time.Now, members: map[MemberID]*memberClient{}}
	p.list, err = p.client(cfg.Endpoints, 0)
	if err != nil {
		return nil, fmt.Errorf("etcdmember: client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return p, nil
}

// client returns a client for the endpoints. retries limits the retries of
// a failing request; 0 keeps the client's default, which lets a request
// move on to another endpoint.
func (p *Prober) client(endpoints []string, retries uint) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: p.cfg.DialTimeout,
		TLS:         p.tls,
		Logger:      zap.NewNop(),
		// A member that comes back is reconnected to within an interval,
		// not after gRPC's default backoff of up to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: p.cfg.Interval},
			MinConnectTimeout: p.cfg.DialTimeout,
		})},
		MaxUnaryRetries: retries,
	})
}

// tlsConfig returns the TLS client configuration, or nil for http
// endpoints.
func tlsConfig(cfg *Config) (*tls.Config, error) {
	if cfg.TLS == nil {
		if scheme, _ := checkEndpoint(cfg.Endpoints[0]); scheme == "https" {
			return &tls.Config{MinVersion: tls.VersionTLS12}, nil
		}
		return nil, nil
	}
	t := cfg.TLS
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcdmember: tls.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcdmember: tls.caFile %s: no PEM certificate in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		load := func() (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("etcdmember: tls client certificate %s: %w", t.CertFile, err)
			}
			return &c, nil
		}
		if _, err := load(); err != nil {
			return nil, err
		}
		// Read for each handshake, so a renewed certificate is used.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return load() }
	}
	return tc, nil
}

// Cluster returns the client of the configured endpoints, for callers
// that change the membership (etcd.replace-member). It is closed by Close.
func (p *Prober) Cluster() *clientv3.Client { return p.list }

// NewClient returns a client, with the prober's TLS settings, that talks
// to the endpoints only (one member's client URLs). The caller closes it.
func (p *Prober) NewClient(endpoints []string) (*clientv3.Client, error) {
	return p.client(slices.Clone(endpoints), 1)
}

// Close closes every client.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	errs := []error{p.list.Close()}
	for id, mc := range p.members {
		errs = append(errs, mc.cli.Close())
		delete(p.members, id)
	}
	return ignoreCanceled(errors.Join(errs...))
}

// ignoreCanceled drops the context.Canceled that closing a client
// returns.
func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Probe polls the cluster once: the member list (linearizable; from one
// member's local view when that fails, as when quorum is lost), then in
// parallel each member's status and health, and the alarms. It fails with
// ErrUnreachable only when no member list could be had; a member or the
// alarm list failing is part of the snapshot.
func (p *Prober) Probe(ctx context.Context) (Snapshot, error) {
	s := Snapshot{Time: p.now()}
	list, err := p.memberList(ctx, false)
	if err != nil {
		var serr error
		if list, serr = p.memberList(ctx, true); serr != nil {
			return s, fmt.Errorf("%w: member list from %s: %w (serializable: %w)", ErrUnreachable, strings.Join(p.cfg.Endpoints, ","), err, serr)
		}
		s.Serializable = true
	}
	for _, m := range list.Members {
		s.Members = append(s.Members, Member{
			ID: MemberID(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner,
		})
	}
	clients, clientErrs, err := p.memberClients(s.Members)
	if err != nil {
		return s, err
	}

	var wg sync.WaitGroup
	for i := range s.Members {
		m := &s.Members[i]
		if err := clientErrs[m.ID]; err != nil {
			m.StatusError = err.Error()
			continue
		}
		wg.Go(func() { p.probeMember(ctx, clients[m.ID], m) })
	}
	wg.Go(func() {
		actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
		defer cancel()
		resp, err := p.list.AlarmList(actx)
		if err != nil {
			s.AlarmsError = fmt.Sprintf("alarm list from %s: %v", strings.Join(p.cfg.Endpoints, ","), err)
			return
		}
		s.AlarmsKnown = true
		for _, a := range resp.Alarms {
			s.Alarms = append(s.Alarms, Alarm{MemberID: MemberID(a.MemberID), Type: a.Alarm.String()})
		}
	})
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return s, fmt.Errorf("probe etcd cluster %s: %w", p.cfg.ClusterName, err)
	}
	return s, nil
}

func (p *Prober) memberList(ctx context.Context, serializable bool) (*clientv3.MemberListResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	return p.list.MemberList(ctx, opts...)
}

// memberClients returns the clients of the members that have client URLs,
// making those that are new or whose URLs changed and closing those of
// members that are gone. A member whose client cannot be made (its URLs
// are malformed) has an error instead.
func (p *Prober) memberClients(members []Member) (map[MemberID]*memberClient, map[MemberID]error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, errors.New("etcdmember: prober is closed")
	}
	out := make(map[MemberID]*memberClient, len(members))
	errs := map[MemberID]error{}
	keep := map[MemberID]bool{}
	for _, m := range members {
		if len(m.ClientURLs) == 0 {
			continue
		}
		keep[m.ID] = true
		urls := strings.Join(m.ClientURLs, ",")
		mc := p.members[m.ID]
		if mc != nil && mc.urls != urls {
			_ = mc.cli.Close() // replaced: its errors concern no one
			delete(p.members, m.ID)
			mc = nil
		}
		if mc == nil {
			// Retry little: a member that does not answer now is asked
			// again at the next poll, and LostAfter absorbs blips.
			cli, err := p.client(slices.Clone(m.ClientURLs), 1)
			if err != nil {
				errs[m.ID] = fmt.Errorf("client for member %s at %s: %w", m.DisplayName(), urls, err)
				continue
			}
			mc = &memberClient{urls: urls, cli: cli, maint: clientv3.NewMaintenanceFromMaintenanceClient(
				clientv3.RetryMaintenanceClient(cli, cli.ActiveConnection()), cli)}
			p.members[m.ID] = mc
		}
		out[m.ID] = mc
	}
	for id, mc := range p.members {
		if !keep[id] {
			_ = mc.cli.Close()
			delete(p.members, id)
		}
	}
	return out, errs, nil
}

// probeMember fills in m's status and health.
func (p *Prober) probeMember(ctx context.Context, mc *memberClient, m *Member) {
	if mc == nil {
		m.StatusError = "no client URLs: the member was added but has not started"
		return
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	st, err := mc.maint.Status(sctx, m.ClientURLs[0])
	cancel()
	switch {
	case err != nil:
		m.StatusError = fmt.Sprintf("status of member %s at %s: %v", m.DisplayName(), mc.urls, err)
		return
	case st.Header != nil && st.Header.MemberId != uint64(m.ID):
		m.StatusError = fmt.Sprintf("status of member %s at %s: answered by member %s", m.DisplayName(), mc.urls, MemberID(st.Header.MemberId))
		return
	}
	m.Reachable = true
	m.Version, m.Leader, m.RaftTerm, m.RaftIndex = st.Version, MemberID(st.Leader), st.RaftTerm, st.RaftIndex
	m.DBSize, m.DBSizeInUse, m.DBSizeQuota, m.Errors = st.DbSize, st.DbSizeInUse, st.DbSizeQuota, st.Errors
	if m.IsLearner {
		// A learner serves no linearizable read; it is healthy when it
		// follows a leader.
		if st.Leader == 0 {
			m.HealthError = "learner has no leader"
			return
		}
		m.Healthy = true
		return
	}
	hctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	_, err = mc.cli.Get(hctx, p.cfg.HealthKey)
	if err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		m.HealthError = fmt.Sprintf("linearizable read of %q from member %s: %v", p.cfg.HealthKey, m.DisplayName(), err)
		return
	}
	m.Healthy = true
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/selfheal/healer/audit"
	etcddet "github.com/selfheal/healer/detectors/etcdmember"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/internal/etcdlocal"
	etcdrem "github.com/selfheal/healer/remediators/etcdmember"
)

const demoUsage = `Usage: healer demo [flags]

Runs, on this machine and with nothing installed, embedded NATS JetStream,
a local three-member etcd cluster and healer serve; kills one member with
SIGKILL and shows healer detect it, decide, replace it step by step and
verify the cluster; then prints the audit trail and verifies its chain.
Everything lives in a temporary directory that is removed at the end.

Flags:
`

// demoCmd runs "healer demo". "healer demo etcd-member" is the member
// process the demo and its local provisioner start (the spec is in the
// environment).
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "etcd-member" {
		s, ok, err := etcdlocal.SpecFromEnv()
		if !ok {
			fmt.Fprintf(stderr, "healer demo etcd-member: %s is not set; this process is started by healer demo\n", etcdlocal.SpecEnv)
			return 2
		}
		return etcdlocal.RunMain(ctx, s, err)
	}
	fs := newFlagSet("healer demo", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, demoUsage); fs.PrintDefaults() }
	var (
		kill    = fs.String("kill", "follower", "which member to kill: follower or leader")
		keys    = fs.Int("keys", 200, "keys written before the kill, read back from the replacement")
		timeout = fs.Duration("timeout", 60*time.Second, "give up after this long")
		verbose = fs.Bool("verbose", false, "show serve's log on stderr (else it is kept in the temporary directory and shown on failure)")
		keep    = fs.Bool("keep", false, "keep the temporary directory, for a look afterwards")
	)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if *kill != "follower" && *kill != "leader" {
		fmt.Fprintf(stderr, "healer demo: --kill %q: want follower or leader\n", *kill)
		return 2
	}
	d := &demo{out: stdout, start: time.Now(), keys: *keys, killLeader: *kill == "leader", verbose: *verbose}
	ctx, cancel := context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("the demo did not finish within %s", *timeout))
	defer cancel()
	err := d.run(ctx, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "healer demo:", err)
		d.showLog(stderr)
	}
	d.cleanup(*keep)
	if err != nil {
		return 1
	}
	d.say("done in %.1fs", time.Since(d.start).Seconds())
	return 0
}

// demo is one run of `healer demo`.
type demo struct {
	out        io.Writer
	start      time.Time
	keys       int
	killLeader bool
	verbose    bool

	dir     string
	cluster *etcdlocal.Cluster
	srv     *serve.Server
	stop    context.CancelFunc
	logFile *os.File
}

// say prints one line of the demo's story with the time since the start.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context, stderr io.Writer) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "healer-demo-"); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the healer binary: %w", err)
	}
	command := []string{exe, "demo", "etcd-member"}

	d.say("starting a local three-member etcd cluster in %s", d.dir)
	d.cluster, err = etcdlocal.StartCluster(ctx, etcdlocal.ClusterConfig{Members: 3, Dir: filepath.Join(d.dir, "etcd"), Command: command, NoFsync: true})
	if err != nil {
		return err
	}
	lead, err := d.cluster.Leader(ctx, 10*time.Second)
	if err != nil {
		return err
	}
	for i, m := range d.cluster.Members() {
		role := "follower"
		if i == lead {
			role = "leader"
		}
		d.say("  %s  pid %-7d clients %s  peers %s  (%s)", m.Spec.Name, m.Proc.PID, m.Spec.ClientURL, m.Spec.PeerURL, role)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: d.cluster.Endpoints(), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	for i := range d.keys {
		if _, err := cli.Put(ctx, fmt.Sprintf("/demo/key-%04d", i), strings.Repeat("x", 64)); err != nil {
			return fmt.Errorf("write demo keys: %w", err)
		}
	}
	d.say("wrote %d keys under /demo/", d.keys)

	if err := d.startServe(ctx, command, stderr); err != nil {
		return err
	}
	d.say("healer serve is up at %s (embedded NATS JetStream at %s); watching etcd every 250ms, a member is lost after 2s", d.srv.URL(), d.srv.NATSClientURL())
	api, err := d.auditClient()
	if err != nil {
		return err
	}

	victim := (lead + 1) % 3
	if d.killLeader {
		victim = lead
	}
	vm := d.cluster.Member(victim)
	var writes, failed atomic.Int64
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	go writer(wctx, cli, &writes, &failed)
	time.Sleep(300 * time.Millisecond) // the detector's first polls see a healthy cluster
	d.say("killing %s (pid %d, the %s) with SIGKILL; a writer keeps writing a key every 20ms", vm.Spec.Name, vm.Proc.PID, map[bool]string{true: "leader", false: "follower"}[victim == lead])
	if err := d.cluster.Kill(victim); err != nil {
		return err
	}

	ok, err := d.follow(ctx, api)
	stopWriter()
	if err != nil {
		return err
	}
	d.say("writer: %d writes, %d failed", writes.Load(), failed.Load())
	if err := d.members(ctx, cli); err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	fmt.Fprintln(d.out, "The audit trail:")
	recs, err := api.records(ctx, url.Values{"limit": {strconv.Itoa(audit.MaxLimit)}})
	if err != nil {
		return err
	}
	if err := writeTable(d.out, recs); err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	if code := verifyTrail(ctx, api, verifyPageSize, d.out, stderr); code != 0 {
		return errors.New("the audit chain did not verify")
	}
	if !ok {
		return errors.New("the member was not replaced")
	}
	return nil
}

// startServe starts healer serve in this process with the demo's etcd
// cluster and the local provisioner.
func (d *demo) startServe(ctx context.Context, command []string, stderr io.Writer) error {
	ports, err := etcdlocal.FreePorts(1)
	if err != nil {
		return err
	}
	logw := stderr
	if !d.verbose {
		if d.logFile, err = os.Create(filepath.Join(d.dir, "serve.log")); err != nil {
			return err
		}
		logw = d.logFile
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	members := map[string]etcdrem.LocalMember{}
	for _, m := range d.cluster.Members() {
		members[m.Spec.Name] = etcdrem.LocalMember{DataDir: m.Spec.DataDir, LogFile: m.Spec.LogFile}
	}
	cfg := serve.Config{
		DataDir:      filepath.Join(d.dir, "healer"),
		Listen:       "127.0.0.1:0",
		NATSListen:   "127.0.0.1:" + strconv.Itoa(ports[0]),
		NoKubernetes: true,
		Etcd: &etcddet.Config{
			ClusterName: "demo", Endpoints: d.cluster.Endpoints(),
			Interval: 250 * time.Millisecond, LostAfter: 2 * time.Second,
			RequestTimeout: time.Second, DialTimeout: 500 * time.Millisecond,
		},
		EtcdReplace: etcdrem.Config{
			Provisioner: etcdrem.ProvisionerLocal, PollInterval: 100 * time.Millisecond,
			Local: etcdrem.LocalConfig{Command: command, Members: members, NoFsync: true},
		},
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d.stop = stop
	if d.srv, err = serve.Start(sctx, cfg, log); err != nil {
		return fmt.Errorf("start healer serve: %w", err)
	}
	return nil
}

func (d *demo) auditClient() (*auditClient, error) {
	u, err := url.Parse(d.srv.URL() + audit.APIPath)
	if err != nil {
		return nil, err
	}
	return &auditClient{endpoint: u, token: d.srv.APIToken, http: &http.Client{Timeout: 10 * time.Second}}, nil
}

// follow prints the audit records about etcd as they come, until the
// replacement is verified (true) or fails or is refused (false).
func (d *demo) follow(ctx context.Context, api *auditClient) (bool, error) {
	var after uint64
	for {
		recs, err := api.records(ctx, url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {"100"}})
		if err != nil {
			return false, fmt.Errorf("follow the audit trail: %w (%w)", err, context.Cause(ctx))
		}
		for _, r := range recs {
			after = r.Seq
			if !strings.HasPrefix(r.Target, "etcd/") {
				continue
			}
			d.say("%-15s %-13s %s", r.Kind, r.Target, describeRecord(&r))
			if r.Remediator != etcdrem.Name {
				continue
			}
			switch r.Kind {
			case audit.KindVerified:
				return true, nil
			case audit.KindActionFailed, audit.KindSuppressed:
				return false, nil
			}
		}
		select {
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// describeRecord is one line about an audit record, for the demo's story:
// what an operator would want to read in it.
func describeRecord(r *audit.Record) string {
	var d struct {
		// event
		Type   string `json:"type"`
		Status string `json:"status"`
		Data   struct {
			Error  string         `json:"error"`
			Quorum etcddet.Quorum `json:"quorum"`
		} `json:"data"`
		// decision
		Decision struct {
			Remediator string `json:"remediator"`
			Reason     string `json:"reason"`
		} `json:"decision"`
		// suppressed, progress, finished, failed
		Reason  string `json:"reason"`
		Step    string `json:"step"`
		Message string `json:"message"`
		Error   string `json:"error"`
		// progress
		Member    string `json:"member"`
		OldID     string `json:"old_id"`
		NewID     string `json:"new_id"`
		PID       int    `json:"pid"`
		Lag       *int   `json:"lag"`
		OldData   string `json:"old_data_dir"`
		RaftIndex int    `json:"raft_index"`
		LeaderIdx int    `json:"leader_raft_index"`
	}
	if err := json.Unmarshal(r.Details, &d); err != nil {
		return summarizeDetails(r.Details, 110)
	}
	q := d.Data.Quorum
	switch r.Kind {
	case audit.KindEvent:
		s := fmt.Sprintf("%s %s (voters %d, healthy %d, quorum %d)", d.Type, d.Status, q.Voters, q.HealthyVoters, q.Quorum)
		if d.Data.Error != "" {
			s += ": " + d.Data.Error
		}
		return cutString(s, 140)
	case audit.KindDecision:
		if d.Decision.Remediator == "" {
			return cutString("no action: "+d.Decision.Reason, 140)
		}
		return cutString(d.Decision.Remediator+": "+d.Decision.Reason, 140)
	case audit.KindSuppressed:
		return d.Reason
	case audit.KindActionProgress:
		switch {
		case d.Lag != nil:
			return fmt.Sprintf("%s: raft index %d, leader %d (lag %d)", d.Step, d.RaftIndex, d.LeaderIdx, *d.Lag)
		case d.Message != "":
			return d.Step + ": " + d.Message
		case d.OldData != "":
			return d.Step + ": old data dir kept as " + d.OldData
		case d.NewID != "":
			return fmt.Sprintf("%s: %s is %s", d.Step, d.Member, d.NewID)
		case d.OldID != "":
			return fmt.Sprintf("%s: %s (%s)", d.Step, d.Member, d.OldID)
		}
		return summarizeDetails(r.Details, 110)
	case audit.KindActionFinished:
		return d.Message
	case audit.KindActionFailed:
		return d.Error
	}
	return summarizeDetails(r.Details, 110)
}

// members prints the member list after the replacement.
func (d *demo) members(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	fmt.Fprintln(d.out)
	fmt.Fprintln(d.out, "The etcd members now:")
	tw := tabwriter.NewWriter(d.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPEER URLS\tROLE")
	for _, m := range resp.Members {
		role := "voter"
		if m.IsLearner {
			role = "learner"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", etcddet.MemberID(m.ID), m.Name, strings.Join(m.PeerURLs, ","), role)
	}
	return tw.Flush()
}

// writer writes a key every 20ms until ctx ends, counting the writes
// that fail.
func writer(ctx context.Context, cli *clientv3.Client, writes, failed *atomic.Int64) {
	for i := 0; ctx.Err() == nil; i++ {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Put(wctx, "/demo/writer", strconv.Itoa(i))
		cancel()
		if ctx.Err() != nil {
			return
		}
		writes.Add(1)
		if err != nil {
			failed.Add(1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup stops serve and every member (the replacement too, which serve's
// provisioner started) and removes the temporary directory.
func (d *demo) cleanup(keep bool) {
	if d.stop != nil {
		d.stop()
		if d.srv != nil {
			_ = d.srv.Wait()
		}
	}
	if d.cluster != nil {
		d.cluster.Destroy() // the replacement too: its data goes with the directory
	}
	if d.logFile != nil {
		_ = d.logFile.Sync()
	}
	if d.dir == "" {
		return
	}
	if keep {
		d.say("kept %s", d.dir)
		return
	}
	if err := os.RemoveAll(d.dir); err != nil {
		d.say("could not remove %s: %v", d.dir, err)
		return
	}
	d.say("stopped everything and removed %s", d.dir)
}

// showLog prints the end of serve's log after a failure.
func (d *demo) showLog(w io.Writer) {
	if d.logFile == nil {
		return
	}
	b, err := os.ReadFile(d.logFile.Name())
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	lines = lines[max(0, len(lines)-30):]
	fmt.Fprintf(w, "last lines of serve's log:\n%s\n", strings.Join(lines, "\n"))
}

package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/selfheal/healer/action"
)

// VerbsConfig is the node half's configuration, on masters.
type VerbsConfig struct {
	// Manifest is etcd's static-pod manifest. Default
	// /etc/kubernetes/manifests/etcd.yaml.
	Manifest string `json:"manifest"`
	// Container is the etcd container's name in it. Default "etcd".
	Container string `json:"container"`
	// StopTimeout bounds the wait for the old member to stop once its
	// manifest is moved out (kubelet stops the pod). Default 1m.
	StopTimeout time.Duration `json:"stopTimeout"`
}

// ApplyDefaults fills zero fields.
func (c *VerbsConfig) ApplyDefaults() {
	if c.Manifest == "" {
		c.Manifest = "/etc/kubernetes/manifests/etcd.yaml"
	}
	if c.Container == "" {
		c.Container = "etcd"
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = time.Minute
	}
}

// Verbs is the node half: VerbStart on a master's agent.
type Verbs struct {
	cfg VerbsConfig
	log *slog.Logger
	mu  sync.Mutex // one rewrite at a time
}

// NewVerbs returns the node half.
func NewVerbs(cfg VerbsConfig, log *slog.Logger) *Verbs {
	cfg.ApplyDefaults()
	return &Verbs{cfg: cfg, log: log.With("remediator", Name)}
}

// Verbs returns the node verbs.
func (v *Verbs) Verbs() []action.NodeVerb { return []action.NodeVerb{startVerb{v}} }

type startVerb struct{ v *Verbs }

func (startVerb) Name() string { return VerbStart }

func (s startVerb) Run(ctx context.Context, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	spec, err := specFromParams(req.Params)
	if err != nil {
		return action.Result{}, err
	}
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	return s.v.start(ctx, spec, progress)
}

// heldDir is where the manifest waits while the old member stops: a
// dot-directory in the manifest directory, which kubelet ignores.
func (v *Verbs) heldDir() string { return filepath.Join(filepath.Dir(v.cfg.Manifest), ".healer-held") }

func (v *Verbs) held() string { return filepath.Join(v.heldDir(), filepath.Base(v.cfg.Manifest)) }

// start rewrites the manifest for the replacement: the old member is
// stopped (its manifest moved out), its data directory kept aside, and the
// manifest written back with a fresh data directory, the spec's initial
// cluster and --initial-cluster-state=existing.
func (v *Verbs) start(ctx context.Context, spec MemberSpec, progress action.Progress) (action.Result, error) {
	src := v.cfg.Manifest
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		src = v.held() // an interrupted attempt left it held
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		return action.Result{}, fmt.Errorf("%w: read etcd manifest: %w", action.ErrUnsafe, err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(raw, &pod); err != nil {
		return action.Result{}, fmt.Errorf("%w: etcd manifest %s: %w", action.ErrUnsafe, src, err)
	}
	c := container(&pod, v.cfg.Container)
	if c == nil {
		return action.Result{}, fmt.Errorf("%w: etcd manifest %s has no container %q", action.ErrUnsafe, src, v.cfg.Container)
	}
	args := &c.Command
	if len(c.Command) == 0 || !strings.HasPrefix(c.Command[0], "etcd") {
		args = &c.Args
	}
	name, _ := flag(*args, "name")
	peers, _ := flag(*args, "initial-advertise-peer-urls")
	dataDir, _ := flag(*args, "data-dir")
	switch {
	case name != spec.Name:
		return action.Result{}, fmt.Errorf("%w: this node's etcd is named %q, not %q: wrong node for the replacement", action.ErrUnsafe, name, spec.Name)
	case peers != strings.Join(spec.PeerURLs, ","):
		return action.Result{}, fmt.Errorf("%w: this node's etcd advertises peer URLs %q, the replacement needs %q", action.ErrUnsafe, peers, strings.Join(spec.PeerURLs, ","))
	case dataDir == "" || !filepath.IsAbs(dataDir):
		return action.Result{}, fmt.Errorf("%w: etcd manifest %s: --data-dir %q: want an absolute path", action.ErrUnsafe, src, dataDir)
	}
	// The data directory is usually a mount of its own in the agent's
	// pod (/var/lib/etcd), so it is kept and only its contents change: the
	// old member/ is moved aside inside it (etcd ignores other entries,
	// with a warning) and the owner file says which action made it fresh.
	marker := filepath.Join(dataDir, ".healer-action")
	owner, _ := os.ReadFile(marker)
	ours := strings.TrimSpace(string(owner)) == spec.ActionID
	state, _ := flag(*args, "initial-cluster-state")
	initial, _ := flag(*args, "initial-cluster")
	if ours && src == v.cfg.Manifest && state == "existing" && initial == spec.InitialCluster {
		return action.Result{Changed: false, Message: "the manifest already starts this replacement"}, nil
	}

	// Stop the old member before touching its data directory.
	if src == v.cfg.Manifest {
		if err := os.MkdirAll(v.heldDir(), 0o700); err != nil {
			return action.Result{}, fmt.Errorf("hold etcd manifest: %w", err)
		}
		if err := os.Rename(src, v.held()); err != nil {
			return action.Result{}, fmt.Errorf("hold etcd manifest: %w", err)
		}
		progress(ctx, "provision", map[string]any{"member": spec.Name, "message": "manifest moved out; waiting for the old member to stop", "held": v.held()})
	}
	db := ""
	if !ours {
		db = filepath.Join(dataDir, "member", "snap", "db")
	}
	if err := waitStopped(ctx, spec.ClientURLs, db, v.cfg.StopTimeout); err != nil {
		if rerr := os.Rename(v.held(), v.cfg.Manifest); rerr != nil {
			err = errors.Join(err, fmt.Errorf("put the etcd manifest back: %w", rerr))
		}
		return action.Result{}, fmt.Errorf("%w: %w", action.ErrUnsafe, err)
	}
	if !ours {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return action.Result{}, fmt.Errorf("data dir: %w", err)
		}
		old, aside := filepath.Join(dataDir, "member"), filepath.Join(dataDir, "member.replaced-"+spec.ActionID)
		if _, err := os.Stat(old); err == nil {
			if err := os.Rename(old, aside); err != nil {
				return action.Result{}, fmt.Errorf("keep the old member data aside: %w", err)
			}
			progress(ctx, "provision", map[string]any{"member": spec.Name, "old_data_dir": aside})
		}
		if err := os.WriteFile(marker, []byte(spec.ActionID+"\n"), 0o600); err != nil {
			return action.Result{}, fmt.Errorf("record the owner of the data dir: %w", err)
		}
	}
	setFlag(args, "initial-cluster", spec.InitialCluster)
	setFlag(args, "initial-cluster-state", "existing")
	out, err := yaml.Marshal(&pod)
	if err != nil {
		return action.Result{}, fmt.Errorf("encode etcd manifest: %w", err)
	}
	tmp := filepath.Join(v.heldDir(), "."+filepath.Base(v.cfg.Manifest)+".new")
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return action.Result{}, fmt.Errorf("write etcd manifest: %w", err)
	}
	// The new manifest goes in place first, so a crash in between leaves
	// a manifest for kubelet, never none.
	if err := os.Rename(tmp, v.cfg.Manifest); err != nil {
		return action.Result{}, fmt.Errorf("put the new etcd manifest in place: %w", err)
	}
	backup := filepath.Join(v.heldDir(), filepath.Base(v.cfg.Manifest)+".before-"+spec.ActionID)
	if err := os.Rename(v.held(), backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return action.Result{}, fmt.Errorf("keep the old etcd manifest: %w", err)
	}
	v.log.InfoContext(ctx, "etcd manifest rewritten for a replacement member", "member", spec.Name, "action_id", spec.ActionID, "backup", backup)
	return action.Result{Changed: true, Message: "etcd manifest rewritten (fresh data dir, existing cluster); kubelet starts the member",
		Details: map[string]any{"manifest": v.cfg.Manifest, "backup": backup, "data_dir": dataDir}}, nil
}

func container(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// flag returns the value of --name=value in args.
func flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// setFlag sets --name=value, replacing it or appending it.
func setFlag(args *[]string, name, value string) {
	for i, a := range *args {
		if strings.HasPrefix(a, "--"+name+"=") {
			(*args)[i] = "--" + name + "=" + value
			return
		}
	}
	*args = append(*args, "--"+name+"="+value)
}

// waitStopped waits until the old member has stopped: when nothing accepts connections on its
// client URLs and, when db is set, no process holds its database (a
// crash-looping container that kubelet restarts between two probes of the
// port still holds it while it runs).
func waitStopped(ctx context.Context, urls []string, db string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		listening := ""
		for _, raw := range urls {
			u, err := url.Parse(raw)
			if err != nil {
				return fmt.Errorf("client URL %q: %w", raw, err)
			}
			var d net.Dialer
			dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			conn, err := d.DialContext(dctx, "tcp", u.Host)
			cancel()
			if err == nil {
				_ = conn.Close()
				listening = u.Host
				break
			}
		}
		inUse := false
		if listening == "" && db != "" {
			var err error
			if inUse, err = dbInUse(db); err != nil {
				return err
			}
		}
		if listening == "" && !inUse {
			return nil
		}
		if time.Now().After(deadline) {
			if inUse {
				return fmt.Errorf("a process still has the old etcd's database %s open %s after its manifest was moved out", db, timeout)
			}
			return fmt.Errorf("the old etcd still accepts connections at %s %s after its manifest was moved out", listening, timeout)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

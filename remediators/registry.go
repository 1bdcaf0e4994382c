package remediators

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/client-go/kubernetes"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/remediators/certrenew"
	"github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/remediators/nodedrain"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/remediators/vip"
)

// Deps are what remediators are built from. A nil Kube means Kubernetes is
// not configured; remediators that need it are then left out, and the
// reason is returned by Build.
type Deps struct {
	Kube kubernetes.Interface
	// Agents reaches the node agents over NATS (bus.AgentClient). Nil
	// leaves out the remediators that act through them.
	Agents *bus.AgentClient
	// VIPLeases is the VIP lease bucket and VIP the VIPs healer may float;
	// a nil VIPLeases (no VIPs configured) leaves vip.float out.
	VIPLeases jetstream.KeyValue
	VIP       vip.FloatConfig
	// Etcd is the etcd cluster etcd.replace-member acts on, with its
	// journal and provisioner; nil (no etcd configured) leaves it out.
	Etcd        *etcdmember.Deps
	EtcdReplace etcdmember.Config
	// Disabled names remediators left out by the operator.
	Disabled []string
	Log      *slog.Logger
}

// Entry is one row of the registry table.
type Entry struct {
	// Name is the remediator's policy name.
	Name string
	// NeedsKube is true when the remediator acts through the Kubernetes API.
	NeedsKube bool
	// NeedsAgents is true when the remediator acts through node agents.
	NeedsAgents bool
	// NeedsVIPs is true when the remediator floats configured VIPs.
	NeedsVIPs bool
	// NeedsEtcd is true when the remediator changes an etcd cluster.
	NeedsEtcd bool
	// New builds the remediator.
	New func(Deps) (action.Remediator, error)
}

// Table is the one list of remediators healer knows. Adding a remediator is
// one package plus one line here; the same table feeds `healer remediators
// list`, the RBAC in deploy/ and the runbook links.
func Table() []Entry {
	return []Entry{
		{Name: nodedrain.CordonName, NeedsKube: true, New: func(d Deps) (action.Remediator, error) { return nodedrain.NewCordon(d.Kube, d.Log), nil }},
		{Name: nodedrain.DrainName, NeedsKube: true, New: func(d Deps) (action.Remediator, error) { return nodedrain.NewDrain(d.Kube, d.Log), nil }},
		{Name: restart.Name, NeedsAgents: true, New: func(d Deps) (action.Remediator, error) { return restart.New(d.agents(), d.Log), nil }},
		{Name: certrenew.Name, NeedsAgents: true, New: func(d Deps) (action.Remediator, error) { return certrenew.New(d.agents(), d.Log), nil }},
		{Name: vip.Name, NeedsAgents: true, NeedsVIPs: true, New: func(d Deps) (action.Remediator, error) {
			return vip.NewFloat(d.VIPLeases, d.nodeCaller(), d.Log, d.VIP)
		}},
		{Name: etcdmember.Name, NeedsEtcd: true, New: func(d Deps) (action.Remediator, error) {
			return etcdmember.New(d.EtcdReplace, d.Etcd, d.Log)
		}},
	}
}

// Set is the remediators available in this process, by name.
type Set map[string]action.Remediator

// Names returns the remediator names in order.
func (s Set) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Build builds every remediator of the table whose dependencies are there.
// Unavailable lists the others with the reason.
func Build(d Deps) (set Set, unavailable map[string]string, err error) {
	set = Set{}
	unavailable = map[string]string{}
	var errs []error
	for _, e := range Table() {
		if slices.Contains(d.Disabled, e.Name) {
			unavailable[e.Name] = "disabled in the configuration (disabledRemediators)"
			continue
		}
		if e.NeedsKube && d.Kube == nil {
			unavailable[e.Name] = "Kubernetes is not configured"
			continue
		}
		if e.NeedsAgents && d.Agents == nil {
			unavailable[e.Name] = "no transport to the node agents"
			continue
		}
		if e.NeedsVIPs && d.VIPLeases == nil {
			unavailable[e.Name] = "no VIPs configured (vip.vips)"
			continue
		}
		if e.NeedsEtcd && d.Etcd == nil {
			unavailable[e.Name] = "no etcd cluster configured (etcd)"
			continue
		}
		r, err := e.New(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("registry: build %s: %w", e.Name, err))
			continue
		}
		if got := r.Info().Name; got != e.Name {
			errs = append(errs, fmt.Errorf("registry: entry %q builds a remediator named %q", e.Name, got))
			continue
		}
		set[e.Name] = r
	}
	return set, unavailable, errors.Join(errs...)
}

// Infos describes every remediator of the table, whether or not its
// dependencies are there: for `healer remediators list`, the RBAC in deploy/
// and the runbook links.
func Infos() []action.Info {
	d := Deps{Log: slog.New(slog.DiscardHandler)}
	out := make([]action.Info, 0, len(Table()))
	for _, e := range Table() {
		r, err := e.New(d) // Info needs none of the dependencies
		if err != nil {
			continue // only a bad configuration fails, and this one is empty
		}
		out = append(out, r.Info())
	}
	return out
}

// agents and nodeCaller keep a nil client an untyped nil, so remediators
// can tell that there is no transport.
func (d Deps) agents() restart.Caller {
	if d.Agents == nil {
		return nil
	}
	return d.Agents
}

func (d Deps) nodeCaller() action.NodeCaller {
	if d.Agents == nil {
		return nil
	}
	return d.Agents
}

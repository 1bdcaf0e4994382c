package remediators

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/selfheal/healer/bus"
)

func TestBuild(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	set, unavailable, err := Build(Deps{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 0 || !strings.Contains(unavailable["node.cordon"], "Kubernetes") {
		t.Fatalf("without Kubernetes: set %v, unavailable %v", set.Names(), unavailable)
	}
	if !strings.Contains(unavailable["component.restart"], "agents") {
		t.Fatalf("without agents: unavailable %v", unavailable)
	}
	// The fake clientset and agents are only dependencies here: nothing is called.
	set, unavailable, err = Build(Deps{Kube: fake.NewClientset(), Agents: bus.NewAgentClient(nil, 0), Log: log})
	if err != nil || len(unavailable) != 2 || !strings.Contains(unavailable["vip.float"], "no VIPs") || !strings.Contains(unavailable["etcd.replace-member"], "no etcd") {
		t.Fatalf("with Kubernetes and agents, without VIPs or etcd: %v %v", unavailable, err)
	}
	if got := set.Names(); len(got) != len(Table())-2 || got[0] != "cert.renew" {
		t.Fatalf("names %v", got)
	}
}

// TestTableInfo checks every remediator describes itself completely and
// that its runbook exists.
func TestTableInfo(t *testing.T) {
	needsKube := map[string]bool{}
	for _, e := range Table() {
		needsKube[e.Name] = e.NeedsKube
	}
	infos := Infos()
	if len(infos) != len(Table()) {
		t.Fatalf("Infos() describes %d remediators, the table has %d", len(infos), len(Table()))
	}
	for _, info := range infos {
		name := info.Name
		if info.Summary == "" || info.TargetKind == "" || (needsKube[name] && len(info.RBAC) == 0) || info.Example == "" {
			t.Errorf("%s: incomplete info %+v", name, info)
		}
		if _, err := os.Stat("../" + info.Runbook); err != nil {
			t.Errorf("%s: runbook %s: %v", name, info.Runbook, err)
		}
	}
}

// TestBuildLeavesOutDisabled: a remediator the operator disabled is not
// built even when its dependencies are there, and says why.
func TestBuildLeavesOutDisabled(t *testing.T) {
	set, unavailable, err := Build(Deps{Kube: fake.NewClientset(), Disabled: []string{"node.drain"}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set["node.drain"]; ok {
		t.Fatal("node.drain was built although disabled")
	}
	if _, ok := set["node.cordon"]; !ok {
		t.Fatalf("node.cordon, not disabled, is missing: %v", set.Names())
	}
	if got := unavailable["node.drain"]; !strings.Contains(got, "disabledRemediators") {
		t.Fatalf("unavailable[node.drain] = %q, want it to name disabledRemediators", got)
	}
}

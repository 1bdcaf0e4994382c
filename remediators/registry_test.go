package remediators

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/selfheal/healer/remediators/action"
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
	set, unavailable, err = Build(Deps{Kube: fake.NewClientset(), Agents: noAgents{}, Log: log})
	if err != nil || len(unavailable) != 0 {
		t.Fatalf("with Kubernetes and agents: %v %v", unavailable, err)
	}
	if got := set.Names(); len(got) != len(Table()) || got[0] != "component.restart" {
		t.Fatalf("names %v", got)
	}
}

// TestTableInfo checks every remediator describes itself completely and
// that its runbook exists.
func TestTableInfo(t *testing.T) {
	set, _, _ := Build(Deps{Kube: fake.NewClientset(), Agents: noAgents{}, Log: slog.New(slog.DiscardHandler)})
	needsKube := map[string]bool{}
	for _, e := range Table() {
		needsKube[e.Name] = e.NeedsKube
	}
	for name, r := range set {
		info := r.Info()
		if info.Summary == "" || info.TargetKind == "" || (needsKube[name] && len(info.RBAC) == 0) || info.Example == "" {
			t.Errorf("%s: incomplete info %+v", name, info)
		}
		if _, err := os.Stat("../" + info.Runbook); err != nil {
			t.Errorf("%s: runbook %s: %v", name, info.Runbook, err)
		}
	}
}

type noAgents struct{}

func (noAgents) CallProgress(context.Context, action.NodeRequest, action.Progress) (action.Result, error) {
	return action.Result{}, action.ErrAgentUnreachable
}

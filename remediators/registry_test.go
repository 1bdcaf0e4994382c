package remediators

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
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
	// The fake clientset is only a dependency here: nothing is called.
	set, unavailable, err = Build(Deps{Kube: fake.NewClientset(), Log: log})
	if err != nil || len(unavailable) != 0 {
		t.Fatalf("with Kubernetes: %v %v", unavailable, err)
	}
	if got := set.Names(); len(got) != len(Table()) || got[0] != "node.cordon" {
		t.Fatalf("names %v", got)
	}
}

// TestTableInfo checks every remediator describes itself completely and
// that its runbook exists.
func TestTableInfo(t *testing.T) {
	set, _, _ := Build(Deps{Kube: fake.NewClientset(), Log: slog.New(slog.DiscardHandler)})
	for name, r := range set {
		info := r.Info()
		if info.Summary == "" || info.TargetKind == "" || len(info.RBAC) == 0 || info.Example == "" {
			t.Errorf("%s: incomplete info %+v", name, info)
		}
		if _, err := os.Stat("../" + info.Runbook); err != nil {
			t.Errorf("%s: runbook %s: %v", name, info.Runbook, err)
		}
	}
}

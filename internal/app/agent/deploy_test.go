package agent_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/selfheal/healer/internal/app/agent"
)

// TestDeployManifest checks the agent's part of the plain manifest that
// deploy/ renders from its Helm chart: its configurations are valid agent
// configurations, and its pods hold no privilege beyond those deploy/README.md
// documents.
func TestDeployManifest(t *testing.T) {
	raw, err := os.ReadFile("../../../deploy/manifests/healer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	var daemonSets []appsv1.DaemonSet
	for doc := range strings.SplitSeq("\n"+string(raw), "\n---\n") {
		var meta struct {
			Kind     string
			Metadata struct{ Name string }
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch {
		case meta.Kind == "ConfigMap" && meta.Metadata.Name == "healer-agent":
			if err := yaml.UnmarshalStrict([]byte(doc), &cm); err != nil {
				t.Fatal(err)
			}
		case meta.Kind == "DaemonSet" && (meta.Metadata.Name == "healer-agent" || meta.Metadata.Name == "healer-agent-master"):
			var ds appsv1.DaemonSet
			if err := yaml.UnmarshalStrict([]byte(doc), &ds); err != nil {
				t.Fatal(err)
			}
			daemonSets = append(daemonSets, ds)
		}
	}
	if len(cm.Data) != 2 || len(daemonSets) != 2 {
		t.Fatalf("want 2 configurations and 2 DaemonSets, got %d and %d", len(cm.Data), len(daemonSets))
	}
	for key, text := range cm.Data {
		t.Run(key, func(t *testing.T) {
			path := t.TempDir() + "/" + key
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			var cfg agent.Config
			if err := cfg.LoadFile(path); err != nil {
				t.Fatal(err)
			}
			cfg.Node = "node-1"
			cfg.ApplyDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatalf("shipped configuration is invalid: %v", err)
			}
		})
	}
	readme, err := os.ReadFile("../../../deploy/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range daemonSets {
		t.Run(ds.Name, func(t *testing.T) {
			spec := ds.Spec.Template.Spec
			// Every host path the pod sees is documented, with why.
			for _, v := range spec.Volumes {
				if v.HostPath != nil && !strings.Contains(string(readme), "`"+v.HostPath.Path) {
					t.Errorf("hostPath %s is not documented in deploy/README.md", v.HostPath.Path)
				}
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the agent needs no Kubernetes API access: do not mount a token")
			}
			for _, c := range spec.Containers {
				sc := c.SecurityContext
				if sc == nil || sc.Privileged != nil && *sc.Privileged {
					t.Fatalf("container %s: privileged or no security context", c.Name)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("container %s: want allowPrivilegeEscalation false and a read-only root", c.Name)
				}
				if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("container %s: capabilities must drop ALL", c.Name)
				}
				want := []corev1.Capability(nil)
				if ds.Name == "healer-agent-master" {
					want = []corev1.Capability{"NET_ADMIN", "NET_RAW"}
				}
				if !slices.Equal(sc.Capabilities.Add, want) {
					t.Errorf("container %s of %s: adds %v, want %v", c.Name, ds.Name, sc.Capabilities.Add, want)
				}
				var env []string
				for _, e := range c.Env {
					env = append(env, e.Name)
				}
				if !slices.Contains(env, "HEALER_NODE") {
					t.Errorf("container %s: HEALER_NODE must come from spec.nodeName", c.Name)
				}
			}
		})
	}
}

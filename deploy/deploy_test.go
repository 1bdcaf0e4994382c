package deploy_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/redis/go-redis/v9"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/deploy/render"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/remediators"
	"github.com/selfheal/healer/test/testenv"
)

// root is the module root, seen from this package's directory.
const root = ".."

// values is a tree of chart values.
type values = map[string]any

// everything turns on every optional part of the chart at once.
func everything() values {
	return values{
		"nats":  values{"tls": values{"secretName": "healer-nats-tls"}},
		"slack": values{"secretName": "healer-slack"},
		"serve": values{
			"config": values{
				"certExpiry": values{"secrets": values{"namespaces": []any{"ingress", "monitoring"}}},
				"slack":      values{"channel": "C0123456"},
				"approvals":  values{"slackGroups": []any{"S0123456"}},
			},
			"policies": values{"configMap": "healer-policies"},
			"audit":    values{"checkpoints": values{"persistentVolumeClaim": "healer-audit-checkpoints"}},
			"extraEnv": []any{values{"name": "HEALER_LOG_LEVEL", "value": "debug"}},
		},
		"networkPolicy": values{
			"nodeCIDRs":        []any{"10.20.0.0/16"},
			"serveIngressFrom": []any{values{"namespaceSelector": values{"matchLabels": values{"kubernetes.io/metadata.name": "monitoring"}}}},
			"egress": values{
				"enabled":        true,
				"apiServerCIDRs": []any{"10.20.0.10/32"},
				"extraRules":     []any{values{"ports": []any{values{"port": 2379}}, "to": []any{values{"ipBlock": values{"cidr": "10.20.0.0/24"}}}}},
			},
		},
		"agent": values{"masters": values{"certRenew": false, "etcdMember": false}},
	}
}

// rendered holds what renderChart rendered, by the values as JSON: most
// tests read the chart with the defaults or with everything().
var rendered sync.Map

// renderChart renders the chart with v over its defaults, once per v.
func renderChart(t *testing.T, v values) string {
	t.Helper()
	key, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if out, ok := rendered.Load(string(key)); ok {
		return out.(string)
	}
	out, err := render.Chart(t.Context(), filepath.Join(root, render.ChartDir), v)
	if err != nil {
		t.Fatal(err)
	}
	rendered.Store(string(key), out)
	return out
}

var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decode decodes every document of a rendered manifest strictly into its
// typed Kubernetes object: an unknown or duplicated field fails the test.
func decode(t *testing.T, manifest string) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for _, doc := range render.Documents(manifest) {
		obj, _, err := strict.Decode([]byte(doc), nil, nil) // a document without a kind is an error too
		if err != nil {
			t.Fatalf("decode strictly: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

// ofType returns the objects of type T.
func ofType[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the one object of type T with the name.
func named[T interface {
	runtime.Object
	GetName() string
}](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	var found []T
	for _, o := range ofType[T](objs) {
		if o.GetName() == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T named %s, found %d", zero, name, len(found))
	}
	return found[0]
}

func names[T interface{ GetName() string }](objs []T) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetName())
	}
	slices.Sort(out)
	return out
}

// TestManifestsCurrent fails when the committed RBAC template or plain
// manifest differ from what `make manifests` writes now: a remediator added
// to the registry cannot ship without its RBAC.
func TestManifestsCurrent(t *testing.T) {
	rbac, err := render.RBACTemplate(remediators.Infos())
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := render.Manifest(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{render.RBACTemplatePath: rbac, render.ManifestPath: manifest} {
		got, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatalf("%v: run make manifests", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what the generator writes now: run make manifests", path)
		}
	}
}

// TestRBACTemplateRefuses gives the generator rules no remediator may be
// granted cluster-wide: each is refused with ErrForbiddenRule, while a plain
// rule is written.
func TestRBACTemplateRefuses(t *testing.T) {
	core, rbac := []string{""}, []string{"rbac.authorization.k8s.io"}
	generate := func(r action.Rule) error {
		_, err := render.RBACTemplate([]action.Info{{Name: "test.rule", Summary: "A test.", RBAC: []action.Rule{r}}})
		return err
	}
	if err := generate(action.Rule{APIGroups: core, Resources: []string{"nodes"}, Verbs: []string{"get"}}); err != nil {
		t.Fatalf("a plain rule: %v", err)
	}
	for name, r := range map[string]action.Rule{
		"no verbs":               {APIGroups: core, Resources: []string{"nodes"}},
		"no api groups":          {Resources: []string{"nodes"}, Verbs: []string{"get"}},
		"wildcard verb":          {APIGroups: core, Resources: []string{"nodes"}, Verbs: []string{"*"}},
		"wildcard resource":      {APIGroups: core, Resources: []string{"nodes/*"}, Verbs: []string{"get"}},
		"wildcard group":         {APIGroups: []string{"*"}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
		"template in a verb":     {APIGroups: core, Resources: []string{"nodes"}, Verbs: []string{"get{{ .Values }}"}},
		"quote in a resource":    {APIGroups: core, Resources: []string{`nodes"]`}, Verbs: []string{"get"}},
		"secrets":                {APIGroups: core, Resources: []string{"secrets"}, Verbs: []string{"list"}},
		"a secret's subresource": {APIGroups: core, Resources: []string{"secrets/status"}, Verbs: []string{"get"}},
		"escalate":               {APIGroups: rbac, Resources: []string{"clusterroles"}, Verbs: []string{"escalate"}},
		"bind":                   {APIGroups: rbac, Resources: []string{"clusterroles"}, Verbs: []string{"bind"}},
		"impersonate":            {APIGroups: core, Resources: []string{"users"}, Verbs: []string{"impersonate"}},
		"service account tokens": {APIGroups: core, Resources: []string{"serviceaccounts/token"}, Verbs: []string{"create"}},
	} {
		if err := generate(r); !errors.Is(err, render.ErrForbiddenRule) {
			t.Errorf("%s %+v: want ErrForbiddenRule, got %v", name, r, err)
		}
	}
}

// TestChartLint runs `helm lint`'s rules on the chart, with the defaults and
// with every option on: warnings fail.
func TestChartLint(t *testing.T) {
	for name, v := range map[string]values{"defaults": nil, "everything": everything()} {
		t.Run(name, func(t *testing.T) {
			res := lint.RunAll(filepath.Join(root, render.ChartDir), v, render.Namespace)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				} else {
					t.Log(m)
				}
			}
		})
	}
}

// TestChartDecodesStrictly decodes every rendered document as its typed
// object, with the defaults and with every option on, and checks where each
// lives and that the chart makes no Secret.
func TestChartDecodesStrictly(t *testing.T) {
	for name, v := range map[string]values{"defaults": nil, "everything": everything()} {
		t.Run(name, func(t *testing.T) {
			objs := decode(t, renderChart(t, v))
			if len(objs) < 20 {
				t.Fatalf("only %d objects rendered", len(objs))
			}
			for _, o := range objs {
				m, err := meta.Accessor(o)
				if err != nil {
					t.Fatal(err)
				}
				kind := fmt.Sprintf("%T %s", o, m.GetName())
				switch o.(type) {
				case *corev1.Secret:
					t.Errorf("%s: the chart must not make Secrets", kind)
				case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
					if m.GetNamespace() != "" {
						t.Errorf("%s: cluster-scoped object with a namespace", kind)
					}
				case *rbacv1.Role, *rbacv1.RoleBinding:
					if !slices.Contains([]string{"ingress", "monitoring"}, m.GetNamespace()) {
						t.Errorf("%s in namespace %q: only the listed secrets namespaces get Roles", kind, m.GetNamespace())
					}
				default:
					if m.GetNamespace() != render.Namespace {
						t.Errorf("%s in namespace %q, want %s", kind, m.GetNamespace(), render.Namespace)
					}
				}
			}
		})
	}
}

// TestChartServe checks serve's Deployment, Service, PodDisruptionBudget and
// configuration.
func TestChartServe(t *testing.T) {
	objs := decode(t, renderChart(t, nil))
	d := named[*appsv1.Deployment](t, objs, "healer")
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("serve replicas %v, want at least 2", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != "healer" || pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Error("serve talks to the API server: it runs as healer with its token mounted")
	}
	if a := pod.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Error("serve's replicas are spread over nodes (preferred anti-affinity by hostname)")
	} else if sel := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector; !selects(sel.MatchLabels, d.Spec.Template.Labels) {
		t.Error("serve's anti-affinity does not select serve's pods")
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("serve's pod: want runAsNonRoot and seccomp RuntimeDefault")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("serve: %d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkRestricted(t, c)
	if want := []string{"serve", "--listen", "0.0.0.0:8080", "--config", "/etc/healer/serve.yaml", "--log-format", "json"}; !slices.Equal(c.Args, want) {
		t.Errorf("serve args %q, want %q", c.Args, want)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "http" {
		t.Error("serve's liveness probe: want GET /healthz on http")
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "http" {
		t.Error("serve's readiness probe: want GET /readyz on http")
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("serve's ports %v, want http 8080", c.Ports)
	}
	svc := named[*corev1.Service](t, objs, "healer")
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("Service healer: want ClusterIP 8080 selecting serve, got %+v", svc.Spec)
	}
	pdb := named[*policyv1.PodDisruptionBudget](t, objs, "healer")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Error("serve's PodDisruptionBudget: want minAvailable 1 over serve's pods")
	}

	// No secret reaches serve through its environment: serve.yaml names
	// files, mounted from the Secrets' keys.
	checkNoSecretEnv(t, pod)
	if len(c.Env) != 0 {
		t.Errorf("serve's environment %+v, want none with the default values", c.Env)
	}
	cm := named[*corev1.ConfigMap](t, objs, "healer")
	cfg := loadServeConfig(t, cm.Data["serve.yaml"])
	if cfg.NATSURL != "nats://nats.healer.svc:4222" || cfg.NATSUser != "healer-serve" || cfg.RedisURL != "redis://redis.healer.svc:6379/0" {
		t.Errorf("serve dials natsURL %q as %q and redisURL %q, want the chart's Services as healer-serve", cfg.NATSURL, cfg.NATSUser, cfg.RedisURL)
	}
	checkNoURLPassword(t, cfg)
	if cfg.Streams.Replicas != 3 {
		t.Errorf("streams.replicas %d, want 3 on the chart's three NATS servers", cfg.Streams.Replicas)
	}
	if len(cfg.DisabledRemediators) != 0 {
		t.Errorf("disabledRemediators %q with every remediator enabled", cfg.DisabledRemediators)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	if mounts[cfg.DataDir] == "" || mounts["/etc/healer"] == "" {
		t.Errorf("serve's mounts %v: want the data dir %s and /etc/healer", mounts, cfg.DataDir)
	}
	for _, v := range pod.Volumes {
		if v.Name == mounts[cfg.DataDir] && v.EmptyDir == nil {
			t.Error("serve's data dir is an emptyDir")
		}
	}
	checkSecretFiles(t, pod, c, map[string]secretKey{
		cfg.WebhookTokenFile:     {"healer-tokens", "webhook-token"},
		cfg.APITokenFile:         {"healer-tokens", "api-token"},
		cfg.Audit.SigningKeyFile: {"healer-audit-signing-key", "signing-key"},
		cfg.NATSPasswordFile:     {"healer-nats-auth", "serve-password"},
		cfg.RedisPasswordFile:    {"healer-redis", "password"},
	})

	t.Run("everything", func(t *testing.T) {
		objs := decode(t, renderChart(t, everything()))
		cfg := loadServeConfig(t, named[*corev1.ConfigMap](t, objs, "healer").Data["serve.yaml"])
		if cfg.Policies != "/etc/healer-policies" || cfg.Slack.BotTokenFile != "/etc/healer/slack/bot-token" || cfg.Slack.Channel != "C0123456" {
			t.Errorf("serve.config is not merged over the chart's defaults: %+v", cfg)
		}
		cfg.Policies = "" // a directory of the pod
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(cfg.NATSURL, "tls://") || cfg.NATSCAFile == "" {
			t.Errorf("with nats.tls serve dials tls:// (%q) and verifies the server with the CA (natsCAFile %q)", cfg.NATSURL, cfg.NATSCAFile)
		}
		checkNoURLPassword(t, cfg)
		pod := named[*appsv1.Deployment](t, objs, "healer").Spec.Template.Spec
		c := pod.Containers[0]
		checkNoSecretEnv(t, pod)
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == cfg.Audit.CheckpointsDir }) ||
			!slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
				return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "healer-audit-checkpoints"
			}) {
			t.Errorf("audit.checkpointsDir %q is not the mounted serve.audit.checkpoints.persistentVolumeClaim", cfg.Audit.CheckpointsDir)
		}
		if len(c.Env) != 1 || c.Env[0].Name != "HEALER_LOG_LEVEL" {
			t.Errorf("serve's environment %+v, want serve.extraEnv's HEALER_LOG_LEVEL only", c.Env)
		}
		checkSecretFiles(t, pod, c, map[string]secretKey{
			cfg.WebhookTokenFile:        {"healer-tokens", "webhook-token"},
			cfg.APITokenFile:            {"healer-tokens", "api-token"},
			cfg.Audit.SigningKeyFile:    {"healer-audit-signing-key", "signing-key"},
			cfg.NATSPasswordFile:        {"healer-nats-auth", "serve-password"},
			cfg.NATSCAFile:              {"healer-nats-tls", "ca.crt"},
			cfg.RedisPasswordFile:       {"healer-redis", "password"},
			cfg.Slack.BotTokenFile:      {"healer-slack", "bot-token"},
			cfg.Slack.SigningSecretFile: {"healer-slack", "signing-secret"},
		})
	})

	// NATS in operator mode: serve logs in with its creds file, so neither
	// the chart's user nor serve-password is used.
	t.Run("creds file", func(t *testing.T) {
		objs := decode(t, renderChart(t, values{"serve": values{"config": values{"natsCredsFile": "/etc/healer-nats/serve.creds"}}}))
		cfg := loadServeConfig(t, named[*corev1.ConfigMap](t, objs, "healer").Data["serve.yaml"])
		if cfg.NATSCredsFile != "/etc/healer-nats/serve.creds" || cfg.NATSUser != "" || cfg.NATSPasswordFile != "" {
			t.Errorf("natsCredsFile %q, natsUser %q, natsPasswordFile %q: want the creds file alone", cfg.NATSCredsFile, cfg.NATSUser, cfg.NATSPasswordFile)
		}
		pod := named[*appsv1.Deployment](t, objs, "healer").Spec.Template.Spec
		checkSecretFiles(t, pod, pod.Containers[0], map[string]secretKey{
			cfg.WebhookTokenFile:     {"healer-tokens", "webhook-token"},
			cfg.APITokenFile:         {"healer-tokens", "api-token"},
			cfg.Audit.SigningKeyFile: {"healer-audit-signing-key", "signing-key"},
			cfg.RedisPasswordFile:    {"healer-redis", "password"},
		})
	})

	// An external Redis: its URL is the operator's, and the chart mounts no
	// password of its own.
	t.Run("external Redis", func(t *testing.T) {
		objs := decode(t, renderChart(t, values{"redis": values{"enabled": false}, "serve": values{"config": values{"redisURL": "rediss://redis.example.com:6380/0"}}}))
		cfg := loadServeConfig(t, named[*corev1.ConfigMap](t, objs, "healer").Data["serve.yaml"])
		if cfg.RedisURL != "rediss://redis.example.com:6380/0" || cfg.RedisPasswordFile != "" {
			t.Errorf("redisURL %q, redisPasswordFile %q: want serve.config's URL and no chart password", cfg.RedisURL, cfg.RedisPasswordFile)
		}
		pod := named[*appsv1.Deployment](t, objs, "healer").Spec.Template.Spec
		checkSecretFiles(t, pod, pod.Containers[0], map[string]secretKey{
			cfg.WebhookTokenFile:     {"healer-tokens", "webhook-token"},
			cfg.APITokenFile:         {"healer-tokens", "api-token"},
			cfg.Audit.SigningKeyFile: {"healer-audit-signing-key", "signing-key"},
			cfg.NATSPasswordFile:     {"healer-nats-auth", "serve-password"},
		})
	})

	t.Run("refused", func(t *testing.T) {
		for name, tc := range map[string]struct {
			v    values
			want string // in the error, naming the value to set
		}{
			"external NATS without a URL":  {values{"nats": values{"enabled": false}}, "serve.config.natsURL"},
			"external Redis without a URL": {values{"redis": values{"enabled": false}}, "serve.config.redisURL"},
			"egress without the API":       {values{"networkPolicy": values{"egress": values{"enabled": true}}}, "networkPolicy.egress.apiServerCIDRs"},
			"an unknown remediator":        {values{"remediators": values{"node.drian": values{"enabled": false}}}, "remediators.node.drian"},
			"an unknown disabled one":      {values{"serve": values{"config": values{"disabledRemediators": []any{"node.drian"}}}}, "serve.config.disabledRemediators"},
		} {
			if _, err := render.Chart(t.Context(), filepath.Join(root, render.ChartDir), tc.v); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: want an error naming %s, got %v", name, tc.want, err)
			}
		}
	})
}

// checkNoSecretEnv fails on any environment variable of the pod's
// containers taken from a Secret: serve reads its secrets from files.
func checkNoSecretEnv(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("container %s: %s comes from the Secret %s", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				t.Errorf("container %s: environment from the Secret %s", c.Name, e.SecretRef.Name)
			}
		}
	}
}

// checkNoURLPassword fails when serve's NATS or Redis URL carries
// credentials, which would sit in the ConfigMap.
func checkNoURLPassword(t *testing.T, cfg *serve.Config) {
	t.Helper()
	for what, raw := range map[string]string{"natsURL": cfg.NATSURL, "redisURL": cfg.RedisURL} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Errorf("%s: %v", what, err)
		} else if u.User != nil {
			t.Errorf("%s carries credentials: serve.yaml is a ConfigMap", what)
		}
	}
}

// secretKey is one key of a Secret.
type secretKey struct{ secret, key string }

// secretFile is a Secret's key as a file in a container.
type secretFile struct {
	secretKey
	mode int32
}

// secretFiles returns the files a container sees from Secrets, by path: the
// items of its Secret and projected volumes. A Secret volume without items
// shows as its mount path with an empty key.
func secretFiles(pod corev1.PodSpec, c corev1.Container) map[string]secretFile {
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mode := func(item *int32, dflt *int32) int32 {
		switch {
		case item != nil:
			return *item
		case dflt != nil:
			return *dflt
		}
		return corev1.SecretVolumeSourceDefaultMode
	}
	files := map[string]secretFile{}
	add := func(dir, name string, items []corev1.KeyToPath, dflt *int32) {
		if len(items) == 0 {
			files[dir] = secretFile{secretKey{name, ""}, mode(nil, dflt)}
		}
		for _, it := range items {
			files[filepath.Join(dir, it.Path)] = secretFile{secretKey{name, it.Key}, mode(it.Mode, dflt)}
		}
	}
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		switch {
		case v.Secret != nil:
			add(m.MountPath, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					add(m.MountPath, src.Secret.Name, src.Secret.Items, v.Projected.DefaultMode)
				}
			}
		}
	}
	return files
}

// checkSecretFiles checks that the container sees exactly the files of want
// (path: Secret and key), each readable by serve's group only: the kubelet
// makes them root's, in the pod's fsGroup, which serve (not root) reads
// them through; 0400 would lock serve out.
func checkSecretFiles(t *testing.T, pod corev1.PodSpec, c corev1.Container, want map[string]secretKey) {
	t.Helper()
	got := secretFiles(pod, c)
	for path, w := range want {
		if path == "" {
			t.Errorf("serve.yaml names no file for %s's key %s", w.secret, w.key)
			continue
		}
		f, ok := got[path]
		if !ok {
			t.Errorf("%s is not mounted (want %s's key %s)", path, w.secret, w.key)
			continue
		}
		if f.secretKey != w {
			t.Errorf("%s is mounted from %s's key %s, want %s's key %s", path, f.secret, f.key, w.secret, w.key)
		}
	}
	for path, f := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("%s (%s's key %q) is mounted but serve.yaml does not name it", path, f.secret, f.key)
		}
	}
	if psc := pod.SecurityContext; psc == nil || psc.FSGroup == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("serve's pod: want a non-root user and an fsGroup, the group its secret files are readable by")
	}
	for path, f := range got {
		if f.mode != 0o440 {
			t.Errorf("%s has mode %#o, want 0440 (the owner root and serve's group read it, no one else)", path, f.mode)
		}
	}
}

// loadServeConfig loads serve.yaml as serve does, and validates it.
func loadServeConfig(t *testing.T, text string) *serve.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "serve.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg serve.Config
	if err := cfg.LoadFile(path); err != nil {
		t.Fatalf("serve.yaml: %v\n%s", err, text)
	}
	cfg.ApplyDefaults()
	if cfg.Policies == "" {
		if err := cfg.Validate(); err != nil {
			t.Fatalf("serve.yaml: %v\n%s", err, text)
		}
	}
	return &cfg
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkRestricted checks a container of serve, NATS or Redis: no privilege
// escalation, a read-only root, no capabilities, seccomp.
func checkRestricted(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s: want no privilege escalation, a read-only root, all capabilities dropped and seccomp RuntimeDefault", c.Name)
	}
}

// TestChartNATSAndRedis checks the NATS cluster, Redis and the
// NetworkPolicies between them.
func TestChartNATSAndRedis(t *testing.T) {
	objs := decode(t, renderChart(t, nil))
	sts := named[*appsv1.StatefulSet](t, objs, "nats")
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("NATS replicas %v, want 3", sts.Spec.Replicas)
	}
	if sts.Spec.ServiceName != "nats-headless" || sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Error("NATS: want the headless Service and parallel pod management")
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Error("NATS: the file store is on a PersistentVolumeClaim per server")
	}
	nc := sts.Spec.Template.Spec.Containers[0]
	checkRestricted(t, nc)
	for what, p := range map[string]*corev1.Probe{"liveness": nc.LivenessProbe, "readiness": nc.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz?js-enabled-only=true" || p.HTTPGet.Port.String() != "monitor" {
			t.Errorf("NATS %s probe: want /healthz?js-enabled-only=true on the monitoring port", what)
		}
	}
	if headless := named[*corev1.Service](t, objs, "nats-headless"); headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Error("nats-headless: want a headless Service publishing not-ready servers (for the routes)")
	}
	if client := named[*corev1.Service](t, objs, "nats"); len(client.Spec.Ports) != 1 || client.Spec.Ports[0].Port != 4222 {
		t.Error("Service nats: want the client port 4222 only")
	}
	pdb := named[*policyv1.PodDisruptionBudget](t, objs, "nats")
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !selects(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Error("NATS's PodDisruptionBudget: want maxUnavailable 1 over the NATS pods")
	}

	redis := named[*appsv1.Deployment](t, objs, "redis")
	rc := redis.Spec.Template.Spec.Containers[0]
	checkRestricted(t, rc)
	if !slices.Contains(rc.Args, "--requirepass") || !slices.Contains(rc.Args, "$(REDIS_PASSWORD)") {
		t.Errorf("redis args %q: want --requirepass $(REDIS_PASSWORD)", rc.Args)
	}
	if redisSvc := named[*corev1.Service](t, objs, "redis"); redisSvc.Spec.Ports[0].Port != 6379 {
		t.Error("Service redis: want 6379")
	}

	serveLabels := named[*appsv1.Deployment](t, objs, "healer").Spec.Template.Labels
	policies := ofType[*networkingv1.NetworkPolicy](objs)
	if got, want := names(policies), []string{"healer-default-deny-ingress", "healer-nats", "healer-redis", "healer-serve"}; !slices.Equal(got, want) {
		t.Fatalf("NetworkPolicies %q, want %q", got, want)
	}
	deny := named[*networkingv1.NetworkPolicy](t, objs, "healer-default-deny-ingress")
	if len(deny.Spec.PodSelector.MatchLabels) != 0 || len(deny.Spec.Ingress) != 0 || !slices.Equal(deny.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Error("healer-default-deny-ingress must deny ingress to every pod")
	}
	rp := named[*networkingv1.NetworkPolicy](t, objs, "healer-redis")
	if len(rp.Spec.Ingress) != 1 || len(rp.Spec.Ingress[0].From) != 1 || !selects(rp.Spec.Ingress[0].From[0].PodSelector.MatchLabels, serveLabels) ||
		rp.Spec.Ingress[0].Ports[0].Port.IntValue() != 6379 {
		t.Error("healer-redis: want 6379 from serve's pods only")
	}
	np := named[*networkingv1.NetworkPolicy](t, objs, "healer-nats")
	var ports []int
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			ports = append(ports, p.Port.IntValue())
		}
	}
	if !slices.Equal(ports, []int{4222, 6222}) {
		t.Errorf("healer-nats admits ports %v, want 4222 and 6222 (8222 is for the probes)", ports)
	}

	t.Run("nodeCIDRs", func(t *testing.T) {
		objs := decode(t, renderChart(t, everything()))
		np := named[*networkingv1.NetworkPolicy](t, objs, "healer-nats")
		from := np.Spec.Ingress[0].From
		if len(from) != 2 || from[0].PodSelector == nil || from[1].IPBlock == nil || from[1].IPBlock.CIDR != "10.20.0.0/16" {
			t.Errorf("healer-nats 4222 from %+v: want serve's pods and the node CIDR", from)
		}
		eg := named[*networkingv1.NetworkPolicy](t, objs, "healer-serve-egress")
		if len(eg.Spec.Egress) != 6 {
			t.Errorf("healer-serve-egress has %d rules, want DNS, NATS, Redis, the API server, HTTPS and the extra rule", len(eg.Spec.Egress))
		}
	})
}

// TestChartAgents checks the agents' switches: without the masters'
// DaemonSet, and with cert.renew and etcd.replace-member taken off the
// masters (their read-write mounts go with their configuration, both there
// by default), the configurations still validate. internal/app/agent's
// TestDeployManifest checks the default ones.
func TestChartAgents(t *testing.T) {
	const pki, etcdData = "/etc/kubernetes/pki", "/var/lib/etcd"
	objs := decode(t, renderChart(t, nil))
	if got := names(ofType[*appsv1.DaemonSet](objs)); !slices.Equal(got, []string{"healer-agent", "healer-agent-master"}) {
		t.Fatalf("DaemonSets %q", got)
	}
	if got := masterHostPaths(t, objs); !slices.Contains(got, pki) || !slices.Contains(got, etcdData) {
		t.Errorf("defaults: the masters mount %q, want %s and %s", got, pki, etcdData)
	}
	if cfg := loadAgentConfig(t, "agent-master.yaml", named[*corev1.ConfigMap](t, objs, "healer-agent").Data["agent-master.yaml"]); cfg.EtcdMember == nil || cfg.CertRenew.KubeadmPKI == "" {
		t.Error("defaults: agent-master.yaml configures no certRenew or no etcdMember")
	}

	objs = decode(t, renderChart(t, values{"agent": values{"masters": values{"enabled": false}}}))
	if got := names(ofType[*appsv1.DaemonSet](objs)); !slices.Equal(got, []string{"healer-agent"}) {
		t.Errorf("agent.masters.enabled false: DaemonSets %q", got)
	}
	if _, ok := named[*corev1.ConfigMap](t, objs, "healer-agent").Data["agent-master.yaml"]; ok {
		t.Error("agent.masters.enabled false: the masters' configuration is still rendered")
	}

	objs = decode(t, renderChart(t, everything()))
	for _, p := range masterHostPaths(t, objs) {
		if p == pki || p == etcdData {
			t.Errorf("certRenew and etcdMember off: %s is still mounted", p)
		}
	}
	cm := named[*corev1.ConfigMap](t, objs, "healer-agent")
	if got := slices.Sorted(maps.Keys(cm.Data)); !slices.Equal(got, []string{"agent-master.yaml", "agent.yaml"}) {
		t.Fatalf("the agents' configurations %q", got)
	}
	for key, text := range cm.Data {
		cfg := loadAgentConfig(t, key, text)
		if cfg.NATS.URL != "tls://nats.healer.svc:4222" || cfg.NATS.CAFile != "/etc/healer-agent/ca.crt" || cfg.NATS.NKeyFile != "/etc/healer-agent/nats.nk" {
			t.Errorf("%s: with nats.tls the agents dial tls:// with the CA: %+v", key, cfg.NATS)
		}
		if key == "agent-master.yaml" && (cfg.EtcdMember != nil || cfg.CertRenew.KubeadmPKI != "") {
			t.Errorf("%s: certRenew and etcdMember off, still configured", key)
		}
	}
}

// masterHostPaths returns the host paths the masters' DaemonSet mounts.
func masterHostPaths(t *testing.T, objs []runtime.Object) []string {
	t.Helper()
	var paths []string
	for _, v := range named[*appsv1.DaemonSet](t, objs, "healer-agent-master").Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			paths = append(paths, v.HostPath.Path)
		}
	}
	return paths
}

// loadAgentConfig loads an agent's configuration as the agent does, for a
// node, and validates it.
func loadAgentConfig(t *testing.T, key, text string) agent.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), key)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg agent.Config
	if err := cfg.LoadFile(path); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	cfg.Node = "node-1"
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return cfg
}

// TestChartNATSConfig starts NATS servers from the rendered configuration,
// with an auth file as deploy/README.md tells how to write, and serve itself
// from its rendered configuration against them, plain and with TLS: the
// Secrets' keys are written where the Deployment mounts them, and serve logs
// in with natsUser and natsPasswordFile, verifies the TLS server with
// natsCAFile and authenticates to a Redis that wants its password with
// redisPasswordFile. A node's agent connects with its nkey.
func TestChartNATSConfig(t *testing.T) {
	agentKey, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	agentPub, err := agentKey.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	agentSeed, err := agentKey.Seed()
	if err != nil {
		t.Fatal(err)
	}
	perms, err := bus.AgentPermissions("worker-1", bus.AgentPermissionsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const servePassword, redisPassword = "serve-secret-Hq3v", "redis-secret-Wd8k"
	quote := func(s []string) string { return `"` + strings.Join(s, `", "`) + `"` }
	auth := fmt.Sprintf(`authorization {
  users: [
    {user: healer-serve, password: %q}
    {
      nkey: %q
      permissions: {
        publish: { allow: [%s] }
        subscribe: { allow: [%s] }
        allow_responses: { max: %d, expires: %q }
      }
    }
  ]
}
`, servePassword, agentPub, quote(perms.Publish.Allow), quote(perms.Subscribe.Allow), perms.Response.MaxMsgs, perms.Response.Expires.String())
	// The Secrets of deploy/README.md. serve-password ends in a newline, as
	// with --from-file of a file written by echo: serve drops it.
	secrets := map[string]map[string]string{
		"healer-tokens":            {"webhook-token": strings.Repeat("w", 64), "api-token": strings.Repeat("a", 64)},
		"healer-audit-signing-key": {"signing-key": signingKeyPEM(t)},
		"healer-redis":             {"password": redisPassword},
		"healer-nats-auth":         {"auth.conf": auth, "serve-password": servePassword + "\n"},
	}

	rd := testenv.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	// As the chart's Redis is started: --requirepass $(REDIS_PASSWORD).
	if err := rc.ConfigSet(t.Context(), "requirepass", redisPassword).Err(); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()

	// start starts one NATS server from the rendered configuration, on a
	// free loopback port and without the cluster it asks for (its peers do
	// not exist here). pki replaces the TLS files' paths, nil for none.
	start := func(t *testing.T, objs []runtime.Object, pki map[string]string) *server.Server {
		t.Helper()
		conf := named[*corev1.ConfigMap](t, objs, "nats").Data["nats.conf"]
		tls := pki != nil
		for from, to := range pki {
			conf = strings.ReplaceAll(conf, from, to)
		}
		dir := t.TempDir()
		for path, text := range map[string]string{"config/nats.conf": conf, "auth/auth.conf": auth} {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, path), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("POD_NAME", "nats-1")
		opts, err := server.ProcessConfigFile(filepath.Join(dir, "config/nats.conf"))
		if err != nil {
			t.Fatalf("NATS refuses the rendered configuration: %v\n%s", err, conf)
		}
		if opts.ServerName != "nats-1" || opts.Port != 4222 || opts.HTTPPort != 8222 || !opts.JetStream ||
			opts.Cluster.Name != "healer" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
			t.Errorf("rendered NATS configuration: server %q port %d monitoring %d jetstream %v cluster %q:%d routes %d",
				opts.ServerName, opts.Port, opts.HTTPPort, opts.JetStream, opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes))
		}
		if len(opts.Users) != 1 || len(opts.Nkeys) != 1 {
			t.Errorf("the auth file's users were not included: %d users, %d nkeys", len(opts.Users), len(opts.Nkeys))
		}
		if tls != (opts.TLSConfig != nil) || tls != (opts.Cluster.TLSConfig != nil) {
			t.Errorf("TLS for clients %v, routes %v; want %v", opts.TLSConfig != nil, opts.Cluster.TLSConfig != nil, tls)
		}
		// 127.0.0.1, the test certificate's address.
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
		opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
		opts.StoreDir = t.TempDir()
		opts.PidFile, opts.NoLog, opts.NoSigs = "", true, true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(ns.Shutdown)
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS did not start")
		}
		return ns
	}

	// startServe starts serve as its Deployment would: the rendered
	// serve.yaml, with each Secret key the Deployment mounts written under a
	// temporary directory standing for the container's root, and the
	// Services' addresses replaced by the servers'.
	startServe := func(t *testing.T, objs []runtime.Object, secrets map[string]map[string]string, ns *server.Server) *serve.Config {
		t.Helper()
		pod := named[*appsv1.Deployment](t, objs, "healer").Spec.Template.Spec
		dir := t.TempDir()
		for path, f := range secretFiles(pod, pod.Containers[0]) {
			v, ok := secrets[f.secret][f.key]
			if !ok {
				t.Fatalf("%s: the Deployment mounts %s's key %q, which no Secret of deploy/README.md holds", path, f.secret, f.key)
			}
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, path), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		text := named[*corev1.ConfigMap](t, objs, "healer").Data["serve.yaml"]
		cfg := loadServeConfig(t, strings.ReplaceAll(text, "/etc/healer/", dir+"/etc/healer/"))
		cfg.NATSURL = withHost(t, cfg.NATSURL, ns.Addr().String())
		cfg.RedisURL = withHost(t, cfg.RedisURL, rd.Addr)
		cfg.DataDir, cfg.Listen, cfg.NoKubernetes = t.TempDir(), "127.0.0.1:0", true
		cfg.Streams.Replicas = 1 // one server here, three in the chart

		ctx, cancel := context.WithCancel(t.Context())
		var logs testenv.LogBuffer
		srv, err := serve.Start(ctx, *cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			cancel()
			t.Fatalf("serve does not start from its rendered configuration: %v\n%s", err, logs.String())
		}
		t.Cleanup(func() {
			cancel()
			if err := srv.Wait(); err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		if got := srv.NATSURL(); !strings.Contains(got, ns.Addr().String()) {
			t.Errorf("serve is connected to %s, want the test's NATS %s", got, ns.Addr())
		}
		if strings.Contains(logs.String(), "redis unreachable") {
			t.Errorf("Redis refused the password of redisPasswordFile:\n%s", logs.String())
		}
		for _, secret := range []string{servePassword, redisPassword} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("serve logged a password:\n%s", logs.String())
			}
		}
		return cfg
	}

	t.Run("tls", func(t *testing.T) {
		ca, cert, key := testenv.ServingPKI(t)
		caPEM, err := os.ReadFile(ca)
		if err != nil {
			t.Fatal(err)
		}
		objs := decode(t, renderChart(t, values{"nats": values{"tls": values{"secretName": "healer-nats-tls"}}}))
		ns := start(t, objs, map[string]string{"/etc/nats/tls/ca.crt": ca, "/etc/nats/tls/tls.crt": cert, "/etc/nats/tls/tls.key": key})
		withTLS := maps.Clone(secrets)
		withTLS["healer-nats-tls"] = map[string]string{"ca.crt": string(caPEM)}
		cfg := startServe(t, objs, withTLS, ns)
		if !strings.HasPrefix(cfg.NATSURL, "tls://") || !strings.HasSuffix(cfg.NATSCAFile, "/etc/healer/nats-ca/ca.crt") {
			t.Errorf("serve dials %s with natsCAFile %q: want tls:// and the CA mounted from healer-nats-tls", cfg.NATSURL, cfg.NATSCAFile)
		}
	})

	objs := decode(t, renderChart(t, nil))
	ns := start(t, objs, nil)
	cfg := startServe(t, objs, secrets, ns)
	host := ns.Addr().String()
	if bad, err := nats.Connect("nats://"+host, nats.UserInfo(cfg.NATSUser, "wrong")); err == nil {
		bad.Close()
		t.Error("a wrong password is accepted")
	}
	seedFile := filepath.Join(t.TempDir(), "nats.nk")
	if err := os.WriteFile(seedFile, agentSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	denied := make(chan error, 1)
	agentConn, err := nats.Connect("nats://"+host, opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case denied <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("the agent cannot connect with its nkey: %v", err)
	}
	defer agentConn.Close()
	// Its user is confined to its node: another node's subject is refused.
	if err := agentConn.Publish("healer.agent.worker-2.events", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := agentConn.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-denied:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("publishing as another node: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the agent of worker-1 published as worker-2")
	}
}

// withHost returns the URL raw with its host:port replaced by hostPort.
func withHost(t *testing.T, raw, hostPort string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostPort
	return u.String()
}

// TestChartRBAC checks the rendered RBAC without a cluster: serve's roles
// hold exactly the registry's rules, secrets appear only in the listed
// namespaces, and a disabled remediator loses its roles.
func TestChartRBAC(t *testing.T) {
	infos := remediators.Infos()
	objs := decode(t, renderChart(t, nil))
	want := []string{"healer-serve"}
	for _, info := range infos {
		if len(info.RBAC) > 0 {
			want = append(want, render.RemediatorRoleName(info.Name))
		}
	}
	slices.Sort(want)
	if got := names(ofType[*rbacv1.ClusterRole](objs)); !slices.Equal(got, want) {
		t.Fatalf("ClusterRoles %q, want %q", got, want)
	}
	if got := names(ofType[*rbacv1.ClusterRoleBinding](objs)); !slices.Equal(got, want) {
		t.Fatalf("ClusterRoleBindings %q, want %q", got, want)
	}
	if roles := ofType[*rbacv1.Role](objs); len(roles) != 0 {
		t.Fatalf("Roles %q with the default values, want none", names(roles))
	}
	checkNoForbiddenRules(t, objs)
	for _, info := range infos {
		if len(info.RBAC) == 0 {
			continue
		}
		cr := named[*rbacv1.ClusterRole](t, objs, render.RemediatorRoleName(info.Name))
		if len(cr.Rules) != len(info.RBAC) {
			t.Fatalf("%s: %d rules, the registry has %d", cr.Name, len(cr.Rules), len(info.RBAC))
		}
		for i, r := range info.RBAC {
			got := cr.Rules[i]
			if !slices.Equal(got.APIGroups, r.APIGroups) || !slices.Equal(got.Resources, r.Resources) || !slices.Equal(got.Verbs, r.Verbs) {
				t.Errorf("%s rule %d = %+v, registry %+v", cr.Name, i, got, r)
			}
		}
		b := named[*rbacv1.ClusterRoleBinding](t, objs, cr.Name)
		checkBinding(t, b.RoleRef, b.Subjects, "ClusterRole", cr.Name)
	}
	b := named[*rbacv1.ClusterRoleBinding](t, objs, "healer-serve")
	checkBinding(t, b.RoleRef, b.Subjects, "ClusterRole", "healer-serve")
	if !hasRule(named[*rbacv1.ClusterRole](t, objs, "healer-serve").Rules, "events", "watch") {
		t.Error("healer-serve: the node-problem detector watches events")
	}

	readme, err := os.ReadFile(filepath.Join(root, "deploy/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range want {
		if !bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("deploy/README.md does not explain the ClusterRole %s", name)
		}
	}

	t.Run("switches", func(t *testing.T) {
		// Every remediator of the registry has its switch in values.yaml, and
		// only those.
		raw, err := os.ReadFile(filepath.Join(root, render.ChartDir, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var vals struct {
			Remediators map[string]struct {
				Enabled *bool `json:"enabled"`
			} `json:"remediators"`
		}
		if err := yaml.Unmarshal(raw, &vals); err != nil {
			t.Fatal(err)
		}
		var switches, registry []string
		for name, s := range vals.Remediators {
			if s.Enabled == nil || !*s.Enabled {
				t.Errorf("values.yaml: remediators.%s.enabled is not true", name)
			}
			switches = append(switches, name)
		}
		for _, info := range infos {
			registry = append(registry, info.Name)
		}
		slices.Sort(switches)
		slices.Sort(registry)
		if !slices.Equal(switches, registry) {
			t.Errorf("values.yaml's remediators %q, the registry's %q", switches, registry)
		}
	})

	t.Run("disabled", func(t *testing.T) {
		for _, info := range infos {
			objs := decode(t, renderChart(t, values{"remediators": values{info.Name: values{"enabled": false}}}))
			var left []string
			for _, n := range want {
				if n != render.RemediatorRoleName(info.Name) {
					left = append(left, n)
				}
			}
			if got := names(ofType[*rbacv1.ClusterRole](objs)); !slices.Equal(got, left) {
				t.Errorf("%s disabled: ClusterRoles %q, want %q", info.Name, got, left)
			}
			if got := names(ofType[*rbacv1.ClusterRoleBinding](objs)); !slices.Equal(got, left) {
				t.Errorf("%s disabled: ClusterRoleBindings %q, want %q", info.Name, got, left)
			}
			// serve leaves it out too, whether it holds RBAC or acts
			// through the agents.
			cfg := loadServeConfig(t, named[*corev1.ConfigMap](t, objs, "healer").Data["serve.yaml"])
			if !slices.Equal(cfg.DisabledRemediators, []string{info.Name}) {
				t.Errorf("%s disabled: serve's disabledRemediators %q", info.Name, cfg.DisabledRemediators)
			}
		}

		// serve.config.disabledRemediators adds to the switches, and its
		// remediators lose their RBAC too.
		objs := decode(t, renderChart(t, values{
			"remediators": values{"node.cordon": values{"enabled": false}},
			"serve":       values{"config": values{"disabledRemediators": []any{"node.drain", "vip.float"}}},
		}))
		cfg := loadServeConfig(t, named[*corev1.ConfigMap](t, objs, "healer").Data["serve.yaml"])
		if want := []string{"node.cordon", "node.drain", "vip.float"}; !slices.Equal(cfg.DisabledRemediators, want) {
			t.Errorf("disabledRemediators %q, want %q", cfg.DisabledRemediators, want)
		}
		if got := names(ofType[*rbacv1.ClusterRole](objs)); !slices.Equal(got, []string{"healer-serve"}) {
			t.Errorf("node.cordon and node.drain disabled: ClusterRoles %q, want healer-serve only", got)
		}
	})

	t.Run("secrets", func(t *testing.T) {
		objs := decode(t, renderChart(t, values{"serve": values{"config": values{
			"certExpiry": values{"secrets": values{"namespaces": []any{"ingress", "monitoring"}}},
		}}}))
		checkNoForbiddenRules(t, objs)
		roles := ofType[*rbacv1.Role](objs)
		var where []string
		for _, r := range roles {
			where = append(where, r.Namespace+"/"+r.Name)
			wantRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}}
			if fmt.Sprint(r.Rules) != fmt.Sprint(wantRules) {
				t.Errorf("Role %s/%s rules %+v, want list on secrets only (what the certexpiry detector calls)", r.Namespace, r.Name, r.Rules)
			}
		}
		slices.Sort(where)
		if want := []string{"ingress/healer-certexpiry-secrets", "monitoring/healer-certexpiry-secrets"}; !slices.Equal(where, want) {
			t.Fatalf("Roles %q, want %q", where, want)
		}
		for _, rb := range ofType[*rbacv1.RoleBinding](objs) {
			checkBinding(t, rb.RoleRef, rb.Subjects, "Role", "healer-certexpiry-secrets")
		}
		if n := len(ofType[*rbacv1.RoleBinding](objs)); n != 2 {
			t.Errorf("%d RoleBindings, want 2", n)
		}
		if _, err := render.Chart(t.Context(), filepath.Join(root, render.ChartDir), values{"serve": values{"config": values{
			"certExpiry": values{"secrets": values{"labelSelector": "app=ingress"}},
		}}}); err == nil || !strings.Contains(err.Error(), "namespaces") {
			t.Errorf("certExpiry.secrets without namespaces (every namespace) rendered: %v", err)
		}
	})

	t.Run("nodeProblem disabled", func(t *testing.T) {
		objs := decode(t, renderChart(t, values{"serve": values{"config": values{"nodeProblem": values{"disabled": true}}}}))
		if hasRule(named[*rbacv1.ClusterRole](t, objs, "healer-serve").Rules, "events", "list") {
			t.Error("healer-serve keeps events without the node-problem detector")
		}
	})
}

// checkNoForbiddenRules fails on wildcards, privilege escalation, token
// creation and cluster-wide secrets in any rendered role, and on any binding
// of the agent's service account.
func checkNoForbiddenRules(t *testing.T, objs []runtime.Object) {
	t.Helper()
	check := func(where string, rules []rbacv1.PolicyRule, namespaced bool) {
		for _, r := range rules {
			for _, s := range slices.Concat(r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs) {
				if strings.Contains(s, "*") {
					t.Errorf("%s: wildcard in %+v", where, r)
				}
			}
			for _, v := range r.Verbs {
				if v == "escalate" || v == "bind" || v == "impersonate" {
					t.Errorf("%s: verb %s", where, v)
				}
			}
			for _, res := range r.Resources {
				if (res == "secrets" || strings.HasPrefix(res, "secrets/")) && !namespaced {
					t.Errorf("%s: secrets cluster-wide", where)
				}
				if res == "serviceaccounts/token" || res == "serviceaccounts" {
					t.Errorf("%s: %s", where, res)
				}
			}
		}
	}
	for _, cr := range ofType[*rbacv1.ClusterRole](objs) {
		check("ClusterRole "+cr.Name, cr.Rules, false)
		if cr.AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles", cr.Name)
		}
	}
	for _, r := range ofType[*rbacv1.Role](objs) {
		check("Role "+r.Namespace+"/"+r.Name, r.Rules, true)
	}
	for _, b := range ofType[*rbacv1.ClusterRoleBinding](objs) {
		for _, s := range b.Subjects {
			if s.Name == "healer-agent" {
				t.Errorf("ClusterRoleBinding %s binds the agent's service account", b.Name)
			}
		}
	}
}

func checkBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name string) {
	t.Helper()
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "healer", Namespace: render.Namespace}}
	if ref.Kind != kind || ref.Name != name || !slices.Equal(subjects, want) {
		t.Errorf("binding of %s %s: roleRef %+v subjects %+v, want serve's service account only", kind, name, ref, subjects)
	}
}

func hasRule(rules []rbacv1.PolicyRule, resource, verb string) bool {
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb)
	})
}

// signingKeyPEM is a new Ed25519 key as `openssl genpkey -algorithm
// ed25519` writes it: the healer-audit-signing-key Secret's signing-key.
func signingKeyPEM(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

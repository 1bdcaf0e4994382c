package testenv

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestKube(t *testing.T) {
	begin := time.Now()
	k := StartKubeWith(t, KubeOptions{ExtraUsers: []User{{Name: "viewer", Groups: []string{"healer:viewers"}}}})
	t.Logf("StartKube took %s", time.Since(begin).Round(time.Millisecond))
	ctx := t.Context()

	t.Run("apiserver answers as admin", func(t *testing.T) {
		v, err := k.Client.Discovery().ServerVersion()
		if err != nil {
			t.Fatalf("server version: %v", err)
		}
		t.Logf("server version %s", v.GitVersion)
		who := whoAmI(ctx, t, k.Client)
		if who.Username != AdminUser || !slices.Contains(who.Groups, "system:masters") {
			t.Errorf("admin is %q in %v, want %q in system:masters", who.Username, who.Groups, AdminUser)
		}
	})

	t.Run("kubeconfig loads with clientcmd", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", k.KubeconfigPath)
		if err != nil {
			t.Fatalf("load kubeconfig: %v", err)
		}
		c := kubernetes.NewForConfigOrDie(cfg)
		if _, err := c.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{}); err != nil {
			t.Fatalf("get namespace default through kubeconfig: %v", err)
		}
	})

	t.Run("nodes are created ready and can be cordoned", func(t *testing.T) {
		nodes := CreateNodes(ctx, t, k.Client, "node-a", "node-b")
		if len(nodes) != 2 {
			t.Fatalf("got %d nodes, want 2", len(nodes))
		}
		for _, n := range nodes {
			if n.Labels[HostnameLabel] != n.Name {
				t.Errorf("node %s: hostname label %q", n.Name, n.Labels[HostnameLabel])
			}
			if got := condition(n, corev1.NodeReady); got == nil || got.Status != corev1.ConditionTrue {
				t.Errorf("node %s: Ready condition %+v, want True", n.Name, got)
			}
			if len(n.Spec.Taints) != 0 {
				t.Errorf("node %s: taints %v, want none", n.Name, n.Spec.Taints)
			}
		}
		_, err := k.Client.CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType,
			[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("cordon node-a: %v", err)
		}
		n, err := k.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get node-a: %v", err)
		}
		if !n.Spec.Unschedulable {
			t.Errorf("node-a is not unschedulable after cordon")
		}
	})

	t.Run("node condition is set like node-problem-detector", func(t *testing.T) {
		first := SetNodeCondition(ctx, t, k.Client, "node-b", "KernelDeadlock", corev1.ConditionTrue,
			"DockerHung", "task docker:7 blocked for more than 120 seconds")
		c := condition(first, "KernelDeadlock")
		if c == nil || c.Status != corev1.ConditionTrue || c.Reason != "DockerHung" ||
			c.LastHeartbeatTime.IsZero() || c.LastTransitionTime.IsZero() {
			t.Fatalf("KernelDeadlock condition %+v", c)
		}
		if ready := condition(first, corev1.NodeReady); ready == nil || ready.Status != corev1.ConditionTrue {
			t.Errorf("Ready condition %+v after patch, want it kept True", ready)
		}
		again := SetNodeCondition(ctx, t, k.Client, "node-b", "KernelDeadlock", corev1.ConditionTrue,
			"DockerHung", "still blocked")
		if c2 := condition(again, "KernelDeadlock"); !c2.LastTransitionTime.Equal(&c.LastTransitionTime) || c2.Message != "still blocked" {
			t.Errorf("same status again: condition %+v, want transition time %s kept", c2, c.LastTransitionTime)
		}
		cleared := SetNodeCondition(ctx, t, k.Client, "node-b", "KernelDeadlock", corev1.ConditionFalse,
			"KernelHasNoDeadlock", "kernel has no deadlock")
		if c3 := condition(cleared, "KernelDeadlock"); c3.Status != corev1.ConditionFalse {
			t.Errorf("cleared condition %+v, want False", c3)
		}
		if n := len(cleared.Status.Conditions); n != 5 {
			t.Errorf("node-b has %d conditions, want 5", n)
		}
	})

	t.Run("pods, events and PDBs can be created", func(t *testing.T) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{
				NodeName:   "node-a",
				Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
		if _, err := k.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod default/web-0: %v", err)
		}
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: new(intstr.FromInt32(1)),
				Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			},
		}
		if _, err := k.Client.PolicyV1().PodDisruptionBudgets("default").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create PDB default/web: %v", err)
		}
		ev := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "node-a.testenv", Namespace: "default"},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "node-a", UID: types.UID("node-a")},
			Reason:         "Cordoned",
			Message:        "cordoned by testenv",
			Type:           corev1.EventTypeNormal,
			Source:         corev1.EventSource{Component: "healer"},
		}
		if _, err := k.Client.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create event default/node-a.testenv: %v", err)
		}
	})

	t.Run("RBAC forbids users without bindings", func(t *testing.T) {
		viewerToken := k.UserToken("viewer")
		if viewerToken == "" {
			t.Fatal("no token for extra user viewer")
		}
		if got := whoAmI(ctx, t, k.UserClient(t, viewerToken)); got.Username != "viewer" || !slices.Contains(got.Groups, "healer:viewers") {
			t.Errorf("viewer token authenticates as %q in %v", got.Username, got.Groups)
		}
		opsToken := k.AddUser("ops", "healer:ops")
		ops := k.UserClient(t, opsToken)
		if got := whoAmI(ctx, t, ops); got.Username != "ops" || !slices.Contains(got.Groups, "healer:ops") {
			t.Errorf("AddUser token authenticates as %q in %v", got.Username, got.Groups)
		}

		for _, u := range []struct{ name, group string }{{"viewer", "healer:viewers"}, {"ops", "healer:ops"}} {
			if canPatchNodes(ctx, t, k.Client, u.name, u.group) {
				t.Errorf("SubjectAccessReview: %s may patch nodes without any binding", u.name)
			}
		}
		_, err := ops.CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType,
			[]byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("ops patching node-a: got %v, want Forbidden", err)
		}

		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "healer-testenv-node-patcher"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}}},
		}
		if _, err := k.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create clusterrole %s: %v", role.Name, err)
		}
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "healer:ops"}},
		}
		if _, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create clusterrolebinding %s: %v", binding.Name, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !canPatchNodes(ctx, t, k.Client, "ops", "healer:ops") {
			if time.Now().After(deadline) {
				t.Fatal("SubjectAccessReview: ops still may not patch nodes 10s after the binding")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := ops.CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType,
			[]byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{}); err != nil {
			t.Fatalf("ops patching node-a with a binding: %v", err)
		}
		if canPatchNodes(ctx, t, k.Client, "viewer", "healer:viewers") {
			t.Error("SubjectAccessReview: viewer may patch nodes through another group's binding")
		}
	})

	t.Run("apiserver can be stopped and started", func(t *testing.T) {
		k.StopAPIServer()
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := k.Client.CoreV1().Nodes().Get(short, "node-a", metav1.GetOptions{})
		cancel()
		if err == nil {
			t.Fatal("get node-a succeeded with the apiserver stopped")
		}
		t.Logf("with the apiserver stopped: %v", err)
		begin := time.Now()
		k.StartAPIServer()
		t.Logf("StartAPIServer took %s", time.Since(begin).Round(time.Millisecond))
		if _, err := k.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
			t.Fatalf("get node-a after restart: %v", err)
		}
		k.RestartAPIServer(t)
		if _, err := k.UserClient(t, k.UserToken("ops")).CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
			t.Fatalf("get node-a as ops after RestartAPIServer: %v", err)
		}
	})

	t.Run("Stop kills the processes", func(t *testing.T) {
		pids := []int{k.apiserver.pid(), k.etcd.pid()}
		k.Stop()
		k.Stop()
		for _, pid := range pids {
			if pid == 0 {
				t.Fatal("a process was not running before Stop")
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("pid %d after Stop: kill 0 = %v, want ESRCH", pid, err)
			}
		}
	})
}

func TestRedis(t *testing.T) {
	r := StartRedis(t)
	if !strings.HasPrefix(r.URL, "redis://127.0.0.1:") || !strings.HasSuffix(r.URL, "/0") {
		t.Errorf("URL %q", r.URL)
	}
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatalf("parse %s: %v", r.URL, err)
	}
	opts.MaxRetries = -1
	opts.DialTimeout = time.Second
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	ctx := t.Context()

	if err := client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	r.Stop()
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded with redis-server stopped")
	}
	if err := ping(ctx, r.Addr); err == nil {
		t.Fatal("raw PING succeeded with redis-server stopped")
	}
	r.Start()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if err := client.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET k after restart: %v, want redis.Nil (nothing persisted)", err)
	}
}

func TestMissingBinariesMentionMake(t *testing.T) {
	t.Setenv(BinEnv, t.TempDir())
	for _, name := range []string{"etcd", "kube-apiserver"} {
		_, err := findBinary(name)
		if err == nil || !strings.Contains(err.Error(), "run `make testenv` first") {
			t.Errorf("findBinary(%q) with an empty %s: %v", name, BinEnv, err)
		}
	}
}

func TestMergeArgs(t *testing.T) {
	got := mergeArgs([]string{"--a=1", "--b=2", "--c"}, []string{"--b=3", "--d=4"})
	want := []string{"--a=1", "--c", "--b=3", "--d=4"}
	if !slices.Equal(got, want) {
		t.Errorf("mergeArgs = %v, want %v", got, want)
	}
}

func whoAmI(ctx context.Context, t *testing.T, c kubernetes.Interface) authenticationv1.UserInfo {
	t.Helper()
	r, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create SelfSubjectReview: %v", err)
	}
	return r.Status.UserInfo
}

func canPatchNodes(ctx context.Context, t *testing.T, admin kubernetes.Interface, user, group string) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{group, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "patch", Resource: "nodes", Name: "node-a"},
	}}
	r, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create SubjectAccessReview for %s: %v", user, err)
	}
	return r.Status.Allowed
}

func condition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

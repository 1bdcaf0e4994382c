package deploy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/selfheal/healer/deploy/render"
	"github.com/selfheal/healer/test/testenv"
)

// access is one question to the authorizer and the answer wanted.
type access struct {
	verb, group, resource, subresource, namespace, name string
	allowed                                             bool
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	if a.name != "" {
		r += " " + a.name
	}
	return fmt.Sprintf("%s %s %s", a.verb, r, where)
}

func (a access) attributes() *authorizationv1.ResourceAttributes {
	return &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource,
		Subresource: a.subresource, Namespace: a.namespace, Name: a.name}
}

// TestRBACOnAPIServer applies the rendered service accounts, roles and
// bindings to a real kube-apiserver (RBAC on), takes a real token of serve's
// service account through TokenRequest, and asks the authorizer, as that
// account, what it may do: exactly what the remediators and detectors need.
// The agent's service account may do nothing.
func TestRBACOnAPIServer(t *testing.T) {
	kube := testenv.StartKube(t)
	ctx := t.Context()
	for _, ns := range []string{render.Namespace, "ingress", "other"} {
		if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	applyRBAC(ctx, t, kube.Client, decode(t, renderChart(t, nil)))

	tr, err := kube.Client.CoreV1().ServiceAccounts(render.Namespace).CreateToken(ctx, "healer",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for healer: %v", err)
	}
	sa := kube.UserClient(t, tr.Status.Token)
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := review.Status.UserInfo.Username, "system:serviceaccount:healer:healer"; got != want {
		t.Fatalf("the token authenticates as %q, want %q", got, want)
	}

	serveNeeds := []access{
		{verb: "get", resource: "nodes", allowed: true},
		{verb: "list", resource: "nodes", allowed: true},
		{verb: "watch", resource: "nodes", allowed: true},
		{verb: "patch", resource: "nodes", name: "worker-1", allowed: true},
		{verb: "create", resource: "pods", subresource: "eviction", namespace: "default", allowed: true},
		{verb: "list", resource: "pods", allowed: true},
		{verb: "get", resource: "pods", namespace: "kube-system", allowed: true},
		{verb: "list", group: "policy", resource: "poddisruptionbudgets", allowed: true},
		{verb: "get", group: "apps", resource: "daemonsets", namespace: "kube-system", allowed: true},
		{verb: "create", resource: "events", namespace: "default", allowed: true},
		{verb: "list", resource: "events", allowed: true},
		{verb: "watch", resource: "events", allowed: true},
	}
	serveMustNot := []access{
		{verb: "get", resource: "secrets"},
		{verb: "list", resource: "secrets"},
		{verb: "watch", resource: "secrets"},
		{verb: "list", resource: "secrets", namespace: render.Namespace},
		{verb: "get", resource: "secrets", namespace: "ingress", name: "tls"},
		{verb: "list", resource: "secrets", namespace: "ingress"},
		{verb: "delete", resource: "pods", namespace: "default"},
		{verb: "create", resource: "pods", namespace: "default"},
		{verb: "update", resource: "pods", namespace: "default"},
		{verb: "delete", resource: "nodes"},
		{verb: "update", resource: "nodes"},
		{verb: "create", resource: "nodes"},
		{verb: "update", group: "apps", resource: "deployments", namespace: "default"},
		{verb: "patch", group: "apps", resource: "daemonsets", namespace: "kube-system"},
		{verb: "delete", resource: "events", namespace: "default"},
		{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
		{verb: "bind", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings"},
		{verb: "update", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "healer-serve"},
		{verb: "impersonate", resource: "users"},
		{verb: "impersonate", resource: "serviceaccounts", namespace: render.Namespace},
		{verb: "impersonate", resource: "groups"},
		{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: render.Namespace, name: "healer-agent"},
		{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: "kube-system", name: "default"},
		{verb: "get", resource: "configmaps", namespace: render.Namespace},
	}
	selfCheck := func(a access) (bool, error) {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: a.attributes()}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return r.Status.Allowed, nil
	}
	expect(ctx, t, "serve", selfCheck, append(serveNeeds, serveMustNot...))

	// The rules the authorizer holds for serve, as serve sees them.
	rules, err := sa.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: "ingress"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rules.Status.Incomplete {
		t.Fatalf("SelfSubjectRulesReview incomplete: %s", rules.Status.EvaluationError)
	}
	patchNodes := false
	for _, r := range rules.Status.ResourceRules {
		for _, s := range slices.Concat(r.APIGroups, r.Resources, r.Verbs) {
			if strings.Contains(s, "*") {
				t.Errorf("serve holds a wildcard rule: %+v", r)
			}
		}
		for _, res := range r.Resources {
			if res == "secrets" {
				t.Errorf("serve holds a rule on secrets by default: %+v", r)
			}
			if res == "nodes" && slices.Contains(r.Verbs, "patch") {
				patchNodes = true
			}
		}
	}
	if !patchNodes {
		t.Errorf("SelfSubjectRulesReview shows no patch on nodes: %+v", rules.Status.ResourceRules)
	}

	// What the authorizer says is what the API does.
	if _, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("serve lists nodes: %v", err)
	}
	if _, err := sa.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("serve lists secrets: want Forbidden, got %v", err)
	}
	if _, err := sa.CoreV1().ServiceAccounts(render.Namespace).CreateToken(ctx, "healer-agent", &authenticationv1.TokenRequest{}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("serve takes a token of healer-agent: want Forbidden, got %v", err)
	}

	// The agent's service account is bound to nothing.
	agentCheck := func(a access) (bool, error) {
		r, err := kube.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:healer:healer-agent",
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:healer", "system:authenticated"},
			ResourceAttributes: a.attributes(),
		}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return r.Status.Allowed, nil
	}
	expect(ctx, t, "healer-agent", agentCheck, []access{
		{verb: "get", resource: "nodes"},
		{verb: "list", resource: "nodes"},
		{verb: "patch", resource: "nodes"},
		{verb: "list", resource: "pods"},
		{verb: "create", resource: "events", namespace: "default"},
		{verb: "get", resource: "configmaps", namespace: render.Namespace},
		{verb: "list", resource: "secrets", namespace: render.Namespace},
	})
	if sanity, err := agentCheck(access{verb: "create", group: "authorization.k8s.io", resource: "selfsubjectaccessreviews"}); err != nil || !sanity {
		t.Errorf("the review of the agent's account does not see system:authenticated's own rules (%v): the check proves nothing", err)
	}

	// Listing a namespace's TLS secrets in serve.config grants exactly that.
	applyRBAC(ctx, t, kube.Client, decode(t, renderChart(t, values{"serve": values{"config": values{
		"certExpiry": values{"secrets": values{"namespaces": []any{"ingress"}}},
	}}})))
	expect(ctx, t, "serve with certExpiry.secrets.namespaces [ingress]", selfCheck, append(serveNeeds,
		access{verb: "list", resource: "secrets", namespace: "ingress", allowed: true},
		access{verb: "get", resource: "secrets", namespace: "ingress", name: "tls"},
		access{verb: "watch", resource: "secrets", namespace: "ingress"},
		access{verb: "list", resource: "secrets", namespace: "other"},
		access{verb: "list", resource: "secrets", namespace: render.Namespace},
		access{verb: "list", resource: "secrets"},
	))
	if _, err := sa.CoreV1().Secrets("ingress").List(ctx, metav1.ListOptions{FieldSelector: "type=kubernetes.io/tls"}); err != nil {
		t.Errorf("serve lists the TLS secrets of ingress: %v", err)
	}
	if _, err := sa.CoreV1().Secrets("other").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("serve lists the secrets of other: want Forbidden, got %v", err)
	}
}

// expect asks check each question until every answer is the wanted one, for
// a few seconds (the authorizer's caches catch up with new bindings), then
// reports the wrong answers.
func expect(ctx context.Context, t *testing.T, who string, check func(access) (bool, error), want []access) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var wrong []string
		for _, a := range want {
			got, err := check(a)
			if err != nil {
				t.Fatalf("%s: %s: %v", who, a, err)
			}
			if got != a.allowed {
				wrong = append(wrong, fmt.Sprintf("%s: allowed %v, want %v", a, got, a.allowed))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s:\n  %s", who, strings.Join(wrong, "\n  "))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// applyRBAC creates (or updates) the rendered ServiceAccounts, roles and
// bindings, with typed clients; the workloads are not needed to answer
// who may do what.
func applyRBAC(ctx context.Context, t *testing.T, c kubernetes.Interface, objs []runtime.Object) {
	t.Helper()
	n := 0
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			err = upsert(ctx, o, c.CoreV1().ServiceAccounts(o.Namespace))
		case *rbacv1.ClusterRole:
			err = upsert(ctx, o, c.RbacV1().ClusterRoles())
		case *rbacv1.ClusterRoleBinding:
			err = upsert(ctx, o, c.RbacV1().ClusterRoleBindings())
		case *rbacv1.Role:
			err = upsert(ctx, o, c.RbacV1().Roles(o.Namespace))
		case *rbacv1.RoleBinding:
			err = upsert(ctx, o, c.RbacV1().RoleBindings(o.Namespace))
		default:
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	t.Logf("applied %d service accounts, roles and bindings", n)
}

// typedClient is what upsert needs of a typed client.
type typedClient[T interface {
	metav1.Object
	runtime.Object
}] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
}

func upsert[T interface {
	metav1.Object
	runtime.Object
}](ctx context.Context, obj T, c typedClient[T]) error {
	_, err := c.Create(ctx, obj, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
		}
		return nil
	}
	cur, err := c.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get %T %s: %w", obj, obj.GetName(), err)
	}
	obj.SetResourceVersion(cur.GetResourceVersion())
	if _, err := c.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

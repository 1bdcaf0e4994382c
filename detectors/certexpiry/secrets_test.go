package certexpiry

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/test/testenv"
)

func tlsSecret(ns, name string, crt issued, annotations map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt.certPEM, corev1.TLSPrivateKeyKey: crt.keyPEM},
	}
}

// secretFixture is a set of secrets in the namespaces ingress, kube-system
// and other, chosen to be in bands at t0.
type secretFixture struct {
	web, old, opaque, far, elsewhere issued
	ca                               *testCA
	objects                          []runtime.Object
}

func newSecretFixture(t *testing.T, now time.Time) *secretFixture {
	t.Helper()
	f := &secretFixture{ca: newCA(t, "ingress-ca", now.AddDate(5, 0, 0))}
	f.web = f.ca.issue(t, leaf{cn: "www.example.com", dns: []string{"www.example.com"}, notAfter: now.Add(5 * day)})
	f.old = f.ca.issue(t, leaf{cn: "old.example.com", notAfter: now.Add(-2 * day)})
	f.opaque = f.ca.issue(t, leaf{cn: "opaque", notAfter: now.Add(day)})
	f.far = f.ca.issue(t, leaf{cn: "far", notAfter: now.Add(300 * day)})
	f.elsewhere = f.ca.issue(t, leaf{cn: "elsewhere", notAfter: now.Add(2 * day)})
	// tls.crt with the chain after the leaf, as cert-manager writes it.
	web := tlsSecret("ingress", "web-tls", f.web, map[string]string{"cert-manager.io/certificate-name": "web"})
	web.Data[corev1.TLSCertKey] = slices.Concat(f.web.certPEM, f.ca.pem)
	opaque := tlsSecret("ingress", "opaque", f.opaque, nil)
	opaque.Type = corev1.SecretTypeOpaque
	broken := tlsSecret("ingress", "broken-tls", f.far, nil)
	broken.Data[corev1.TLSCertKey] = []byte("not a certificate")
	f.objects = []runtime.Object{
		web, tlsSecret("ingress", "old-tls", f.old, nil), opaque, broken,
		tlsSecret("kube-system", "far-tls", f.far, nil), tlsSecret("other", "near-tls", f.elsewhere, nil),
	}
	return f
}

func TestDetectorSecretsFake(t *testing.T) {
	f := newSecretFixture(t, t0)
	cs := fake.NewClientset(f.objects...)
	h := start(t, Config{Secrets: &Secrets{Namespaces: []string{"ingress", "kube-system"}}}, t0, WithKubeClient(cs))
	got := h.pub.take()
	if want := []string{"firing CertificateExpired secret:ingress/old-tls", "firing CertificateExpiring secret:ingress/web-tls"}; !slices.Equal(keys(got), want) {
		t.Fatalf("published %v, want %v", keys(got), want)
	}
	evs := byKey(t, got)
	web := evs["secret:ingress/web-tls"]
	checkEvent(t, web, TypeExpiring, "cert/ingress/web-tls", bus.StatusFiring, t0)
	d := data(t, web)
	if d.Kind != KindSecret || d.Namespace != "ingress" || d.Secret != "web-tls" || d.Node != "" || d.CertManagerCertificate != "web" {
		t.Errorf("location %+v", d.Location)
	}
	if d.SubjectCN != "www.example.com" || d.IsCA || d.Band != "7d" || d.IssuerCN != "ingress-ca" {
		t.Errorf("the leaf, not the chain, must be reported: %+v", d.Cert)
	}
	checkEvent(t, evs["secret:ingress/old-tls"], TypeExpired, "cert/ingress/old-tls", bus.StatusFiring, t0)
	recs := h.logs.records("certificate source unreadable")
	if len(recs) != 1 || recs[0]["read"] != "secret ingress/broken-tls" {
		t.Errorf("problems logged: %v", recs)
	}
	if strings.Contains(h.logs.String(), string(f.far.keyPEM[30:70])) {
		t.Error("the log holds a secret's key")
	}

	// Listing fails: the secrets keep their state.
	var fail bool
	cs.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fail {
			return true, nil, errors.New("etcdserver: request timed out")
		}
		return false, nil, nil
	})
	fail = true
	h.at(t0.Add(time.Hour))
	if got := h.pub.take(); len(got) != 0 {
		t.Errorf("a failed list published %v", keys(got))
	}
	if recs := h.logs.records("certificate source unreadable"); len(recs) != 3 {
		t.Errorf("want each namespace's failure logged: %v", recs)
	}

	// The expired secret is deleted and the web one renewed.
	fail = false
	if err := cs.CoreV1().Secrets("ingress").Delete(t.Context(), "old-tls", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	renewed := f.ca.issue(t, leaf{cn: "www.example.com", notAfter: t0.Add(90 * day)})
	if _, err := cs.CoreV1().Secrets("ingress").Update(t.Context(), tlsSecret("ingress", "web-tls", renewed, nil), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.at(t0.Add(2 * time.Hour))
	got = h.pub.take()
	if want := []string{"resolved CertificateExpiring secret:ingress/web-tls", "resolved CertificateExpired secret:ingress/old-tls"}; !slices.Equal(keys(got), want) {
		t.Fatalf("after renewal and deletion: %v, want %v", keys(got), want)
	}
	if d := data(t, got[0]); d.Resolution != ResolvedRenewed || d.Previous == nil || d.Previous.SubjectCN != "www.example.com" {
		t.Errorf("renewed: %+v", d)
	}
	if d := data(t, got[1]); d.Resolution != ResolvedGone {
		t.Errorf("deleted: resolution %q", d.Resolution)
	}
}

func TestDetectorSecretsAllNamespaces(t *testing.T) {
	f := newSecretFixture(t, t0)
	h := start(t, Config{Secrets: &Secrets{}}, t0, WithKubeClient(fake.NewClientset(f.objects...)))
	if got, want := keys(h.pub.take()), []string{
		"firing CertificateExpired secret:ingress/old-tls",
		"firing CertificateExpiring secret:ingress/web-tls",
		"firing CertificateExpiring secret:other/near-tls",
	}; !slices.Equal(got, want) {
		t.Errorf("published %v, want %v", got, want)
	}
}

// Against a real apiserver: the field selector, paging, and RBAC that
// lets the detector read one namespace but not another.
func TestDetectorSecretsAPIServer(t *testing.T) {
	kube := testenv.StartKube(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	f := newSecretFixture(t, now)
	for _, ns := range []string{"ingress", "kube-system", "other"} {
		if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && ns != "kube-system" {
			t.Fatal(err)
		}
	}
	for _, o := range f.objects {
		s := o.(*corev1.Secret)
		if _, err := kube.Client.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create secret %s/%s: %v", s.Namespace, s.Name, err)
		}
	}
	// More TLS secrets far from expiry, so that listing takes pages.
	for _, name := range []string{"a-tls", "b-tls", "c-tls"} {
		if _, err := kube.Client.CoreV1().Secrets("ingress").Create(ctx, tlsSecret("ingress", name, f.far, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The detector's user may list the secrets of ingress, nothing else.
	token := kube.AddUser("certexpiry")
	grantListSecrets(t, kube.Client, "ingress", "certexpiry")

	small := Option(func(d *Detector) { d.pageSize = 2 })
	cfg := kube.UserConfig(token)
	var lists atomic.Int32
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/api/v1/namespaces/ingress/secrets" {
				lists.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, Config{Secrets: &Secrets{Namespaces: []string{"ingress", "other"}}}, now, WithKubeClient(client), small)
	got := h.pub.take()
	// Six TLS secrets in ingress, two a page.
	if n := lists.Load(); n != 3 {
		t.Errorf("%d list requests for ingress, want 3 pages", n)
	}
	if want := []string{"firing CertificateExpired secret:ingress/old-tls", "firing CertificateExpiring secret:ingress/web-tls"}; !slices.Equal(keys(got), want) {
		t.Fatalf("published %v, want %v\n%s", keys(got), want, h.logs.String())
	}
	d := data(t, byKey(t, got)["secret:ingress/web-tls"])
	if d.CertManagerCertificate != "web" || d.SubjectCN != "www.example.com" || d.DaysLeft != 5 {
		t.Errorf("web-tls: %+v", d)
	}
	var reads []string
	for _, r := range h.logs.records("certificate source unreadable") {
		reads = append(reads, r["read"].(string))
		if r["read"] == "secrets in namespace other" && !strings.Contains(r["err"].(string), "forbidden") {
			t.Errorf("other: %v, want forbidden", r["err"])
		}
	}
	if want := []string{"secret ingress/broken-tls", "secrets in namespace other"}; !slices.Equal(reads, want) {
		t.Errorf("problems logged for %v, want %v", reads, want)
	}

	if err := kube.Client.CoreV1().Secrets("ingress").Delete(ctx, "web-tls", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.at(now.Add(time.Hour))
	if got, want := keys(h.pub.take()), []string{"resolved CertificateExpiring secret:ingress/web-tls"}; !slices.Equal(got, want) {
		t.Errorf("after deletion: %v, want %v", got, want)
	}

	// The apiserver is itself a live TLS endpoint.
	addr := strings.TrimPrefix(kube.Config.Host, "https://")
	c, err := Presented(ctx, Endpoint{Address: addr}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if cert := NewCert(c); !slices.Contains(cert.IPAddresses, "127.0.0.1") || cert.IsCA {
		t.Errorf("the apiserver presented %+v", cert)
	}
}

func grantListSecrets(t *testing.T, c kubernetes.Interface, ns, user string) {
	t.Helper()
	ctx := t.Context()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "certexpiry"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}},
	}
	if _, err := c.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "certexpiry"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "certexpiry"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	if _, err := c.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC takes effect when the apiserver's informers have seen the
	// binding: wait until the user can list.
	deadline := time.Now().Add(30 * time.Second)
	for {
		review, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar(ns, user), metav1.CreateOptions{})
		if err == nil && review.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RBAC for %s never took effect: %v", user, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sar(ns, user string) *authorizationv1.SubjectAccessReview {
	return &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "secrets"},
	}}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

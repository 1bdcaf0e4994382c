package testenv

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// AdminUser is the user the admin credentials of a Kube authenticate
	// as. It is in the system:masters group, which RBAC lets do anything.
	AdminUser = "healer-admin"

	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1" // the first address of serviceCIDR, for the kubernetes Service

	etcdTimeout      = 30 * time.Second
	apiserverTimeout = 90 * time.Second
	// apiserverGrace is how long StopAPIServer lets kube-apiserver shut
	// down before killing it.
	apiserverGrace = 5 * time.Second
)

// User is an identity the apiserver authenticates by bearer token. It holds
// no permissions beyond what RBAC grants its name and groups.
type User struct {
	// Name is the user name, also used as its UID.
	Name string
	// Groups are the groups the user is in, besides system:authenticated.
	Groups []string
	// Token is the bearer token; a random one is chosen when empty.
	Token string
}

// KubeOptions changes how StartKubeWith starts the apiserver.
type KubeOptions struct {
	// ExtraUsers are added to the apiserver's static token file next to
	// the admin. Kube.UserToken returns their tokens.
	ExtraUsers []User
	// APIServerArgs are added to kube-apiserver's command line, each in
	// the form --flag=value. A flag given here replaces the harness's value
	// for it, e.g. "--disable-admission-plugins=ServiceAccount".
	APIServerArgs []string
	// EtcdArgs are added to etcd's command line in the same way, e.g.
	// "--quota-backend-bytes=8589934592" for a store larger than etcd's
	// default quota of 2 GiB (see EtcdQuotaArg).
	EtcdArgs []string
	// Controllers, when not empty, are the kube-controller-manager
	// controllers to run once the apiserver is ready, for example
	// "disruption"; see Kube.StartControllers.
	Controllers []string
}

// Kube is a running etcd and kube-apiserver.
type Kube struct {
	// Config authenticates as AdminUser with a bearer token and trusts the
	// apiserver's CA. Copy it (rest.CopyConfig) before changing it.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// KubeconfigPath is a kubeconfig file equivalent to Config, for code
	// that loads its configuration with clientcmd.
	KubeconfigPath string

	t         testing.TB
	etcd      *process
	apiserver *process
	webhook   *httptest.Server

	mu      sync.Mutex
	users   map[string]User // by token: ExtraUsers and users from AddUser
	stopped bool
}

// StartKube starts etcd and kube-apiserver for t with the default options and
// waits until the apiserver is ready. Both are stopped when t ends. See
// StartKubeWith.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	return StartKubeWith(t, KubeOptions{})
}

// StartKubeWith starts etcd and kube-apiserver for t and waits until the
// apiserver is ready and the default namespace exists. Both are stopped when
// t ends. It fails t if the binaries built by `make testenv` are missing.
//
// The apiserver serves HTTPS on a free loopback port with a certificate from
// a CA made for it, authenticates static and AddUser bearer tokens, and
// authorizes with Node,RBAC. The ServiceAccount and TaintNodesByCondition
// admission plugins are off, since without a controller-manager there are no
// service accounts to admit Pods with and nothing would ever lift the
// not-ready taint from new Nodes.
func StartKubeWith(t testing.TB, opts KubeOptions) *Kube {
	t.Helper()
	etcdBin, err := findBinary("etcd")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	apiserverBin, err := findBinary("kube-apiserver")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	begin := time.Now()
	dir := t.TempDir()
	k := &Kube{t: t, users: map[string]User{}}
	t.Cleanup(func() {
		k.Stop()
		logOnFailure(t, k.etcd, k.apiserver)
	})

	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	host := "https://127.0.0.1:" + strconv.Itoa(ports[2])

	certs, err := writePKI(filepath.Join(dir, "certs"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	adminToken := newToken()
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := k.writeTokenFile(tokenFile, adminToken, opts.ExtraUsers); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	webhookConfig := filepath.Join(dir, "authn-webhook.kubeconfig")
	if err := k.startWebhook(webhookConfig); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	k.Config = &rest.Config{
		Host:            host,
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: certs.caPEM},
		QPS:             200,
		Burst:           400,
	}
	if k.Client, err = kubernetes.NewForConfig(k.Config); err != nil {
		t.Fatalf("testenv: create admin client: %v", err)
	}
	k.KubeconfigPath = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(k.KubeconfigPath, host, certs.caPEM, AdminUser, adminToken); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	k.etcd = &process{
		name:    "etcd",
		path:    etcdBin,
		logPath: filepath.Join(dir, "etcd.log"),
		args: mergeArgs([]string{
			"--name=testenv",
			"--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + etcdURL,
			"--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=testenv=" + peerURL,
			"--unsafe-no-fsync",
			"--log-level=warn",
		}, opts.EtcdArgs),
	}
	if err := k.etcd.start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := waitFor(t.Context(), etcdTimeout, k.etcd, "etcd health", func(ctx context.Context) error {
		return etcdHealthy(ctx, etcdURL)
	}); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + certs.servingCert,
		"--tls-private-key-file=" + certs.servingKey,
		"--token-auth-file=" + tokenFile,
		"--authentication-token-webhook-config-file=" + webhookConfig,
		"--authentication-token-webhook-version=v1",
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + certs.saVerifyingKey,
		"--service-account-signing-key-file=" + certs.saSigningKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		// The kubernetes Service's Endpoints cannot hold a loopback
		// address, so the lease reconciler would fail every sync.
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		"--allow-privileged=true",
		"--profiling=false",
	}
	k.apiserver = &process{
		name:    "kube-apiserver",
		path:    apiserverBin,
		logPath: filepath.Join(dir, "kube-apiserver.log"),
		args:    mergeArgs(args, opts.APIServerArgs),
	}
	if err := k.startAPIServer(t.Context()); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := waitFor(t.Context(), apiserverTimeout, k.apiserver, "namespace default", func(ctx context.Context) error {
		_, err := k.Client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		return err
	}); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Logf("testenv: kube-apiserver ready at %s after %s", host, time.Since(begin).Round(time.Millisecond))
	if len(opts.Controllers) > 0 {
		k.StartControllers(t, opts.Controllers...)
	}
	return k
}

// Stop kills kube-apiserver and etcd and waits for them to exit. It is called
// when the test ends; calling it again does nothing.
func (k *Kube) Stop() {
	k.mu.Lock()
	k.stopped = true
	k.mu.Unlock()
	if k.apiserver != nil {
		k.apiserver.stop(0)
	}
	if k.etcd != nil {
		k.etcd.stop(0)
	}
	if k.webhook != nil {
		k.webhook.Close()
	}
}

// StopAPIServer shuts kube-apiserver down, killing it if it does not exit
// within a few seconds, and returns once it has exited. etcd keeps running,
// so StartAPIServer brings the same cluster back.
func (k *Kube) StopAPIServer() {
	k.t.Helper()
	begin := time.Now()
	k.apiserver.stop(apiserverGrace)
	k.t.Logf("testenv: kube-apiserver stopped after %s", time.Since(begin).Round(time.Millisecond))
}

// StartAPIServer starts kube-apiserver again on the same port with the same
// credentials after StopAPIServer, and waits until it is ready. It fails the
// test passed to StartKube, so call it from that test's goroutine.
func (k *Kube) StartAPIServer() {
	k.t.Helper()
	if err := k.restart(k.t.Context()); err != nil {
		k.t.Fatalf("testenv: %v", err)
	}
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port,
// waiting until it is ready. It fails t if the apiserver does not come back.
func (k *Kube) RestartAPIServer(t testing.TB) {
	t.Helper()
	k.t.Helper()
	k.StopAPIServer()
	if err := k.restart(t.Context()); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (k *Kube) restart(ctx context.Context) error {
	k.t.Helper()
	k.mu.Lock()
	stopped := k.stopped
	k.mu.Unlock()
	if stopped {
		return errors.New("start kube-apiserver: the environment was stopped")
	}
	begin := time.Now()
	if err := k.startAPIServer(ctx); err != nil {
		return err
	}
	k.t.Logf("testenv: kube-apiserver ready again after %s", time.Since(begin).Round(time.Millisecond))
	return nil
}

// startAPIServer starts the kube-apiserver process and waits for /readyz.
func (k *Kube) startAPIServer(ctx context.Context) error {
	if err := k.apiserver.start(); err != nil {
		return err
	}
	return waitFor(ctx, apiserverTimeout, k.apiserver, "kube-apiserver /readyz", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := k.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

// AddUser makes the apiserver accept a new random bearer token for a user
// with the given name and groups, and returns the token. It takes effect at
// once, without restarting anything. The user has no permissions until RBAC
// objects grant them.
func (k *Kube) AddUser(name string, groups ...string) (token string) {
	token = newToken()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.users[token] = User{Name: name, Groups: append([]string(nil), groups...), Token: token}
	return token
}

// UserToken returns the token of a user given in KubeOptions.ExtraUsers or
// added with AddUser, or "" if there is none by that name.
func (k *Kube) UserToken(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	for token, u := range k.users {
		if u.Name == name {
			return token
		}
	}
	return ""
}

// UserConfig returns a copy of Config that authenticates with token instead
// of as the admin.
func (k *Kube) UserConfig(token string) *rest.Config {
	cfg := rest.AnonymousClientConfig(k.Config)
	cfg.BearerToken = token
	return cfg
}

// UserClient returns a clientset that authenticates with token instead of as
// the admin.
func (k *Kube) UserClient(t testing.TB, token string) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(k.UserConfig(token))
	if err != nil {
		t.Fatalf("testenv: create user client: %v", err)
	}
	return c
}

// writeTokenFile writes the apiserver's static token file with the admin
// and extra users, and records the extra users.
func (k *Kube) writeTokenFile(path, adminToken string, extra []User) error {
	var b strings.Builder
	w := csv.NewWriter(&b)
	rows := [][]string{{adminToken, AdminUser, AdminUser, "system:masters"}}
	for _, u := range extra {
		if u.Name == "" {
			return errors.New("write token file: extra user without a name")
		}
		if u.Token == "" {
			u.Token = newToken()
		}
		u.Groups = append([]string(nil), u.Groups...)
		k.users[u.Token] = u
		rows = append(rows, []string{u.Token, u.Name, u.Name, strings.Join(u.Groups, ",")})
	}
	if err := w.WriteAll(rows); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	return nil
}

// startWebhook serves the token webhook that authenticates users added with
// AddUser, and writes the kubeconfig the apiserver reaches it with.
func (k *Kube) startWebhook(kubeconfigPath string) error {
	k.webhook = httptest.NewTLSServer(http.HandlerFunc(k.serveTokenReview))
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.webhook.Certificate().Raw})
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"healer-testenv-authn": {Server: k.webhook.URL, CertificateAuthorityData: caPEM}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"kube-apiserver": {}},
		Contexts:       map[string]*clientcmdapi.Context{"webhook": {Cluster: "healer-testenv-authn", AuthInfo: "kube-apiserver"}},
		CurrentContext: "webhook",
	}
	if err := clientcmd.WriteToFile(cfg, kubeconfigPath); err != nil {
		return fmt.Errorf("write authentication webhook kubeconfig: %w", err)
	}
	return nil
}

// serveTokenReview answers the apiserver's TokenReviews for AddUser tokens.
func (k *Kube) serveTokenReview(w http.ResponseWriter, r *http.Request) {
	var review authenticationv1.TokenReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, "decode TokenReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	u, ok := k.users[review.Spec.Token]
	k.mu.Unlock()
	resp := authenticationv1.TokenReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"},
	}
	if ok {
		resp.Status = authenticationv1.TokenReviewStatus{
			Authenticated: true,
			User:          authenticationv1.UserInfo{Username: u.Name, UID: u.Name, Groups: u.Groups},
		}
	} else {
		resp.Status.Error = "unknown token"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// writeKubeconfig writes a kubeconfig for host that authenticates as user
// with token.
func writeKubeconfig(path, host string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"healer-testenv": {Server: host, CertificateAuthorityData: caPEM}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{user: {Token: token}},
		Contexts:       map[string]*clientcmdapi.Context{"healer-testenv": {Cluster: "healer-testenv", AuthInfo: user}},
		CurrentContext: "healer-testenv",
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// mergeArgs returns base with the flags in extra added, dropping the flags of
// base that extra sets again.
func mergeArgs(base, extra []string) []string {
	name := func(arg string) string {
		n, _, _ := strings.Cut(arg, "=")
		return n
	}
	override := map[string]bool{}
	for _, arg := range extra {
		override[name(arg)] = true
	}
	var out []string
	for _, arg := range base {
		if !override[name(arg)] {
			out = append(out, arg)
		}
	}
	return append(out, extra...)
}

// etcdHealthy returns nil when etcd's /health endpoint reports healthy.
func etcdHealthy(ctx context.Context, etcdURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, etcdURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Health string `json:"health"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("decode etcd health: %w", err)
	}
	if resp.StatusCode != http.StatusOK || body.Health != "true" {
		return fmt.Errorf("etcd health: %s, health=%q", resp.Status, body.Health)
	}
	return nil
}

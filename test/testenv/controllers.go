package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// controllerManagerTimeout is how long StartControllers waits for
	// kube-controller-manager to report healthy.
	controllerManagerTimeout = 60 * time.Second
	// controllerManagerGrace is how long kube-controller-manager gets to
	// shut down before it is killed.
	controllerManagerGrace = 3 * time.Second
)

// StartControllers starts the real kube-controller-manager against k with
// only the named controllers (for example "disruption", which computes the
// status of PodDisruptionBudgets so that the Eviction API can honour them)
// and waits until it reports healthy. It is stopped when t ends.
//
// The controller manager authenticates as AdminUser, does not elect a
// leader, and runs no cloud provider. Controllers that would fight the
// harness are better left out: node-lifecycle-controller, for one, taints
// and evicts the Nodes that CreateNodes makes, since no kubelet renews their
// leases. StartControllers fails t if the binary built by `make testenv` is
// missing or no controller is named.
func (k *Kube) StartControllers(t testing.TB, controllers ...string) {
	t.Helper()
	if len(controllers) == 0 {
		t.Fatalf("testenv: StartControllers: no controller named")
	}
	bin, err := findBinary("kube-controller-manager")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	begin := time.Now()
	dir := t.TempDir()
	port := FreePort(t)
	p := &process{
		name:    "kube-controller-manager",
		path:    bin,
		logPath: filepath.Join(dir, "kube-controller-manager.log"),
		args: []string{
			"--kubeconfig=" + k.KubeconfigPath,
			"--authentication-kubeconfig=" + k.KubeconfigPath,
			"--authorization-kubeconfig=" + k.KubeconfigPath,
			// The apiserver has no client CA, so there is nothing to look up
			// (no extension-apiserver-authentication ConfigMap).
			"--authentication-skip-lookup=true",
			"--controllers=" + strings.Join(controllers, ","),
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(dir, "certs"),
			"--use-service-account-credentials=false",
			"--kube-api-qps=100",
			"--kube-api-burst=200",
			"--profiling=false",
			"--v=1",
		},
	}
	t.Cleanup(func() {
		p.stop(controllerManagerGrace)
		logOnFailure(t, p)
	})
	if err := p.start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	healthz := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	// The controller manager serves with a self-signed certificate it
	// makes at start; only its health is read, so it is not verified.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test-only health probe of a self-signed local server
	defer hc.CloseIdleConnections()
	if err := waitFor(t.Context(), controllerManagerTimeout, p, "kube-controller-manager /healthz", func(ctx context.Context) error {
		return httpOK(ctx, hc, healthz)
	}); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Logf("testenv: kube-controller-manager (%s) healthy after %s", strings.Join(controllers, ","), time.Since(begin).Round(time.Millisecond))
}

// httpOK returns nil when a GET of url answers 200.
func httpOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

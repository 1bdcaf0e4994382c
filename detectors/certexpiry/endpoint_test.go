package certexpiry

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// tlsServer is an HTTPS server on 127.0.0.1 presenting crt, which counts
// the requests it gets and records the SNI of each handshake.
type tlsServer struct {
	*httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	sni      []string
}

func startTLSServer(t *testing.T, crt issued, edit func(*tls.Config)) *tlsServer {
	t.Helper()
	s := &tlsServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.requests.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	cert := tls.Certificate{Certificate: [][]byte{crt.cert.Raw}, PrivateKey: crt.key, Leaf: crt.cert}
	s.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			s.mu.Lock()
			s.sni = append(s.sni, hello.ServerName)
			s.mu.Unlock()
			return nil, nil // the server's own configuration
		},
	}
	if edit != nil {
		edit(s.TLS)
	}
	// Silence the handshake errors of servers that want a client
	// certificate; they are expected.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *tlsServer) addr() string { return s.Listener.Addr().String() }

func (s *tlsServer) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sni)
}

func TestDetectorEndpoint(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	ca := newCA(t, "kubernetes", now.AddDate(5, 0, 0))
	crt := ca.issue(t, leaf{cn: "kube-apiserver", ips: []net.IP{net.ParseIP("127.0.0.1")}, dns: []string{"localhost"}, notAfter: now.Add(12 * time.Hour)})
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	servers := []struct {
		name string
		edit func(*tls.Config)
		// handshakeFails: the server ends the handshake, as etcd does
		// for a client without a certificate, after presenting its own.
		handshakeFails bool
	}{
		{"plain", nil, false},
		{"client certificate required, TLS 1.3", func(c *tls.Config) { c.ClientAuth = tls.RequireAndVerifyClientCert; c.ClientCAs = pool }, false},
		{"client certificate required, TLS 1.2", func(c *tls.Config) {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = pool
			c.MaxVersion = tls.VersionTLS12
		}, true},
	}
	for _, tt := range servers {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLSServer(t, crt, tt.edit)
			conn, err := tls.Dial("tcp", srv.addr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test reading the chain
			if conn != nil {
				_ = conn.Close()
			}
			if (err != nil) != tt.handshakeFails {
				t.Fatalf("handshake error %v, want failing %v", err, tt.handshakeFails)
			}
			h := start(t, Config{Node: "cp-1", Endpoints: []Endpoint{{Address: srv.addr()}},
				Components: []Component{{Kind: KindEndpoint, Match: srv.addr(), UsedBy: "kube-apiserver", Restart: []string{"kube-apiserver"}}}}, now)
			evs := h.pub.take()
			if len(evs) != 1 {
				t.Fatalf("published %v, want the endpoint's leaf\n%s", keys(evs), h.logs.String())
			}
			e := evs[0]
			checkEvent(t, e, TypeExpiring, "endpoint/"+srv.addr(), bus.StatusFiring, now)
			if e.Key != "cp-1:endpoint:"+srv.addr() {
				t.Errorf("key %q", e.Key)
			}
			d := data(t, e)
			if d.Kind != KindEndpoint || d.Endpoint != srv.addr() || d.Node != "cp-1" || d.ServerName != "" {
				t.Errorf("location %+v", d.Location)
			}
			if d.SubjectCN != "kube-apiserver" || d.Band != "1d" || d.DaysLeft != 0.5 || d.Serial != crt.cert.SerialNumber.Text(16) ||
				!slices.Equal(d.IPAddresses, []string{"127.0.0.1"}) || d.UsedBy != "kube-apiserver" {
				t.Errorf("data %+v", d)
			}
			if n := srv.requests.Load(); n != 0 {
				t.Errorf("the endpoint got %d HTTP requests, want none", n)
			}
			if got := srv.names(); len(got) != 2 || got[1] != "" {
				t.Errorf("SNI %q, want none for an IP address", got)
			}

			// The endpoint goes away: its certificate keeps its state.
			srv.Close()
			h.at(now.Add(time.Hour))
			if evs := h.pub.take(); len(evs) != 0 {
				t.Errorf("an endpoint that does not answer published %v", keys(evs))
			}
			recs := h.logs.records("certificate source unreadable")
			if len(recs) != 1 || recs[0]["read"] != "endpoint "+srv.addr() || !strings.Contains(recs[0]["err"].(string), srv.addr()) {
				t.Errorf("problems logged: %v", recs)
			}
		})
	}
}

func TestPresentedSendsServerName(t *testing.T) {
	ca := newCA(t, "ca", time.Now().AddDate(1, 0, 0))
	crt := ca.issue(t, leaf{cn: "api.example.com", dns: []string{"api.example.com"}, notAfter: time.Now().Add(100 * 24 * time.Hour)})
	srv := startTLSServer(t, crt, nil)
	_, port, _ := net.SplitHostPort(srv.addr())
	for _, e := range []Endpoint{{Address: srv.addr(), ServerName: "api.example.com"}, {Address: "localhost:" + port}} {
		c, err := Presented(t.Context(), e, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject.CommonName != "api.example.com" {
			t.Errorf("presented %q", c.Subject.CommonName)
		}
	}
	if got, want := srv.names(), []string{"api.example.com", "localhost"}; !slices.Equal(got, want) {
		t.Errorf("SNI %v, want %v", got, want)
	}
}

func TestPresentedErrors(t *testing.T) {
	// A listener that accepts and says nothing: the handshake times out.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	// A closed port: refused.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	_ = closed.Close()
	// A plain HTTP server: not TLS.
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)

	tests := []struct {
		name, addr, want string
	}{
		{"silent", silent.Addr().String(), "no TLS handshake within 200ms"},
		{"refused", refused, "connection refused"},
		{"not TLS", plain.Listener.Addr().String(), "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Presented(t.Context(), Endpoint{Address: tt.addr}, 200*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tt.addr) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Presented() error %v, want it to name %s and say %q", err, tt.addr, tt.want)
			}
		})
	}
}

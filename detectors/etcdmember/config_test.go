package etcdmember

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Endpoints: []string{"https://10.0.0.1:2379"}}
	c.ApplyDefaults()
	want := Config{
		ClusterName: "etcd", Endpoints: c.Endpoints, DialTimeout: 2 * time.Second, RequestTimeout: 3 * time.Second,
		Interval: 5 * time.Second, LostAfter: time.Minute, HealthKey: "health", PublishTimeout: 5 * time.Second,
	}
	if c.ClusterName != want.ClusterName || c.DialTimeout != want.DialTimeout || c.RequestTimeout != want.RequestTimeout ||
		c.Interval != want.Interval || c.LostAfter != want.LostAfter || c.HealthKey != want.HealthKey || c.PublishTimeout != want.PublishTimeout {
		t.Errorf("defaults = %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func(mod func(*Config)) Config {
		c := Config{Endpoints: []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379"}, TLS: &TLS{CAFile: "/ca.crt", CertFile: "/c.crt", KeyFile: "/c.key"}}
		c.ApplyDefaults()
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none for valid
	}{
		{"valid", ok(nil), nil},
		{"valid http without TLS", ok(func(c *Config) { c.Endpoints = []string{"http://127.0.0.1:2379"}; c.TLS = nil }), nil},
		{"valid https without TLS (system roots)", ok(func(c *Config) { c.TLS = nil }), nil},
		{"no endpoints", ok(func(c *Config) { c.Endpoints = nil }), []string{"endpoints: at least one client URL is required"}},
		{"bad endpoints", ok(func(c *Config) {
			c.Endpoints = []string{"10.0.0.1:2379", "https://10.0.0.1", "unix:///run/etcd.sock", "https://10.0.0.1:2379/v3", "https://10.0.0.2:2379", "https://10.0.0.2:2379"}
		}), []string{
			`endpoints[0] "10.0.0.1:2379": not a URL`,
			`endpoints[1] "https://10.0.0.1": want scheme://host:port`,
			`endpoints[2] "unix:///run/etcd.sock": scheme "unix"`,
			`endpoints[3] "https://10.0.0.1:2379/v3": want no path`,
			`endpoints[5] "https://10.0.0.2:2379": given twice`,
		}},
		{"mixed schemes", ok(func(c *Config) { c.TLS = nil; c.Endpoints = []string{"http://a:2379", "https://b:2379"} }), []string{"mix http and https"}},
		{"TLS with http", ok(func(c *Config) { c.Endpoints = []string{"http://a:2379"} }), []string{"tls is set but the endpoints are http"}},
		{"cert without key", ok(func(c *Config) { c.TLS.KeyFile = "" }), []string{"certFile and keyFile go together"}},
		{"bad cluster name", ok(func(c *Config) { c.ClusterName = "prod/east" }), []string{`clusterName "prod/east"`}},
		{"durations", ok(func(c *Config) {
			c.DialTimeout, c.RequestTimeout, c.Interval, c.LostAfter, c.PublishTimeout = -1, 0, -time.Second, 0, -1
		}), []string{"dialTimeout -1ns: must be positive", "requestTimeout 0s: must be positive", "interval -1s: must be positive",
			"lostAfter 0s: must be positive", "publishTimeout -1ns: must be positive"}},
		{"lost after one poll", ok(func(c *Config) { c.LostAfter = time.Second }), []string{"lostAfter 1s: must be at least interval 5s"}},
		{"no health key", ok(func(c *Config) { c.HealthKey = "" }), []string{"healthKey is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// A password in an endpoint URL is never repeated in an error.
func TestConfigSecretNotInError(t *testing.T) {
	for _, ep := range []string{"https://root:s3cr3t@10.0.0.1:2379", "https://root:s3cr3t@10.0.0.1:bad", "htt ps://root:s3cr3t@x"} {
		c := Config{Endpoints: []string{ep}}
		c.ApplyDefaults()
		err := c.Validate()
		if err == nil {
			t.Fatalf("%s: Validate() = nil", ep)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Validate() = %v: holds the password", err)
		}
	}
}

func TestNewReadsTLSFiles(t *testing.T) {
	p := newTestPKI(t)
	log := slog.New(slog.DiscardHandler)
	base := Config{Endpoints: []string{"https://127.0.0.1:2379"}}
	tests := []struct {
		name string
		tls  *TLS
		want string
	}{
		{"good", p.ClientTLS(), ""},
		{"CA only", &TLS{CAFile: p.CA}, ""},
		{"missing CA", &TLS{CAFile: filepath.Join(t.TempDir(), "nope.crt")}, "tls.caFile"},
		{"CA not PEM", &TLS{CAFile: writeFile(t, "junk")}, "no PEM certificate"},
		{"key does not match", &TLS{CAFile: p.CA, CertFile: p.ClientCert, KeyFile: p.ServerKey}, "tls client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.TLS = tt.tls
			_, err := New(cfg, newRecorder(), log)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New() = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New() = %v, want an error with %q", err, tt.want)
			}
		})
	}
	if _, err := New(base, nil, log); err == nil {
		t.Error("New without a publisher succeeded")
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

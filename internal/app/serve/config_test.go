package serve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadFile(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		check   func(*testing.T, *Config)
		wantErr string
	}{
		{
			name: "durations as people write them",
			yaml: "redisURL: redis://r:6379/0\nstreams:\n  replicas: 3\n  duplicateWindow: 15m\nengine:\n  actionTimeout: 90s\n  decisionTimeout: 250ms\n  budget: {minNodes: 2, percent: 5}\nalertmanager:\n  targets:\n    - {label: host, kind: node, stripPort: true}\n" +
				"nodeProblem:\n  publishTimeout: 3s\n  conditions:\n    - {type: Ready, statuses: [\"False\", \"Unknown\"], for: 2m, eventType: NodeNotReady}\n",
			check: func(t *testing.T, c *Config) {
				if c.Streams.DuplicateWindow != 15*time.Minute || c.Engine.ActionTimeout != 90*time.Second || c.Streams.Replicas != 3 {
					t.Errorf("durations: %+v %+v", c.Streams, c.Engine.ActionTimeout)
				}
				if c.Engine.DecisionTimeout != 250*time.Millisecond {
					t.Errorf("engine.decisionTimeout %s, want 250ms", c.Engine.DecisionTimeout)
				}
				if r := c.NodeProblem.Conditions; len(r) != 1 || r[0].For != 2*time.Minute || r[0].Statuses[1] != "Unknown" || c.NodeProblem.PublishTimeout != 3*time.Second {
					t.Errorf("nodeProblem: %+v", c.NodeProblem)
				}
				if c.Engine.Budget.MinNodes != 2 || c.Engine.Budget.Percent != 5 || c.Alertmanager.Targets[0].Label != "host" || !c.Alertmanager.Targets[0].StripPort {
					t.Errorf("nested: %+v %+v", c.Engine.Budget, c.Alertmanager.Targets)
				}
			},
		},
		{
			name: "agents' neighbours: etcd, vip, kafka",
			yaml: "etcd:\n  endpoints: [https://10.0.0.1:2379]\n  lostAfter: 90s\nvip:\n  vips: [{address: 10.10.0.100, candidates: [m1, m2]}]\n  maxWait: 20s\n" +
				"logPipeline:\n  kafka:\n    brokers: [k:9092]\n    groups: [{group: logstash, maxLag: 1000, for: 2m, node: ls-1}]\nagentAcceptTimeout: 3s\n",
			check: func(t *testing.T, c *Config) {
				if c.Etcd == nil || c.Etcd.LostAfter != 90*time.Second || c.VIP.MaxWait != 20*time.Second || c.AgentAcceptTimeout != 3*time.Second {
					t.Errorf("etcd %+v, vip %+v, accept %s", c.Etcd, c.VIP, c.AgentAcceptTimeout)
				}
				if g := c.LogPipeline.Kafka.Groups; len(g) != 1 || *g[0].For != 2*time.Minute || g[0].Node != "ls-1" {
					t.Errorf("kafka groups %+v", g)
				}
				c.ApplyDefaults()
				if err := c.Validate(); err != nil {
					t.Errorf("Validate: %v", err)
				}
			},
		},
		{
			name: "certificates and etcd replacement",
			yaml: "certExpiry:\n  secrets: {namespaces: [ingress]}\n  endpoints: [{address: \"10.0.0.1:6443\"}]\n" +
				"etcd:\n  endpoints: [https://10.0.0.1:2379]\netcdReplace:\n  nodes: {etcd-a: master-a}\n  catchUpTimeout: 5m\n",
			check: func(t *testing.T, c *Config) {
				c.ApplyDefaults()
				if err := c.Validate(); err != nil {
					t.Errorf("Validate: %v", err)
				}
				if c.CertExpiry.Secrets == nil || len(c.CertExpiry.Endpoints) != 1 || c.EtcdReplace.Provisioner != "agent" || c.EtcdReplace.CatchUpTimeout != 5*time.Minute {
					t.Errorf("certExpiry %+v, etcdReplace %+v", c.CertExpiry, c.EtcdReplace)
				}
			},
		},
		{
			name: "node-local certificates belong to the agent",
			yaml: "certExpiry:\n  node: m1\n  kubeadmDir: /etc/kubernetes\n",
			check: func(t *testing.T, c *Config) {
				c.ApplyDefaults()
				if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "healer agent") {
					t.Errorf("Validate = %v, want it to send files to the agent", err)
				}
			},
		},
		{
			name: "a local provisioner needs its members",
			yaml: "etcd:\n  endpoints: [http://127.0.0.1:2379]\netcdReplace:\n  provisioner: local\n",
			check: func(t *testing.T, c *Config) {
				c.ApplyDefaults()
				if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "local.command") {
					t.Errorf("Validate = %v, want local.command required", err)
				}
			},
		},
		{name: "unknown key", yaml: "redisAddress: redis://r:6379\n", wantErr: "unknown field"},
		{name: "bad duration", yaml: "engine:\n  actionTimeout: soon\n", wantErr: "engine.actionTimeout"},
		{name: "not yaml", yaml: "engine: [\n", wantErr: "parse config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "healer.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var c Config
			err := c.LoadFile(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, &c)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "defaults are valid", mutate: func(c *Config) {
			if c.Engine.DecisionTimeout != 100*time.Millisecond {
				t.Errorf("default engine.decisionTimeout %s, want 100ms", c.Engine.DecisionTimeout)
			}
		}},
		{name: "decision deadline below 1ms", mutate: func(c *Config) { c.Engine.DecisionTimeout = time.Microsecond }, wantErr: "decisionTimeout 1µs: must be at least 1ms and less than ackWait"},
		{name: "decision deadline as long as ackWait", mutate: func(c *Config) { c.Engine.DecisionTimeout = c.Engine.AckWait }, wantErr: "decisionTimeout 30s: must be at least 1ms"},
		{name: "bad listen", mutate: func(c *Config) { c.Listen = "8080" }, wantErr: "listen"},
		{name: "bad redis url", mutate: func(c *Config) { c.RedisURL = "localhost:6379" }, wantErr: "redis://"},
		{name: "policies not a dir", mutate: func(c *Config) { c.Policies = "/nonexistent/policies" }, wantErr: "policies"},
		{name: "budget percent", mutate: func(c *Config) { c.Engine.Budget.Percent = 120 }, wantErr: "percent"},
		{name: "unknown remediator disabled", mutate: func(c *Config) { c.DisabledRemediators = []string{"node.drian"} }, wantErr: `"node.drian" is not a remediator`},
		{name: "two kinds of NATS credentials", mutate: func(c *Config) { c.NATSURL = "nats://n:4222"; c.NATSCredsFile = "a"; c.NATSNKeyFile = "b" }, wantErr: "set one of natsCredsFile"},
		{name: "NATS user without password", mutate: func(c *Config) { c.NATSURL = "nats://n:4222"; c.NATSUser = "u" }, wantErr: "natsUser and natsPasswordFile go together"},
		{name: "NATS TLS for the embedded server", mutate: func(c *Config) { c.NATSCAFile = "ca.crt" }, wantErr: "set natsURL too"},
		{name: "embedded NATS off loopback", mutate: func(c *Config) { c.NATSListen = "0.0.0.0:4222" }, wantErr: "listens on loopback only"},
		{name: "embedded NATS on a host name", mutate: func(c *Config) { c.NATSListen = "nats.example.org:4222" }, wantErr: "listens on loopback only"},
		{name: "embedded NATS on IPv6 loopback", mutate: func(c *Config) { c.NATSListen = "[::1]:4222" }},
		{name: "Redis password without Redis", mutate: func(c *Config) { c.RedisPasswordFile = "pw" }, wantErr: "redisPasswordFile: set redisURL"},
		{name: "budget holds shorter than ackWait", mutate: func(c *Config) { c.Engine.Budget.HoldTTL = 10 * time.Second }, wantErr: "holdTTL 10s: must be at least ackWait"},
		{name: "every problem at once", mutate: func(c *Config) { c.Listen = "x"; c.RedisURL = "y" }, wantErr: "redis://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			c.ApplyDefaults()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://healer:s3cret@nats-0:4222":           "nats://healer:xxxxx@nats-0:4222",
		"nats://a:pw1@n1:4222, nats://b:pw2@n2:4222": "nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:4222",
		"nats://127.0.0.1:4222":                      "nats://127.0.0.1:4222",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

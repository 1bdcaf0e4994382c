package certexpiry

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Node: "cp-1", KubeadmDir: "/etc/kubernetes"}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{720 * time.Hour, 168 * time.Hour, 24 * time.Hour}; !slices.Equal(c.Thresholds, want) {
		t.Errorf("thresholds %v, want %v", c.Thresholds, want)
	}
	if c.Interval != time.Hour || c.Jitter != 0 || c.Weekend != WeekendFriday || c.TimeZone != "UTC" ||
		c.DialTimeout != 10*time.Second || c.ListTimeout != time.Minute || c.PublishTimeout != 5*time.Second {
		t.Errorf("defaults %+v", c)
	}
	kept := Config{Endpoints: []Endpoint{{Address: "127.0.0.1:6443"}}, Thresholds: []time.Duration{48 * time.Hour}, Interval: time.Minute, Weekend: WeekendKeep}
	kept.ApplyDefaults()
	if !slices.Equal(kept.Thresholds, []time.Duration{48 * time.Hour}) || kept.Interval != time.Minute || kept.Weekend != WeekendKeep {
		t.Errorf("ApplyDefaults replaced settings: %+v", kept)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		// want are substrings of the error, one per problem; none means valid.
		want []string
	}{
		{"agent on a kubeadm node", Config{Node: "cp-1", KubeadmDir: "/etc/kubernetes", Endpoints: []Endpoint{{Address: "127.0.0.1:6443"}, {Address: "127.0.0.1:2379"}}}, nil},
		{"server with secrets", Config{Secrets: &Secrets{Namespaces: []string{"ingress", "kube-system"}}}, nil},
		{"server with endpoints only", Config{Endpoints: []Endpoint{{Address: "api.example.com:443", ServerName: "api.example.com"}}}, nil},
		{"files and globs", Config{Node: "n", Files: []string{"/etc/ssl/private", "/opt/app/*.pem"}, Kubeconfigs: []string{"/etc/kubernetes/kubelet.conf"}}, nil},
		{"components", Config{Node: "n", Files: []string{"/x"}, Components: []Component{
			{Match: "ingress/*", Kind: KindSecret, UsedBy: "ingress-nginx", Restart: []string{"ingress-nginx"}},
			{Match: "*.pem", UsedBy: "haproxy"},
		}}, nil},
		{"nothing to watch", Config{}, []string{"nothing to watch"}},
		{"files need a node", Config{Files: []string{"/etc/kubernetes/pki"}}, []string{"node is required"}},
		{"kubeconfigs need a node", Config{Kubeconfigs: []string{"/etc/kubernetes/admin.conf"}}, []string{"node is required"}},
		{"relative paths", Config{Node: "n", KubeadmDir: "etc", Files: []string{"pki/ca.crt"}, Kubeconfigs: []string{"admin.conf"}},
			[]string{"kubeadmDir etc: must be an absolute path", `files[0] "pki/ca.crt": must be an absolute path`, `kubeconfigs[0] "admin.conf": must be an absolute path`}},
		{"a bad glob", Config{Node: "n", Files: []string{"/etc/[x"}}, []string{"files[0] /etc/[x: syntax error in pattern"}},
		{"endpoints", Config{Endpoints: []Endpoint{{Address: "127.0.0.1"}, {Address: ":6443"}, {Address: "a:1"}, {Address: "a:1"}}},
			[]string{"endpoints[0] (127.0.0.1): address", "endpoints[1] (:6443): address: want host:port", "endpoints[3] (a:1): a second endpoint"}},
		{"namespaces", Config{Secrets: &Secrets{Namespaces: []string{"", "a/b"}}}, []string{`secrets.namespaces[0] ""`, `secrets.namespaces[1] "a/b"`}},
		{"thresholds", Config{Endpoints: []Endpoint{{Address: "a:1"}}, Thresholds: []time.Duration{-time.Hour, 24 * time.Hour, 24 * time.Hour}},
			[]string{"thresholds[0] -1h0m0s: must be positive", "thresholds[2] 24h0m0s: given twice"}},
		{"empty thresholds", Config{Endpoints: []Endpoint{{Address: "a:1"}}, Thresholds: []time.Duration{}}, []string{"thresholds: at least one"}},
		{"weekend and zone", Config{Endpoints: []Endpoint{{Address: "a:1"}}, Weekend: "monday", TimeZone: "Mars/Olympus_Mons"},
			[]string{`weekend "monday"`, `timeZone "Mars/Olympus_Mons"`}},
		{"components", Config{Endpoints: []Endpoint{{Address: "a:1"}}, Components: []Component{
			{Kind: "pod", Match: "x", UsedBy: "a"}, {Match: "", UsedBy: "a"}, {Match: "[", UsedBy: "a"}, {Match: "x", UsedBy: "Kube API"}, {Match: "x", UsedBy: "a", Restart: []string{"no way"}},
		}}, []string{`components[0] (x): kind "pod"`, "components[1] (): match is required", "components[2] ([): match", `components[3] (x): usedBy "Kube API"`, `components[4] (x): restart "no way"`}},
		{"timings", Config{Endpoints: []Endpoint{{Address: "a:1"}}, Interval: -1, Jitter: -1, DialTimeout: -1, ListTimeout: -1, PublishTimeout: -1},
			[]string{"interval -1ns", "jitter -1ns", "dialTimeout -1ns", "listTimeout -1ns", "publishTimeout -1ns"}},
		{"a node name that would break keys", Config{Node: "cp 1/x", Files: []string{"/x"}}, []string{`node "cp 1/x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.ApplyDefaults()
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

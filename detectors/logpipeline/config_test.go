package logpipeline

import (
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	files := []FileRule{{Glob: "/var/log/app/*.log", MaxBytes: 1 << 20}}
	shipper := func(mod func(*Shipper)) []Shipper {
		s := Shipper{Name: "filebeat", Files: files}
		mod(&s)
		return []Shipper{s}
	}
	kafka := func(mod func(*Kafka)) *Kafka {
		k := &Kafka{Brokers: []string{"kafka-0:9092"}, Groups: []GroupRule{{Group: "logstash", MaxLag: 1000}}}
		mod(k)
		return k
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "agent: a shipper on a node", cfg: Config{Node: "worker-3", Shippers: shipper(func(*Shipper) {})}},
		{name: "server: kafka only", cfg: Config{Kafka: kafka(func(*Kafka) {})}},
		{name: "ipv6 broker", cfg: Config{Kafka: kafka(func(k *Kafka) { k.Brokers = []string{"[fd00::1]:9093"} })}},
		{name: "nothing to measure", cfg: Config{Node: "n"}, wantErr: []string{"nothing to measure"}},
		{name: "shippers without a node", cfg: Config{Shippers: shipper(func(*Shipper) {})}, wantErr: []string{"node is required"}},
		{name: "shipper names", cfg: Config{Node: "n", Shippers: []Shipper{
			{Name: "fb", Files: files}, {Name: "fb", Files: files}, {Name: "a b", Files: files}, {Files: files},
		}}, wantErr: []string{"a second shipper", "may hold only", "name is required"}},
		{name: "shipper without files", cfg: Config{Node: "n", Shippers: shipper(func(s *Shipper) { s.Files = nil })},
			wantErr: []string{"files: at least one is required"}},
		{name: "file rules", cfg: Config{Node: "n", Shippers: shipper(func(s *Shipper) {
			s.Files = []FileRule{
				{Glob: "var/log/*.log", MaxBytes: 1},
				{Glob: "/var/log/[.log", MaxBytes: 1},
				{Glob: "/var/log/*.log"},
				{Glob: "/var/log/*.log", MaxBytes: -1, MaxAge: -time.Second, For: durationPtr(-time.Second), IgnoreOlder: -1, Exclude: []string{""}},
				{MaxAge: time.Minute},
			}
		})}, wantErr: []string{
			"files[0] (var/log/*.log): glob must be an absolute path",
			"files[1] (/var/log/[.log): glob: syntax error",
			"files[2] (/var/log/*.log): at least one of maxBytes and maxAge",
			"maxBytes -1", "maxAge -1s", "for -1s", "ignoreOlder -1ns", `exclude "": not a pattern`,
			"files[4] (): glob is required",
		}},
		{name: "components", cfg: Config{Node: "n", Shippers: shipper(func(s *Shipper) { s.Component = "Filebeat Service" }),
			Kafka: kafka(func(k *Kafka) { k.Groups[0].Component = "-x" })},
			wantErr: []string{`component "Filebeat Service": want a component name`, `groups[0] (logstash): component "-x"`}},
		{name: "negative unreadableFor", cfg: Config{Node: "n", Shippers: shipper(func(s *Shipper) { s.UnreadableFor = durationPtr(-time.Minute) })},
			wantErr: []string{"unreadableFor -1m0s"}},
		{name: "kafka brokers", cfg: Config{Kafka: kafka(func(k *Kafka) { k.Brokers = []string{"kafka-0", ":9092"} })},
			wantErr: []string{`brokers[0] "kafka-0": want host:port`, `brokers[1] ":9092"`}},
		{name: "kafka without brokers and groups", cfg: Config{Kafka: &Kafka{}},
			wantErr: []string{"kafka.brokers: at least one", "kafka.groups: at least one"}},
		{name: "kafka groups", cfg: Config{Kafka: kafka(func(k *Kafka) {
			k.Groups = []GroupRule{{Group: "logstash", MaxLag: 10}, {Group: "logstash", MaxLag: 10}, {MaxLag: 0, Topics: []string{""}},
				{Group: "g", MaxLag: 1, For: durationPtr(-time.Second)}}
		})}, wantErr: []string{"a second rule for this group", "group is required", "maxLag 0: must be positive",
			"topics: empty topic name", "groups[3] (g): for -1s"}},
		{name: "kafka tls and sasl", cfg: Config{Kafka: kafka(func(k *Kafka) {
			k.TLS = &TLS{CertFile: "/etc/healer/kafka.crt"}
			k.SASL = &SASL{Mechanism: "GSSAPI"}
		})}, wantErr: []string{"certFile and keyFile go together", `mechanism "GSSAPI"`, "sasl.username is required",
			"sasl.passwordFile is required"}},
		{name: "negative durations", cfg: Config{Node: "n", Shippers: shipper(func(*Shipper) {}), Interval: -1, PublishTimeout: -1},
			wantErr: []string{"interval -1ns", "publishTimeout -1ns"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.ApplyDefaults()
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{
		Node:     "worker-3",
		Shippers: []Shipper{{Name: "filebeat", Files: []FileRule{{Glob: "/var/log/*.log", MaxBytes: 1}, {Glob: "/x/*", MaxAge: time.Minute, For: durationPtr(0)}}}},
		Kafka:    &Kafka{Brokers: []string{"k:9092"}, Groups: []GroupRule{{Group: "logstash", MaxLag: 1}}},
	}
	c.ApplyDefaults()
	s, g := c.Shippers[0], c.Kafka.Groups[0]
	if c.Interval != 30*time.Second || c.PublishTimeout != 5*time.Second {
		t.Errorf("interval %s, publishTimeout %s", c.Interval, c.PublishTimeout)
	}
	if s.Component != "filebeat" || s.Registry != "/var/lib/filebeat/registry/filebeat" || *s.UnreadableFor != 5*time.Minute {
		t.Errorf("shipper defaults %+v", s)
	}
	if *s.Files[0].For != 5*time.Minute {
		t.Errorf("file rule for %s, want 5m", *s.Files[0].For)
	}
	if *s.Files[1].For != 0 {
		t.Errorf("an explicit for 0 became %s", *s.Files[1].For)
	}
	if c.Kafka.ClientID != "healer" || c.Kafka.RequestTimeout != 10*time.Second || *g.For != 5*time.Minute || g.Component != "logstash" {
		t.Errorf("kafka defaults %+v, group %+v", c.Kafka, g)
	}
}

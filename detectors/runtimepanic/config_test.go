package runtimepanic

import (
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "defaults with a node", cfg: Config{Node: "worker-1"}},
		{name: "no node", cfg: Config{}, wantErr: []string{"node is required"}},
		{name: "unit and file", cfg: Config{Node: "n", Sources: []Source{{Name: "k", Unit: "k.service", File: "/var/log/k.log"}}},
			wantErr: []string{"exactly one of unit and file"}},
		{name: "neither unit nor file", cfg: Config{Node: "n", Sources: []Source{{Name: "k"}}},
			wantErr: []string{"exactly one of unit and file"}},
		{name: "duplicate and bad names", cfg: Config{Node: "n", Sources: []Source{
			{Name: "k", File: "/a"}, {Name: "k", File: "/b"}, {Name: "a b", File: "/c"}, {File: "/d"},
		}}, wantErr: []string{"a second source", "may hold only", "name is required"}},
		{name: "empty sources", cfg: Config{Node: "n", Sources: []Source{}}, wantErr: []string{"at least one source or health check is required"}},
		{name: "fromStart on a unit", cfg: Config{Node: "n", Sources: []Source{{Name: "k", Unit: "k.service", FromStart: true}}},
			wantErr: []string{"fromStart applies to files only"}},
		{name: "negative values", cfg: Config{Node: "n", CrashLoop: CrashLoop{Restarts: -1, Window: -time.Second}, StackIdle: -1, MaxStack: -1},
			wantErr: []string{"crashLoop.restarts -1", "crashLoop.window -1s", "stackIdle", "maxStack"}},
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
					t.Errorf("Validate() = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.ApplyDefaults()
	var units []string
	for _, s := range c.Sources {
		units = append(units, s.Name+"="+s.Unit)
	}
	if got := strings.Join(units, ","); got != "kubelet=kubelet.service,containerd=containerd.service,docker=docker.service" {
		t.Errorf("default sources %s", got)
	}
	if c.CrashLoop != (CrashLoop{Restarts: 3, Window: 10 * time.Minute}) || c.JournalctlPath != "journalctl" ||
		c.StackIdle != 500*time.Millisecond || c.MaxStack != 20 {
		t.Errorf("defaults %+v", c)
	}
}

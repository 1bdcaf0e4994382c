package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestAgentCommand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantOut string
		wantErr string
	}{
		{"no node", []string{"agent", "--data-dir", t.TempDir()}, 2, "", "--node is required"},
		{"bad node name", []string{"agent", "--node", "Worker_1", "--data-dir", t.TempDir()}, 1, "", "DNS-1123"},
		{"bad nats url", []string{"agent", "--node", "w1", "--nats-url", "http://x", "--data-dir", t.TempDir()}, 1, "", "want nats:// or tls://"},
		{"unknown config key", []string{"agent", "--node", "w1", "--config", writeFile(t, "restart:\n  flapp: {}\n")}, 2, "", "unknown field"},
		{"permissions", []string{"agent", "permissions", "--node", "worker-1.example.com"}, 0,
			`subscribe: { allow: ["healer.agent.worker-1_example_com.act", "_INBOX_healer.worker-1_example_com.>"] }`, ""},
		{"permissions with the VIP bucket", []string{"agent", "permissions", "--node", "m1", "--kv", "healer_vip_leases"}, 0, `"$KV.healer_vip_leases.>"`, ""},
		{"permissions of a bad node", []string{"agent", "permissions", "--node", "a.>"}, 2, "", "DNS-1123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(t.Context(), tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String(), tc.wantOut) || !strings.Contains(errOut.String(), tc.wantErr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errOut.String())
			}
		})
	}
}

package agentparam_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/action/agentparam"
)

// hostile are values no check may let through.
var hostile = []string{
	"", "../../etc/passwd", "..", "a/../b", "/etc/passwd", "a\x00b", "a\nb", "a\rb", "foo.service; rm -rf /",
	"$(reboot)", "a b", strings.Repeat("a", 4097),
}

func TestChecksRefuseHostileValues(t *testing.T) {
	checks := map[string]func(param, v string) error{
		"ID": agentparam.ID, "Name": agentparam.Name, "HexID": agentparam.HexID, "Unit": agentparam.Unit,
		"Path": agentparam.Path, "URL": func(p, v string) error { _, err := agentparam.URL(p, v); return err },
	}
	for name, check := range checks {
		for _, v := range hostile {
			if name == "Path" && v == "/etc/passwd" {
				continue // a clean absolute path, which callers then match against their configuration
			}
			t.Run(name+"/"+agentparam.Quote(v), func(t *testing.T) {
				err := check("p", v)
				if err == nil {
					t.Fatalf("%s accepted %q", name, v)
				}
				var pe *agentparam.Error
				if !errors.As(err, &pe) || pe.Param != "p" || pe.Value != v {
					t.Fatalf("error %v does not name the parameter and the value", err)
				}
				if !errors.Is(err, action.ErrInvalidParams) {
					t.Fatalf("error %v is not ErrInvalidParams (permanent)", err)
				}
				if !strings.HasPrefix(err.Error(), "p ") || strings.ContainsAny(err.Error(), "\x00\n\r") {
					t.Fatalf("error %q: want the parameter first and no raw control characters", err)
				}
			})
		}
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(param, v string) error
		v     string
		ok    bool
	}{
		{"action id", agentparam.ID, "act-0123abcd", true},
		{"id with dots", agentparam.ID, "act-1.provision", true},
		{"id of 128", agentparam.ID, strings.Repeat("a", 128), true},
		{"id of 129", agentparam.ID, strings.Repeat("a", 129), false},
		{"id starting with a dot", agentparam.ID, ".hidden", false},
		{"id starting with a dash", agentparam.ID, "-rf", false},
		{"id with a slash", agentparam.ID, "act-1/check/2", false},
		{"id with ..", agentparam.ID, "a..b", false},
		{"name", agentparam.Name, "kube-apiserver", true},
		{"name upper case", agentparam.Name, "Kubelet", false},
		{"name of 64", agentparam.Name, strings.Repeat("a", 64), false},
		{"hex", agentparam.HexID, "8e9e05c52164694d", true},
		{"hex too long", agentparam.HexID, "8e9e05c52164694d0", false},
		{"hex upper case", agentparam.HexID, "ABC", false},
		{"unit", agentparam.Unit, "kubelet.service", true},
		{"template unit", agentparam.Unit, "getty@tty1.service", true},
		{"escaped unit", agentparam.Unit, `dev-disk-by\x2dlabel.service`, true},
		{"unit with a colon", agentparam.Unit, "a:b.socket", true},
		{"unit without a type", agentparam.Unit, "kubelet", false},
		{"unit of an unknown type", agentparam.Unit, "kubelet.sh", false},
		{"mount unit", agentparam.Unit, "var-lib.mount", false},
		{"unit starting with a dash", agentparam.Unit, "-kubelet.service", false},
		{"unit starting with a dot", agentparam.Unit, "..service", false},
		{"unit with two @", agentparam.Unit, "a@b@c.service", false},
		{"template without a name", agentparam.Unit, "@x.service", false},
		{"unit with a bare backslash", agentparam.Unit, `a\b.service`, false},
		{"unit with a slash", agentparam.Unit, "../x.service", false},
		{"unit of 256", agentparam.Unit, strings.Repeat("a", 248) + ".service", false},
		{"path", agentparam.Path, "/etc/kubernetes/pki/apiserver.crt", true},
		{"relative path", agentparam.Path, "etc/passwd", false},
		{"path with ..", agentparam.Path, "/etc/kubernetes/../passwd", false},
		{"path with .", agentparam.Path, "/etc/./passwd", false},
		{"path with //", agentparam.Path, "/etc//passwd", false},
		{"path with a trailing slash", agentparam.Path, "/etc/", false},
		{"path with a NUL", agentparam.Path, "/etc/passwd\x00.crt", false},
		{"path with a newline", agentparam.Path, "/etc/pass\nwd", false},
		{"path with invalid UTF-8", agentparam.Path, "/etc/\xff", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.check("p", tc.v); (err == nil) != tc.ok {
				t.Fatalf("check(%q) = %v, want ok %v", tc.v, err, tc.ok)
			}
		})
	}
}

func TestURL(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"https://10.0.0.11:2380", true},
		{"http://[::1]:2379/", true},
		{"http://etcd-0.example:2379", true},
		{"https://10.0.0.11", false},
		{"https://10.0.0.11:0", false},
		{"https://10.0.0.11:65536", false},
		{"file:///etc/passwd", false},
		{"unix:///run/etcd.sock", false},
		{"https://user:pw@10.0.0.11:2380", false},
		{"https://10.0.0.11:2380/path", false},
		{"https://10.0.0.11:2380?q=1", false},
		{"https://10.0.0.11:2380#f", false},
		{"https://:2380", false},
		{"https://10.0.0.11:2380\n", false},
	} {
		t.Run(tc.v, func(t *testing.T) {
			if _, err := agentparam.URL("u", tc.v); (err == nil) != tc.ok {
				t.Fatalf("URL(%q) = %v, want ok %v", tc.v, err, tc.ok)
			}
		})
	}
}

func TestQuoteCutsLongValues(t *testing.T) {
	got := agentparam.Quote(strings.Repeat("é", 100))
	if !strings.HasSuffix(got, "… (200 bytes)") || len(got) > 100 {
		t.Fatalf("Quote = %q", got)
	}
	if got := agentparam.Quote("a\x00b"); got != `"a\x00b"` {
		t.Fatalf("Quote = %s", got)
	}
}

func TestStringParam(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   string
		ok     bool
	}{
		{"absent", map[string]any{}, "", true},
		{"valid", map[string]any{"cert": "apiserver"}, "apiserver", true},
		{"hostile", map[string]any{"cert": "../ca"}, "", false},
		{"not a string", map[string]any{"cert": []any{"apiserver"}}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := agentparam.StringParam(tc.params, "cert", agentparam.Name)
			if got != tc.want || (err == nil) != tc.ok || err != nil && !errors.Is(err, action.ErrInvalidParams) {
				t.Fatalf("StringParam = %q, %v; want %q, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestRemediatorsList(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"remediators", "list"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"node.cordon", "node.drain", "core/pods/eviction:create", "runbooks/node.drain.md"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(t.Context(), []string{"remediators", "list", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var infos []struct {
		Name       string
		Disruptive bool
	}
	if err := json.Unmarshal(out.Bytes(), &infos); err != nil || len(infos) < 2 || !infos[0].Disruptive {
		t.Fatalf("json: %v %+v", err, infos)
	}
	if code := run(t.Context(), []string{"remediators", "list", "-o", "yaml"}, &out, &errOut); code != 2 {
		t.Fatalf("bad format: exit %d, want 2", code)
	}
}

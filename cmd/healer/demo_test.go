package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/internal/etcdlocal"
)

func TestMain(m *testing.M) {
	// The demo starts its etcd members from this binary.
	etcdlocal.RunIfAsked()
	os.Exit(m.Run())
}

// healer demo tells the whole story, ends with a verified chain and exits
// 0, and leaves nothing behind: no directory, no member process.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	start := time.Now()
	code := run(t.Context(), []string{"demo", "--timeout", "60s"}, &out, &errb)
	took := time.Since(start)
	t.Logf("demo took %s:\n%s", took, out.String())
	if code != 0 {
		t.Fatalf("healer demo exited %d: %s", code, errb.String())
	}
	text := out.String()
	for _, want := range []string{
		"killing etcd-",
		"EtcdMemberLost firing",
		"etcd.replace-member: etcd member",
		"quorum checked: quorum holds without",
		"member removed:",
		"learner added:",
		"member started:",
		"promoted:",
		"verified",
		"The etcd members now:",
		"audit chain intact:",
		"stopped everything and removed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`writer: \d+ writes, (\d+) failed`).FindStringSubmatch(text); m == nil {
		t.Error("demo output lacks the writer's count")
	}
	if strings.Contains(text, "learner\n") {
		t.Error("a learner is left in the member list")
	}
	dir := regexp.MustCompile(`removed (/\S+)`).FindStringSubmatch(text)
	if dir == nil {
		t.Fatal("demo output does not name its directory")
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Errorf("demo directory %s still exists (%v)", dir[1], err)
	}
	if took > 60*time.Second {
		t.Errorf("demo took %s, want under 60s", took)
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		env, err := os.ReadFile("/proc/" + p.Name() + "/environ")
		if err == nil && bytes.Contains(env, []byte(etcdlocal.SpecEnv+"=")) && bytes.Contains(env, []byte(dir[1])) {
			t.Errorf("member process %s still runs", p.Name())
		}
	}
}

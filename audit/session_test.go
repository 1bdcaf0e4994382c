package audit

import (
	"strings"
	"testing"
	"time"
)

func TestSessionsExpire(t *testing.T) {
	now := time.Now()
	s := newSessions(func() time.Time { return now })
	id, err := s.start()
	if err != nil || !s.valid(id) {
		t.Fatalf("new session %q: %v", id, err)
	}
	now = now.Add(sessionTTL)
	if s.valid(id) {
		t.Error("a session is still valid after its TTL")
	}
	if s.valid(strings.Repeat("0", 64)) || s.valid("") {
		t.Error("an unknown id is valid")
	}
}

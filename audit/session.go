package audit

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"sync"
	"time"
)

// sessions are the web page's sign-ins, kept in this process: a random id
// in the cookie, its expiry here. A session started on one replica is not
// known to another (the page asks to sign in again there); a restart ends
// every session.
type sessions struct {
	mu   sync.Mutex
	now  func() time.Time
	byID map[string]time.Time // id -> expiry
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, byID: map[string]time.Time{}}
}

// start makes a new session and returns its id (256 random bits).
func (s *sessions) start() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.byID) >= maxSessions {
		s.prune(now)
	}
	s.byID[id] = now.Add(sessionTTL)
	return id, nil
}

// prune drops expired sessions and, if that is not enough, the one that
// expires first. s.mu is held.
func (s *sessions) prune(now time.Time) {
	var oldest string
	for id, exp := range s.byID {
		if !now.Before(exp) {
			delete(s.byID, id)
			continue
		}
		if oldest == "" || exp.Before(s.byID[oldest]) {
			oldest = id
		}
	}
	if len(s.byID) >= maxSessions {
		delete(s.byID, oldest)
	}
}

// valid reports whether id is a session that has not expired. Lookups
// are by map key: the ids are random, so the time a lookup takes says
// nothing about an id an attacker does not already have.
func (s *sessions) valid(id string) bool {
	if len(id) != 64 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.byID[id]
	if ok && !s.now().Before(exp) {
		delete(s.byID, id)
		return false
	}
	return ok
}

// end ends session id (sign out).
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// localPath returns next when it is a path on this site, else "/": no
// scheme or host, not protocol-relative (//host), and no backslash, which
// browsers read as a slash (/\host is //host to them), nor any control
// character.
func localPath(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\") {
		return "/"
	}
	for _, c := range next {
		if c < 0x20 || c == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	return next
}

package bus

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/internal/httpauth"
)

// ServeUser is the NATS user serve connects to its embedded server as.
const ServeUser = "healer-serve"

// AgentKeyFile is the name of the agent key's file in serve's data dir.
const AgentKeyFile = "nats-agent.key"

// EmbeddedAuth decides who may connect to the embedded server, which
// takes no strangers: serve itself, as ServeUser with a password made at
// each start and never written down, and the agent of each node, as a
// user named after its node with a password derived from the agent key
// (AgentPassword), getting only its node's permissions (AgentPermissions).
// Everyone else is refused, whatever they send.
type EmbeddedAuth struct {
	servePassword string
	agentKey      []byte
	agentOpts     AgentPermissionsOptions
	log           *slog.Logger
}

var _ server.Authentication = (*EmbeddedAuth)(nil)

// NewEmbeddedAuth returns the authentication of an embedded server whose
// agents' passwords derive from agentKey (at least 32 bytes; see
// LoadAgentKey). opts widen every agent's permissions, for roles the dev
// server cannot tell apart (a master's VIP leases). Refusals are logged
// on log, without what the client sent as its password.
func NewEmbeddedAuth(agentKey []byte, opts AgentPermissionsOptions, log *slog.Logger) (*EmbeddedAuth, error) {
	if len(agentKey) < 32 {
		return nil, errors.New("embedded nats: the agent key must have at least 32 bytes")
	}
	pw, err := httpauth.Generate()
	if err != nil {
		return nil, fmt.Errorf("embedded nats: serve's password: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EmbeddedAuth{servePassword: pw, agentKey: agentKey, agentOpts: opts, log: log}, nil
}

// ServeOption is the connection option serve logs in with.
func (a *EmbeddedAuth) ServeOption() nats.Option { return nats.UserInfo(ServeUser, a.servePassword) }

// AgentPassword is the password of node's agent.
func (a *EmbeddedAuth) AgentPassword(node string) (string, error) {
	if _, err := NodeToken(node); err != nil {
		return "", err
	}
	return AgentPasswordFromKey(a.agentKey, node), nil
}

// AgentPasswordFromKey derives the password of node's agent from the
// embedded server's agent key.
func AgentPasswordFromKey(key []byte, node string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("healer agent password\x00" + node))
	return hex.EncodeToString(m.Sum(nil))
}

// Check authenticates a client: serve, or a node's agent with its own
// password. An agent is registered with its node's permissions only.
func (a *EmbeddedAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || c.Kind() != server.CLIENT {
		return false
	}
	user, pass := o.Username, o.Password
	switch {
	case user == ServeUser:
		if subtle.ConstantTimeCompare([]byte(pass), []byte(a.servePassword)) == 1 {
			c.RegisterUser(&server.User{Username: ServeUser})
			return true
		}
	case user != "" && pass != "":
		want, err := a.AgentPassword(user)
		if err != nil || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			break
		}
		perms, err := AgentPermissions(user, a.agentOpts)
		if err != nil {
			break
		}
		c.RegisterUser(&server.User{Username: user, Permissions: perms})
		return true
	}
	if _, err := NodeToken(user); err != nil && user != ServeUser {
		user = "(not a node name)"
	}
	a.log.Warn("embedded nats: connection refused: not serve and not a node's agent with its own password",
		"user", user, "remote", remoteOf(c))
	return false
}

func remoteOf(c server.ClientAuthentication) string {
	if addr := c.RemoteAddress(); addr != nil {
		return addr.String()
	}
	return "in-process"
}

// LoadAgentKey reads the embedded server's agent key from path, or makes
// one (256 random bits, mode 0600) when there is none. A key that others
// may read is refused: it is every agent's password.
func LoadAgentKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, serr := os.Stat(path)
		if serr != nil {
			return nil, fmt.Errorf("agent key %s: %w", path, serr)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("agent key %s has mode %s: others may read it; chmod 600 it", path, fi.Mode().Perm())
		}
		key, derr := hex.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(key) < 32 {
			return nil, fmt.Errorf("agent key %s: want 64 hex digits", path)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	h, err := httpauth.Generate()
	if err != nil {
		return nil, fmt.Errorf("agent key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(h+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	key, _ := hex.DecodeString(h)
	return key, nil
}

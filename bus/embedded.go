package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the in-process NATS JetStream server that
// `healer serve` runs when no --nats-url is given, and that tests start.
type EmbeddedConfig struct {
	// StoreDir is where JetStream keeps its file store.
	StoreDir string
	// Host and Port the server listens on for clients (agents, the CLI).
	// Port -1 picks a free port.
	Host string
	Port int
	// ServerName names the server in a cluster and in logs.
	ServerName string
	// Users, when set, turns authentication on: only these users may
	// connect, each with its permissions (AgentPermissions for agents).
	Users []*server.User
	// Auth, when set, decides who may connect instead of Users (serve's
	// embedded server uses EmbeddedAuth).
	Auth server.Authentication
	// TLS, when set, makes clients connect over TLS.
	TLS *tls.Config
}

// ApplyDefaults fills zero fields with defaults.
func (c *EmbeddedConfig) ApplyDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = -1
	}
	if c.ServerName == "" {
		c.ServerName = "healer-embedded"
	}
}

// Validate reports a configuration the server could not start with.
func (c *EmbeddedConfig) Validate() error {
	if c.StoreDir == "" {
		return errors.New("embedded nats: store dir is required")
	}
	if c.Port < -1 || c.Port > 65535 {
		return fmt.Errorf("embedded nats: port %d out of range", c.Port)
	}
	return nil
}

// StartEmbedded starts a NATS server with JetStream and file storage and
// waits until it accepts connections. The caller shuts it down with
// Shutdown and WaitForShutdown.
func StartEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*server.Server, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: create store dir: %w", err)
	}
	dir, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: store dir: %w", err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		Users:      cfg.Users,

		CustomClientAuthentication: cfg.Auth,
		TLSConfig:                  cfg.TLS,
		TLS:                        cfg.TLS != nil,
		TLSVerify:                  cfg.TLS != nil && cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready for connections after 30s")
	}
	if log != nil {
		log.Debug("embedded nats ready", "url", ns.ClientURL(), "store_dir", dir)
	}
	return ns, nil
}

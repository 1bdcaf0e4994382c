package bus

import (
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/internal/httpauth"
)

// ClientAuth is how a NATS client (serve, an agent) proves who it is and
// checks the server: a credentials file (JWT and nkey seed), an nkey seed
// file, or a user with a password file; the CA to verify the server's
// certificate with, and a client certificate for servers that want one.
// Secrets are only ever named by file. The callers' configurations check
// that at most one way of logging in is set, with the keys their users
// write.
type ClientAuth struct {
	CredsFile, NKeyFile string
	User, PasswordFile  string
	CAFile              string
	CertFile, KeyFile   string
}

// Options returns the connection options of a. Every file is read or
// checked here, so a missing one is named at start, not at the first
// reconnect.
func (a ClientAuth) Options() ([]nats.Option, error) {
	for _, f := range []struct{ what, path string }{
		{"credentials file", a.CredsFile}, {"nkey seed file", a.NKeyFile}, {"CA file", a.CAFile},
		{"client certificate", a.CertFile}, {"client key", a.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("nats %s: %w", f.what, err)
		}
	}
	var opts []nats.Option
	switch {
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed file %s: %w", a.NKeyFile, err)
		}
		opts = append(opts, o)
	case a.User != "":
		pw, err := httpauth.Secret("", a.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("nats password of %s: %w", a.User, err)
		}
		opts = append(opts, nats.UserInfo(a.User, pw))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}

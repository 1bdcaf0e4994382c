// Package httpauth guards healer's HTTP endpoints with bearer tokens and
// loads those tokens from files or the environment, generating them when
// none is given. Tokens never appear in logs or errors.
package httpauth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// Bearer wraps next so that it only runs for requests carrying
// "Authorization: Bearer <token>". Others get 401 with a WWW-Authenticate
// header. An empty token rejects every request (fail closed).
func Bearer(token string, next http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Valid(want, r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="healer"`)
			http.Error(w, "missing or invalid bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Valid reports whether r carries the bearer token want, comparing in
// constant time.
func Valid(want []byte, r *http.Request) bool {
	if len(want) == 0 {
		return false
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) == 1
}

// BearerToken returns the bearer token r carries, or "".
func BearerToken(r *http.Request) string {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(got)
}

// MinTokenLen is the shortest token healer accepts from configuration:
// 32 bytes, as long as a generated token's randomness.
const MinTokenLen = 32

// CheckLength refuses a configured token too short to withstand
// guessing; what names it (never its value).
func CheckLength(what, tok string) error {
	if len(tok) < MinTokenLen {
		return fmt.Errorf("%s is %d bytes long: want at least %d (generate one with: openssl rand -hex 32)", what, len(tok), MinTokenLen)
	}
	return nil
}

// Source says where a token came from, for the start-up log line.
type Source struct {
	// From is "env", "file" or "generated".
	From string
	// Path is the file the token was read from or written to.
	Path string
}

func (s Source) String() string {
	if s.Path == "" {
		return s.From
	}
	return s.From + " " + s.Path
}

// Load returns a token: from file if given (a flag beats the environment),
// else from the environment variable env if set, else from genPath if it
// exists, else a newly generated one written to genPath with mode 0600.
func Load(env, file, genPath string) (string, Source, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", Source{}, fmt.Errorf("read token file %s: %w", file, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", Source{}, fmt.Errorf("token file %s is empty", file)
		}
		if err := CheckLength("the token in "+file, tok); err != nil {
			return "", Source{}, err
		}
		return tok, Source{From: "file", Path: file}, nil
	}
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		if err := CheckLength("the token in $"+env, v); err != nil {
			return "", Source{}, err
		}
		return v, Source{From: "env " + env}, nil
	}
	if b, err := os.ReadFile(genPath); err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			if err := CheckLength("the token in "+genPath, tok); err != nil {
				return "", Source{}, err
			}
			return tok, Source{From: "file", Path: genPath}, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", Source{}, fmt.Errorf("read token file %s: %w", genPath, err)
	}
	tok, err := Generate()
	if err != nil {
		return "", Source{}, err
	}
	if err := os.MkdirAll(filepath.Dir(genPath), 0o700); err != nil {
		return "", Source{}, fmt.Errorf("create directory for token %s: %w", genPath, err)
	}
	if err := os.WriteFile(genPath, []byte(tok+"\n"), 0o600); err != nil {
		return "", Source{}, fmt.Errorf("write token file %s: %w", genPath, err)
	}
	return tok, Source{From: "generated", Path: genPath}, nil
}

// Generate returns a new random token (256 bits, hex).
func Generate() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Secret reads a secret that is never generated: from file when one is
// named, else from the environment variable env; "" when neither is set.
func Secret(env, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read secret file %s: %w", file, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", file)
		}
		return v, nil
	}
	return strings.TrimSpace(os.Getenv(env)), nil
}

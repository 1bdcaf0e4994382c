package audit

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// ErrKeyFile is returned for a signing key file that cannot be used: it is
// unreadable, malformed, or readable by others than its owner.
var ErrKeyFile = errors.New("audit signing key file unusable")

// SigningKey is the Ed25519 key serve signs checkpoints with, and the tag
// key derived from it that marks the records serve's committer writes. It
// never prints, logs or encodes its secret: String, GoString and LogValue
// give the public key's id only.
type SigningKey struct {
	priv   ed25519.PrivateKey
	tagKey []byte
	pub    PublicKey
}

// PublicKey is the public half of a SigningKey: what `healer audit
// verify --public-key` checks checkpoints with.
type PublicKey struct {
	key ed25519.PublicKey
}

// tagInfo is the HKDF info the record tag key is derived with, so that it
// is a key of its own and not the signing seed.
const tagInfo = "healer audit record tag v1"

// tagLen is the length in bytes of a record's tag (128 bits).
const tagLen = 16

func newSigningKey(priv ed25519.PrivateKey) (*SigningKey, error) {
	tk, err := hkdf.Key(sha256.New, priv.Seed(), nil, tagInfo, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive record tag key: %w", err)
	}
	pub, _ := priv.Public().(ed25519.PublicKey)
	return &SigningKey{priv: priv, tagKey: tk, pub: PublicKey{key: pub}}, nil
}

// NewSigningKey returns a new random signing key.
func NewSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate audit signing key: %w", err)
	}
	return newSigningKey(priv)
}

// LoadSigningKey reads a signing key file: a PEM "PRIVATE KEY" block
// holding a PKCS #8 Ed25519 key, as `openssl genpkey -algorithm ed25519`
// writes. A file that its group or others may read is refused (but for
// group read on a mounted Kubernetes Secret, see mountedSecret). Errors
// name the file, never its content.
func LoadSigningKey(path string) (*SigningKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 && !mountedSecret(path) {
		return nil, fmt.Errorf("%w: %s has mode %04o: it must be readable by its owner only (chmod 600)", ErrKeyFile, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s holds no PEM PRIVATE KEY block", ErrKeyFile, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a PKCS #8 private key", ErrKeyFile, path)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s: the key is a %T, want Ed25519", ErrKeyFile, path, k)
	}
	return newSigningKey(priv)
}

// mountedSecret reports whether path is a file of a Kubernetes Secret
// volume: a link into the "..data" directory the kubelet writes. With the
// pod's fsGroup the kubelet makes such files readable by that group (the
// group serve runs as) whatever the volume's defaultMode, so group read
// is accepted there; read by others never is.
func mountedSecret(path string) bool {
	target, err := filepath.EvalSymlinks(path)
	if err != nil || target == path || !strings.Contains(target, string(filepath.Separator)+"..") {
		return false
	}
	fi, err := os.Stat(target)
	return err == nil && fi.Mode().Perm()&0o037 == 0
}

// LoadOrCreateSigningKey loads the key at path, or, when there is no file
// there, generates one and writes it (mode 0600) with its public key
// beside it (PublicKeyPath). Two processes creating the same file at once
// end up with the same key: the file appears complete or not at all.
// created reports whether this call made the key.
func LoadOrCreateSigningKey(path string) (k *SigningKey, created bool, err error) {
	k, err = LoadSigningKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if k, err = NewSigningKey(); err != nil {
		return nil, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, false, fmt.Errorf("encode audit signing key: %w", err)
	}
	body := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	tmp, err := writeTemp(filepath.Dir(path), ".signing-key-", body)
	if err != nil {
		return nil, false, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp) }()
	// A hard link fails when path exists: whoever links first wins, and
	// the loser loads the winner's key.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			k, err = LoadSigningKey(path)
			return k, false, err
		}
		return nil, false, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, false, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	return k, true, nil
}

// PublicKeyPath is where the public key of the key at keyPath is written:
// the same name with ".pub" instead of ".key" (or with ".pub" added).
func PublicKeyPath(keyPath string) string {
	return strings.TrimSuffix(keyPath, ".key") + ".pub"
}

// WritePublicKey writes the key's public half in PEM to path (mode 0644),
// atomically.
func (k *SigningKey) WritePublicKey(path string) error {
	tmp, err := writeTemp(filepath.Dir(path), ".public-key-", k.pub.PEM())
	if err != nil {
		return fmt.Errorf("write audit public key %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil { //nolint:gosec // a public key
		_ = os.Remove(tmp)
		return fmt.Errorf("write audit public key %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write audit public key %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// Public returns the key's public half.
func (k *SigningKey) Public() PublicKey { return k.pub }

// String names the key by its public id; it never shows the secret.
func (k *SigningKey) String() string { return "audit signing key " + k.pub.ID() }

// GoString is String, so that %#v does not print the secret either.
func (k *SigningKey) GoString() string { return k.String() }

// LogValue logs the key as its public id.
func (k *SigningKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// tag returns the committer's tag of a record with the given hash: the
// first 128 bits of HMAC-SHA256(tag key, hash), in hex.
func (k *SigningKey) tag(hash string) string {
	m := hmac.New(sha256.New, k.tagKey)
	m.Write([]byte(hash))
	return hex.EncodeToString(m.Sum(nil)[:tagLen])
}

// validTag reports whether tag is the committer's tag of a record with
// the given hash.
func (k *SigningKey) validTag(hash, tag string) bool {
	got, err := hex.DecodeString(tag)
	if err != nil || len(got) != tagLen {
		return false
	}
	m := hmac.New(sha256.New, k.tagKey)
	m.Write([]byte(hash))
	return hmac.Equal(got, m.Sum(nil)[:tagLen])
}

// ID is the key's short public id: the first 16 hex digits of the SHA-256
// of the public key.
func (p PublicKey) ID() string {
	sum := sha256.Sum256(p.key)
	return hex.EncodeToString(sum[:8])
}

// PEM encodes the public key as a PEM "PUBLIC KEY" block (PKIX), as
// `openssl pkey -pubout` writes.
func (p PublicKey) PEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(p.key)
	if err != nil {
		// Unreachable for an Ed25519 key.
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// IsZero reports whether p holds no key.
func (p PublicKey) IsZero() bool { return len(p.key) == 0 }

// ParsePublicKey decodes a PEM "PUBLIC KEY" block holding an Ed25519 key.
func ParsePublicKey(b []byte) (PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return PublicKey{}, errors.New("no PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return PublicKey{}, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return PublicKey{}, fmt.Errorf("the public key is a %T, want Ed25519", k)
	}
	return PublicKey{key: pub}, nil
}

// writeTemp writes b to a new file in dir (mode 0600), syncs it and
// returns its name.
func writeTemp(dir, pattern string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return "", err
	}
	return name, nil
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

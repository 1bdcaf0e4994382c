package certrenew

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// ErrCANearExpiry is returned when the CA expires too soon for a renewal to
// help: renewing the CA is a human's job.
var ErrCANearExpiry = errors.New("CA near expiry")

// readCert reads the first certificate of a PEM file.
func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the operator's configuration names it
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("certificate %s: no CERTIFICATE block", path)
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", path, err)
			}
			return c, nil
		}
	}
}

// readKey reads a PEM private key (PKCS#1, SEC 1 or PKCS#8).
func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the operator's configuration names it
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("key %s: no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s: %T cannot sign", path, k)
	}
	return s, nil
}

// keyType names a public key's algorithm and size ("RSA-2048", "ECDSA-P256").
func keyType(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-" + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

// renewal is a certificate re-issued from an old one.
type renewal struct {
	old, new *x509.Certificate
	pem      []byte
}

// reissue signs a certificate like old — subject, SANs, key usages, the
// same public key — valid from now for validity, capped at the CA's expiry.
func reissue(old *x509.Certificate, key crypto.Signer, ca *x509.Certificate, caKey crypto.Signer, validity, minCALeft time.Duration, now time.Time) (*renewal, error) {
	if left := ca.NotAfter.Sub(now); left < minCALeft {
		return nil, fmt.Errorf("%w: CA %q expires %s (in %s, less than %s): renew the CA first",
			ErrCANearExpiry, ca.Subject.CommonName, ca.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour), minCALeft)
	}
	if err := old.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("certificate %q was not issued by CA %q: %w", old.Subject.CommonName, ca.Subject.CommonName, err)
	}
	if !publicKeysEqual(old.PublicKey, key.Public()) {
		return nil, fmt.Errorf("certificate %q does not match its key file", old.Subject.CommonName)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               old.Subject,
		NotBefore:             now.Add(-5 * time.Minute), // clock skew between masters
		NotAfter:              notAfter,
		KeyUsage:              old.KeyUsage,
		ExtKeyUsage:           old.ExtKeyUsage,
		UnknownExtKeyUsage:    old.UnknownExtKeyUsage,
		BasicConstraintsValid: old.BasicConstraintsValid,
		IsCA:                  old.IsCA,
		DNSNames:              old.DNSNames,
		IPAddresses:           old.IPAddresses,
		URIs:                  old.URIs,
		EmailAddresses:        old.EmailAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", old.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse renewed certificate: %w", err)
	}
	return &renewal{old: old, new: c, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// writeAtomic replaces path with data: the old file is first copied to
// backup (left in place if it exists: a retry must not overwrite the
// original with the renewed one), then data is written to a temporary file
// in the same directory, synced and renamed over path.
func writeAtomic(path, backup string, data []byte) error {
	old, err := os.ReadFile(path) //nolint:gosec // configured path
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := os.Stat(backup); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(backup, old, 0o600); err != nil { //nolint:gosec // backup is the configured certificate path plus an action id checked by agentparam.ID
			return fmt.Errorf("back up %s: %w", path, err)
		}
	}
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// liveLeaf reads the certificate an endpoint presents. The handshake
// verifies nothing (the point is to see what is served, also when it is
// expired); no application data is sent.
func liveLeaf(ctx context.Context, endpoint string) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // reads the served chain, sends nothing
	conn, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return nil, fmt.Errorf("tls %s: %w", endpoint, err)
	}
	defer func() { _ = conn.Close() }()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("tls %s: no certificate presented", endpoint)
	}
	return certs[0], nil
}

func serialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

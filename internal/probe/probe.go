// Package probe checks whether a node component answers: an HTTP endpoint
// that must return 2xx, a TCP port or a Unix socket that must accept a
// connection. The restart remediator waits on it after a restart; the
// runtimepanic detector watches it to report a component that stopped
// answering.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
)

// Target is one health endpoint. Exactly one field is set.
type Target struct {
	// HTTP is a URL that answers 2xx when healthy.
	HTTP string
	// TCP is host:port that accepts connections when healthy.
	TCP string
	// Unix is a socket path that accepts connections when healthy.
	Unix string
}

// Validate reports a target that could not be probed.
func (t Target) Validate() error {
	n := 0
	for _, s := range []string{t.HTTP, t.TCP, t.Unix} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("exactly one of http, tcp and unix is required")
	}
	switch {
	case t.HTTP != "":
		u, err := url.Parse(t.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http %q: want an http or https URL", t.HTTP)
		}
	case t.TCP != "":
		if _, _, err := net.SplitHostPort(t.TCP); err != nil {
			return fmt.Errorf("tcp %q: %w", t.TCP, err)
		}
	default:
		if !filepath.IsAbs(t.Unix) {
			return fmt.Errorf("unix %q: must be an absolute path", t.Unix)
		}
	}
	return nil
}

// String names the target for logs and events.
func (t Target) String() string {
	switch {
	case t.HTTP != "":
		return "http " + t.HTTP
	case t.TCP != "":
		return "tcp " + t.TCP
	default:
		return "unix " + t.Unix
	}
}

// Probe checks the target once, within ctx; nil means healthy.
func (t Target) Probe(ctx context.Context, hc *http.Client) error {
	var d net.Dialer
	switch {
	case t.HTTP != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.HTTP, nil)
		if err != nil {
			return fmt.Errorf("health %s: %w", t.HTTP, err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("health %s: %w", t.HTTP, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("health %s: status %d", t.HTTP, resp.StatusCode)
		}
		return nil
	case t.TCP != "":
		c, err := d.DialContext(ctx, "tcp", t.TCP)
		if err != nil {
			return fmt.Errorf("health tcp %s: %w", t.TCP, err)
		}
		return c.Close()
	default:
		c, err := d.DialContext(ctx, "unix", t.Unix)
		if err != nil {
			return fmt.Errorf("health unix %s: %w", t.Unix, err)
		}
		return c.Close()
	}
}

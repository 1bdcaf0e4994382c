package agentparam

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/selfheal/healer/action"
)

// Error is a refused parameter value.
type Error struct {
	// Param names the parameter ("action_id", "component").
	Param string
	// Value is the value as it was sent.
	Value string
	// Reason says what the value must look like.
	Reason string
}

// Error names the parameter and quotes the value, cut short when long.
func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Param, Quote(e.Value), e.Reason)
}

// Unwrap makes the refusal an action.ErrInvalidParams: permanent.
func (e *Error) Unwrap() error { return action.ErrInvalidParams }

// maxQuoted is how much of a refused value an error shows.
const maxQuoted = 64

// Quote quotes v for an error or a log line: control characters escaped,
// and no more than the first 64 bytes, with the full length said.
func Quote(v string) string {
	if len(v) <= maxQuoted {
		return strconv.Quote(v)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strconv.Quote(v[:cut]) + fmt.Sprintf("… (%d bytes)", len(v))
}

func refuse(param, v, reason string) error { return &Error{Param: param, Value: v, Reason: reason} }

var (
	idPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	hexPattern  = regexp.MustCompile(`^[0-9a-f]{1,16}$`)
)

// ID checks an identifier that becomes part of a file name, such as an
// action id or an etcd member name: 1 to 128 letters, digits, '.', '_' or
// '-', starting with a letter or digit, without "..".
func ID(param, v string) error {
	if !idPattern.MatchString(v) || strings.Contains(v, "..") {
		return refuse(param, v, "want 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit, without \"..\"")
	}
	return nil
}

// Name checks the name of something configured on the node (a component,
// a certificate): 1 to 63 lower-case letters, digits, '.', '_' or '-',
// starting with a letter or digit, without "..".
func Name(param, v string) error {
	if !namePattern.MatchString(v) || strings.Contains(v, "..") {
		return refuse(param, v, "want 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, without \"..\"")
	}
	return nil
}

// HexID checks an id printed in hexadecimal, such as an etcd member id:
// 1 to 16 lower-case hex digits.
func HexID(param, v string) error {
	if !hexPattern.MatchString(v) {
		return refuse(param, v, "want 1 to 16 lower-case hexadecimal digits")
	}
	return nil
}

// unitTypes are the unit types a restart may name.
var unitTypes = []string{"service", "socket", "target", "timer"}

// Unit checks a systemd unit name as systemd.unit(5) defines it: a prefix
// of ASCII letters, digits, ':', '-', '_', '.' and '\' escapes (\xHH),
// with at most one '@' after a non-empty template name, then the type
// (.service, .socket, .target or .timer); 255 bytes at most. It must not
// start with '-' or '.', so it never reads as an option or a hidden file.
func Unit(param, v string) error {
	bad := func(why string) error { return refuse(param, v, "not a systemd unit name: "+why) }
	if len(v) > 255 {
		return bad("longer than 255 bytes")
	}
	dot := strings.LastIndexByte(v, '.')
	if dot < 0 {
		return bad("no unit type suffix")
	}
	prefix, typ := v[:dot], v[dot+1:]
	known := false
	for _, t := range unitTypes {
		known = known || typ == t
	}
	if !known {
		return bad("type must be one of ." + strings.Join(unitTypes, ", ."))
	}
	if prefix == "" || prefix[0] == '-' || prefix[0] == '.' {
		return bad("empty, or starts with '-' or '.'")
	}
	if at := strings.IndexByte(prefix, '@'); at == 0 || at >= 0 && strings.IndexByte(prefix[at+1:], '@') >= 0 {
		return bad("a template needs a name before its one '@'")
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte(":-_.@", c) >= 0:
		case c == '\\' && i+3 < len(prefix) && prefix[i+1] == 'x' && isHex(prefix[i+2]) && isHex(prefix[i+3]):
			i += 3
		default:
			return bad(fmt.Sprintf("character %q at %d", c, i))
		}
	}
	return nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// maxPath bounds a path parameter, as Linux's PATH_MAX does.
const maxPath = 4096

// Path checks a file path: absolute, already clean (no "..", "." or
// doubled slashes, so what is compared is what is opened), printable, and
// at most 4096 bytes. The caller then matches it against the files its
// configuration names; Path alone allows nothing.
func Path(param, v string) error {
	switch {
	case len(v) > maxPath:
		return refuse(param, v, "longer than 4096 bytes")
	case !filepath.IsAbs(v):
		return refuse(param, v, "want an absolute path")
	case filepath.Clean(v) != v:
		return refuse(param, v, "want a clean path (no \"..\", \".\", doubled or trailing '/')")
	}
	for i, r := range v {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return refuse(param, v, fmt.Sprintf("control or invalid character at byte %d", i))
		}
	}
	return nil
}

// URL checks an http or https URL of a host and port, with no user, path
// (but "/"), query or fragment: what etcd's peer and client URLs are.
func URL(param, v string) (*url.URL, error) {
	bad := func(why string) (*url.URL, error) { return nil, refuse(param, v, "want http(s)://host:port: "+why) }
	if len(v) > 512 {
		return bad("longer than 512 bytes")
	}
	u, err := url.Parse(v)
	if err != nil {
		return bad("does not parse")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("scheme must be http or https")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/"):
		return bad("only a scheme, a host and a port")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return bad("no host and port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("port must be 1 to 65535")
	}
	return u, nil
}

// StringParam reads the optional string parameter key of params and, when
// it is set, checks it with check (ID, Name, Path, ...). A value that is
// not a string is refused as action.StringParam refuses it.
func StringParam(params map[string]any, key string, check func(param, v string) error) (string, error) {
	v, err := action.StringParam(params, key, "")
	if err != nil || v == "" {
		return v, err
	}
	if err := check(key, v); err != nil {
		return "", err
	}
	return v, nil
}

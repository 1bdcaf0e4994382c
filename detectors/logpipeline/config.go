package logpipeline

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"time"
)

// DefaultFor is how long a lag must stay above its threshold before an
// event fires, when a rule does not say.
const DefaultFor = 5 * time.Minute

// Config says which parts of the log pipeline to measure and when their lag
// is a problem. The node agent sets Node and Shippers; the server sets
// Kafka. At least one of Shippers and Kafka is required.
type Config struct {
	// Node is the name of the node the agent runs on; shipper events have
	// the subject "node/<Node>". Required when Shippers is not empty.
	Node string `json:"node"`
	// Shippers are the log shippers on this node whose registry is read.
	Shippers []Shipper `json:"shippers"`
	// Kafka measures consumer-group lag. Nil turns it off.
	Kafka *Kafka `json:"kafka"`
	// Interval is the time between two measurements. Default 30s.
	Interval time.Duration `json:"interval"`
	// PublishTimeout bounds one attempt to publish an event; failed
	// attempts are retried with backoff until the detector stops.
	// Default 5s.
	PublishTimeout time.Duration `json:"publishTimeout"`
}

// Shipper is one filebeat-style shipper: its registry and the files it
// ships, with their thresholds.
type Shipper struct {
	// Name names the shipper in event keys and data, for example
	// "filebeat". Required.
	Name string `json:"name"`
	// Component names what the remediation restarts, as the restart
	// remediator's component table on the node knows it (the systemd unit
	// or process behind it is configured there), for example "filebeat".
	// Lower-case letters, digits, '.', '_' and '-'. Default: Name.
	Component string `json:"component"`
	// Registry is the directory holding the shipper's registry: log.json,
	// active.dat and the <N>.json checkpoints. Default
	// "/var/lib/filebeat/registry/filebeat".
	Registry string `json:"registry"`
	// Files are the shipped files to measure, by glob. A file matched by
	// several rules belongs to the first. Required.
	Files []FileRule `json:"files"`
	// UnreadableFor is how long the registry must stay unreadable before a
	// LogShipperRegistryUnreadable event fires. Nil means DefaultFor;
	// zero fires at the first failed read.
	UnreadableFor *time.Duration `json:"unreadableFor"`
}

// FileRule is a set of shipped files and the lag they may have.
type FileRule struct {
	// Glob selects files, with the syntax of path/filepath.Match (no
	// "**"); it must be absolute. Required.
	Glob string `json:"glob"`
	// Exclude drops files matching any of these patterns from the rule
	// (a later rule may match them): a pattern with a "/" is matched
	// against the whole path ("/var/log/app/*.gz"), one without against
	// the file name ("*.gz").
	Exclude []string `json:"exclude"`
	// MaxBytes is the number of unshipped bytes a file may have; more is
	// a lag. Zero does not check bytes.
	MaxBytes int64 `json:"maxBytes"`
	// MaxAge is how long the oldest unshipped byte of a file may wait;
	// longer is a lag. Zero does not check age. At least one of MaxBytes
	// and MaxAge is required.
	MaxAge time.Duration `json:"maxAge"`
	// For is how long a file must stay over a threshold before the event
	// fires. Nil means DefaultFor; zero fires at the first measurement
	// over the threshold.
	For *time.Duration `json:"for"`
	// IgnoreOlder skips the rule's files not modified for this long, like
	// filebeat's ignore_older: the shipper does not read them, so their
	// bytes are not lag. Such files stay the rule's: a later rule does not
	// measure them either. Zero measures every matched file.
	IgnoreOlder time.Duration `json:"ignoreOlder"`
}

// Kafka is the Kafka cluster between the shipper and its consumers, and
// the consumer groups whose lag is measured.
type Kafka struct {
	// Brokers are seed brokers, host:port. Required.
	Brokers []string `json:"brokers"`
	// ClientID is the Kafka client id. Default "healer".
	ClientID string `json:"clientID"`
	// TLS, when set, connects with TLS.
	TLS *TLS `json:"tls"`
	// SASL, when set, authenticates with SASL.
	SASL *SASL `json:"sasl"`
	// Groups are the consumer groups to measure. Required.
	Groups []GroupRule `json:"groups"`
	// RequestTimeout bounds one measurement of all groups. Default 10s.
	RequestTimeout time.Duration `json:"requestTimeout"`
}

// TLS is the TLS client configuration for Kafka.
type TLS struct {
	// CAFile is a PEM bundle of the CAs that sign the brokers'
	// certificates. Empty uses the system roots.
	CAFile string `json:"caFile"`
	// CertFile and KeyFile are a PEM client certificate and key, for
	// mutual TLS. Both or neither.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ServerName overrides the name checked in the brokers' certificates.
	ServerName string `json:"serverName"`
}

// SASL mechanisms.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL is the SASL authentication for Kafka.
type SASL struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512. Required.
	Mechanism string `json:"mechanism"`
	// Username is the SASL user. Required.
	Username string `json:"username"`
	// PasswordFile holds the password (surrounding white space is
	// dropped). Required; the password itself is never configured
	// inline, logged or put in an error.
	PasswordFile string `json:"passwordFile"`
}

// GroupRule is a consumer group and the lag it may have.
type GroupRule struct {
	// Group is the consumer group id, for example "logstash". Required.
	Group string `json:"group"`
	// Topics limits the measurement to these topics. Empty measures every
	// topic the group consumes or has committed offsets for.
	Topics []string `json:"topics"`
	// MaxLag is the number of messages the group may be behind, summed
	// over the measured partitions; more is a lag. Required.
	MaxLag int64 `json:"maxLag"`
	// For is how long the group must stay over MaxLag before the event
	// fires. Nil means DefaultFor; zero fires at the first measurement
	// over the threshold.
	For *time.Duration `json:"for"`
	// Component names the consumer the remediation restarts, for example
	// "logstash" (same form as Shipper.Component). Default "logstash".
	Component string `json:"component"`
	// Node, when set, is the node the consumer runs on: the events then
	// have the subject node/<Node> (and carry it in their data), so a
	// policy can restart the consumer through that node's agent.
	Node string `json:"node"`
}

// componentName is the form of a component name, as the restart
// remediator takes it.
var componentName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ApplyDefaults fills zero fields.
func (c *Config) ApplyDefaults() {
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	for i := range c.Shippers {
		s := &c.Shippers[i]
		if s.Component == "" {
			s.Component = s.Name
		}
		if s.Registry == "" {
			s.Registry = "/var/lib/filebeat/registry/filebeat"
		}
		if s.UnreadableFor == nil {
			s.UnreadableFor = durationPtr(DefaultFor)
		}
		for j := range s.Files {
			if s.Files[j].For == nil {
				s.Files[j].For = durationPtr(DefaultFor)
			}
		}
	}
	if k := c.Kafka; k != nil {
		if k.ClientID == "" {
			k.ClientID = "healer"
		}
		if k.RequestTimeout == 0 {
			k.RequestTimeout = 10 * time.Second
		}
		for i := range k.Groups {
			g := &k.Groups[i]
			if g.For == nil {
				g.For = durationPtr(DefaultFor)
			}
			if g.Component == "" {
				g.Component = "logstash"
			}
		}
	}
}

func durationPtr(d time.Duration) *time.Duration { return &d }

// Validate reports every setting that could not work.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Shippers) == 0 && c.Kafka == nil {
		errs = append(errs, errors.New("logpipeline: nothing to measure: give shippers, kafka or both"))
	}
	if len(c.Shippers) > 0 && c.Node == "" {
		errs = append(errs, errors.New("logpipeline: node is required with shippers"))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("logpipeline: interval %s: must be positive", c.Interval))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("logpipeline: publishTimeout %s: must be positive", c.PublishTimeout))
	}
	name := regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	seen := map[string]bool{}
	for i, s := range c.Shippers {
		where := fmt.Sprintf("logpipeline: shippers[%d] (%s)", i, s.Name)
		switch {
		case s.Name == "":
			errs = append(errs, fmt.Errorf("%s: name is required", where))
		case !name.MatchString(s.Name):
			errs = append(errs, fmt.Errorf("%s: name may hold only letters, digits, '.', '_' and '-'", where))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("%s: a second shipper with this name", where))
		}
		seen[s.Name] = true
		if !componentName.MatchString(s.Component) {
			errs = append(errs, fmt.Errorf("%s: component %q: want a component name such as filebeat", where, s.Component))
		}
		if s.Registry == "" {
			errs = append(errs, fmt.Errorf("%s: registry is required", where))
		}
		if s.UnreadableFor != nil && *s.UnreadableFor < 0 {
			errs = append(errs, fmt.Errorf("%s: unreadableFor %s: must not be negative", where, *s.UnreadableFor))
		}
		if len(s.Files) == 0 {
			errs = append(errs, fmt.Errorf("%s: files: at least one is required", where))
		}
		for j, f := range s.Files {
			errs = append(errs, f.validate(fmt.Sprintf("%s: files[%d] (%s)", where, j, f.Glob))...)
		}
	}
	if k := c.Kafka; k != nil {
		errs = append(errs, k.validate()...)
	}
	return errors.Join(errs...)
}

func (f *FileRule) validate(where string) []error {
	var errs []error
	switch {
	case f.Glob == "":
		errs = append(errs, fmt.Errorf("%s: glob is required", where))
	case !filepath.IsAbs(f.Glob):
		errs = append(errs, fmt.Errorf("%s: glob must be an absolute path", where))
	default:
		if _, err := filepath.Match(f.Glob, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s: glob: %w", where, err))
		}
	}
	for _, x := range f.Exclude {
		if _, err := filepath.Match(x, ""); err != nil || x == "" {
			errs = append(errs, fmt.Errorf("%s: exclude %q: not a pattern", where, x))
		}
	}
	if f.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%s: maxBytes %d: must not be negative", where, f.MaxBytes))
	}
	if f.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("%s: maxAge %s: must not be negative", where, f.MaxAge))
	}
	if f.MaxBytes == 0 && f.MaxAge == 0 {
		errs = append(errs, fmt.Errorf("%s: at least one of maxBytes and maxAge is required", where))
	}
	if f.For != nil && *f.For < 0 {
		errs = append(errs, fmt.Errorf("%s: for %s: must not be negative", where, *f.For))
	}
	if f.IgnoreOlder < 0 {
		errs = append(errs, fmt.Errorf("%s: ignoreOlder %s: must not be negative", where, f.IgnoreOlder))
	}
	return errs
}

func (k *Kafka) validate() []error {
	var errs []error
	if len(k.Brokers) == 0 {
		errs = append(errs, errors.New("logpipeline: kafka.brokers: at least one is required"))
	}
	for i, b := range k.Brokers {
		if host, port, err := net.SplitHostPort(b); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("logpipeline: kafka.brokers[%d] %q: want host:port", i, b))
		}
	}
	if k.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("logpipeline: kafka.requestTimeout %s: must be positive", k.RequestTimeout))
	}
	if t := k.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("logpipeline: kafka.tls: certFile and keyFile go together"))
	}
	if s := k.SASL; s != nil {
		switch s.Mechanism {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		default:
			errs = append(errs, fmt.Errorf("logpipeline: kafka.sasl.mechanism %q: want %s, %s or %s",
				s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512))
		}
		if s.Username == "" {
			errs = append(errs, errors.New("logpipeline: kafka.sasl.username is required"))
		}
		if s.PasswordFile == "" {
			errs = append(errs, errors.New("logpipeline: kafka.sasl.passwordFile is required"))
		}
	}
	if len(k.Groups) == 0 {
		errs = append(errs, errors.New("logpipeline: kafka.groups: at least one is required"))
	}
	seen := map[string]bool{}
	for i, g := range k.Groups {
		where := fmt.Sprintf("logpipeline: kafka.groups[%d] (%s)", i, g.Group)
		switch {
		case g.Group == "":
			errs = append(errs, fmt.Errorf("%s: group is required", where))
		case seen[g.Group]:
			errs = append(errs, fmt.Errorf("%s: a second rule for this group", where))
		}
		seen[g.Group] = true
		if g.MaxLag <= 0 {
			errs = append(errs, fmt.Errorf("%s: maxLag %d: must be positive", where, g.MaxLag))
		}
		if g.For != nil && *g.For < 0 {
			errs = append(errs, fmt.Errorf("%s: for %s: must not be negative", where, *g.For))
		}
		if !componentName.MatchString(g.Component) {
			errs = append(errs, fmt.Errorf("%s: component %q: want a component name such as logstash", where, g.Component))
		}
		for _, t := range g.Topics {
			if t == "" {
				errs = append(errs, fmt.Errorf("%s: topics: empty topic name", where))
			}
		}
	}
	return errs
}

// forOf returns the duration p points to, or DefaultFor for nil.
func forOf(p *time.Duration) time.Duration {
	if p == nil {
		return DefaultFor
	}
	return *p
}

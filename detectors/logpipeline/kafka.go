package logpipeline

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// ErrGroupNotFound is a consumer group the cluster does not know: it has
// no members and no committed offsets (Kafka describes it as "Dead", or
// answers GROUP_ID_NOT_FOUND).
var ErrGroupNotFound = errors.New("consumer group not found")

// maxPartitions bounds the partitions listed in an event.
const maxPartitions = 50

// PartitionLag is a consumer group's lag on one partition.
type PartitionLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Commit is the group's committed offset, -1 when it has none.
	Commit int64 `json:"commit"`
	// End is the partition's end offset (the next offset to be written).
	End int64 `json:"end"`
	Lag int64 `json:"lag"`
}

// TopicLag is a consumer group's lag summed over one topic.
type TopicLag struct {
	Topic      string `json:"topic"`
	Lag        int64  `json:"lag"`
	Partitions int    `json:"partitions"`
}

// GroupLag is the measured lag of one consumer group.
type GroupLag struct {
	Group string
	// State is the group's state: Stable, Empty (no members: the consumers
	// are down), PreparingRebalance, ...
	State   string
	Members int
	// Total is the lag summed over the measured partitions.
	Total  int64
	Topics []TopicLag
	// Partitions are the measured partitions, the most lagging first, at
	// most 50; PartitionsOmitted counts the rest.
	Partitions        []PartitionLag
	PartitionsOmitted int
	// PartitionErrors counts partitions whose lag could not be computed
	// (offsets not listed, commit not fetched); they are not in Total.
	PartitionErrors int
}

// SummarizeGroupLag sums the lag kadm computed for a group, over the
// given topics or, when topics is empty, over every topic. The partitions
// measured are those assigned to members and every partition of the
// topics the group has committed offsets for; a partition without a
// commit lags by all the records it holds. A topic the group neither
// consumes nor has committed to is not measured. It returns an error when the group could not
// be described or its offsets fetched, ErrGroupNotFound for a group the
// cluster does not know, and an error when every partition failed.
func SummarizeGroupLag(l kadm.DescribedGroupLag, topics []string) (GroupLag, error) {
	if err := l.Error(); err != nil {
		if errors.Is(err, kerr.GroupIDNotFound) {
			return GroupLag{}, fmt.Errorf("consumer group %s: %w: %w", l.Group, ErrGroupNotFound, err)
		}
		return GroupLag{}, fmt.Errorf("consumer group %s: %w", l.Group, err)
	}
	if l.State == "Dead" {
		return GroupLag{}, fmt.Errorf("consumer group %s: %w", l.Group, ErrGroupNotFound)
	}
	g := GroupLag{Group: l.Group, State: l.State, Members: len(l.Members)}
	var (
		parts    []PartitionLag
		byTopic  = map[string]*TopicLag{}
		firstErr error
	)
	for _, m := range l.Lag.Sorted() {
		if len(topics) > 0 && !slices.Contains(topics, m.Topic) {
			continue
		}
		if m.Err != nil || m.Lag < 0 {
			g.PartitionErrors++
			if firstErr == nil {
				firstErr = fmt.Errorf("consumer group %s: topic %s partition %d: %w", l.Group, m.Topic, m.Partition, m.Err)
			}
			continue
		}
		commit := m.Commit.At
		if commit < 0 {
			commit = -1
		}
		parts = append(parts, PartitionLag{Topic: m.Topic, Partition: m.Partition, Commit: commit, End: m.End.Offset, Lag: m.Lag})
		t := byTopic[m.Topic]
		if t == nil {
			t = &TopicLag{Topic: m.Topic}
			byTopic[m.Topic] = t
		}
		t.Lag += m.Lag
		t.Partitions++
		g.Total += m.Lag
	}
	if len(parts) == 0 && firstErr != nil {
		return GroupLag{}, firstErr
	}
	for _, t := range byTopic {
		g.Topics = append(g.Topics, *t)
	}
	slices.SortFunc(g.Topics, func(a, b TopicLag) int { return strings.Compare(a.Topic, b.Topic) })
	slices.SortStableFunc(parts, func(a, b PartitionLag) int { return cmp.Compare(b.Lag, a.Lag) })
	if len(parts) > maxPartitions {
		g.PartitionsOmitted = len(parts) - maxPartitions
		parts = parts[:maxPartitions]
	}
	g.Partitions = parts
	return g, nil
}

// kafkaOpts returns the client options for k. It reads the SASL password
// and TLS files, so their problems show when the detector is built. The
// password never appears in an error.
func kafkaOpts(k *Kafka) ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(k.Brokers...), kgo.ClientID(k.ClientID)}
	if t := k.TLS; t != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("logpipeline: kafka.tls.caFile: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("logpipeline: kafka.tls.caFile %s: no PEM certificate in it", t.CAFile)
			}
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("logpipeline: kafka.tls client certificate %s: %w", t.CertFile, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if s := k.SASL; s != nil {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("logpipeline: kafka.sasl.passwordFile: %w", err)
		}
		pass := strings.TrimSpace(string(b))
		if pass == "" {
			return nil, fmt.Errorf("logpipeline: kafka.sasl.passwordFile %s: empty", s.PasswordFile)
		}
		switch s.Mechanism {
		case SASLPlain:
			opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: pass}.AsMechanism()))
		case SASLScramSHA256:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: pass}.AsSha256Mechanism()))
		case SASLScramSHA512:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: pass}.AsSha512Mechanism()))
		}
	}
	return opts, nil
}

package logpipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/selfheal/healer/bus"
)

// EventSource is the CloudEvents source of events from this detector.
const EventSource = "logpipeline"

// Event types.
const (
	// TypeShipperLag is a shipped file whose lag stayed over its
	// threshold; subject "node/<node>".
	TypeShipperLag = "LogShipperLag"
	// TypeRegistryUnreadable is a shipper registry that stayed unreadable,
	// so the shipper's lag cannot be measured; subject "node/<node>".
	TypeRegistryUnreadable = "LogShipperRegistryUnreadable"
	// TypeKafkaLag is a consumer group whose lag stayed over its
	// threshold; subject "logpipeline/<group>", or "node/<node>" when the
	// group's rule names the node its consumer runs on.
	TypeKafkaLag = "KafkaConsumerLag"
)

// threshold is the rule an event's value was held against.
type threshold struct {
	MaxBytes int64  `json:"max_bytes,omitempty"`
	MaxAge   string `json:"max_age,omitempty"`
	MaxLag   int64  `json:"max_lag,omitempty"`
	For      string `json:"for"`
}

// shipperLagData is the data of a LogShipperLag event.
type shipperLagData struct {
	Shipper       string     `json:"shipper"`
	Component     string     `json:"component"`
	Registry      string     `json:"registry"`
	File          string     `json:"file"`
	State         FileState  `json:"state"`
	Offset        int64      `json:"offset"`
	Size          int64      `json:"size"`
	LagBytes      int64      `json:"lag_bytes"`
	LagAge        string     `json:"lag_age"`
	LagAgeSeconds int64      `json:"lag_age_seconds"`
	OffsetUpdated *time.Time `json:"offset_updated,omitempty"`
	Threshold     threshold  `json:"threshold"`
	Since         time.Time  `json:"since"`
	Gone          bool       `json:"gone,omitempty"`
}

// registryData is the data of a LogShipperRegistryUnreadable event.
type registryData struct {
	Shipper   string    `json:"shipper"`
	Component string    `json:"component"`
	Registry  string    `json:"registry"`
	Error     string    `json:"error,omitempty"`
	For       string    `json:"for"`
	Since     time.Time `json:"since"`
}

// kafkaLagData is the data of a KafkaConsumerLag event.
type kafkaLagData struct {
	Group             string         `json:"group"`
	Component         string         `json:"component"`
	Node              string         `json:"node,omitempty"`
	State             string         `json:"state"`
	Members           int            `json:"members"`
	TotalLag          int64          `json:"total_lag"`
	Topics            []TopicLag     `json:"topics"`
	Partitions        []PartitionLag `json:"partitions"`
	PartitionsOmitted int            `json:"partitions_omitted,omitempty"`
	PartitionErrors   int            `json:"partition_errors,omitempty"`
	Threshold         threshold      `json:"threshold"`
	Since             time.Time      `json:"since"`
}

// EventID is the id of an event: the same type, key, status and start of
// the excursion always give the same id, so publishing a transition again
// stores it once.
func EventID(typ, key, status string, since time.Time) string {
	h := sha256.New()
	for _, s := range []string{typ, key, status, since.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "lp-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// fileKey is the key of the events about one shipped file.
func fileKey(node, shipper, file string) string { return node + "/" + shipper + ":" + file }

// registryKey is the key of the events about a shipper's registry.
func registryKey(node, shipper string) string { return node + "/" + shipper + ":registry" }

// groupSubject is the subject, and key, of the events about a consumer group.
func groupSubject(group string) string { return "logpipeline/" + group }

func newEvent(typ, subject, key, status string, since, at time.Time, data any) (*bus.Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s event %s: %w", status, typ, key, err)
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              EventID(typ, key, status, since),
		Source:          EventSource,
		Type:            typ,
		Subject:         subject,
		Time:            at.UTC(),
		DataContentType: "application/json",
		Status:          status,
		Key:             key,
		Data:            raw,
	}, nil
}

// fileSample is a file's lag with the rule it is held against.
type fileSample struct {
	FileLag
	rule FileRule
}

func shipperLagEvent(node string, s Shipper, tr Transition[fileSample]) (*bus.Event, error) {
	l, r := tr.Value.FileLag, tr.Value.rule
	d := shipperLagData{
		Shipper: s.Name, Component: s.Component, Registry: s.Registry,
		File: l.File, State: l.State, Offset: l.Offset, Size: l.Size, LagBytes: l.LagBytes,
		LagAge: l.LagAge.Round(time.Second).String(), LagAgeSeconds: int64(l.LagAge / time.Second),
		Threshold: threshold{MaxBytes: r.MaxBytes, For: forOf(r.For).String()},
		Since:     tr.Since.UTC(), Gone: tr.Gone,
	}
	if r.MaxAge > 0 {
		d.Threshold.MaxAge = r.MaxAge.String()
	}
	if !l.OffsetUpdated.IsZero() {
		t := l.OffsetUpdated.UTC()
		d.OffsetUpdated = &t
	}
	return newEvent(TypeShipperLag, "node/"+node, fileKey(node, s.Name, l.File), tr.Status, tr.Since, tr.At, d)
}

// registryProblem is the state of a shipper's registry: the read error,
// or "" when it was read.
type registryProblem struct{ err string }

func registryEvent(node string, s Shipper, tr Transition[registryProblem]) (*bus.Event, error) {
	d := registryData{
		Shipper: s.Name, Component: s.Component, Registry: s.Registry, Error: tr.Value.err,
		For: forOf(s.UnreadableFor).String(), Since: tr.Since.UTC(),
	}
	return newEvent(TypeRegistryUnreadable, "node/"+node, registryKey(node, s.Name), tr.Status, tr.Since, tr.At, d)
}

// groupSample is a group's lag with the rule it is held against.
type groupSample struct {
	GroupLag
	rule GroupRule
}

func kafkaLagEvent(tr Transition[groupSample]) (*bus.Event, error) {
	l, r := tr.Value.GroupLag, tr.Value.rule
	d := kafkaLagData{
		Group: r.Group, Component: r.Component, Node: r.Node, State: l.State, Members: l.Members, TotalLag: l.Total,
		Topics: l.Topics, Partitions: l.Partitions, PartitionsOmitted: l.PartitionsOmitted,
		PartitionErrors: l.PartitionErrors,
		Threshold:       threshold{MaxLag: r.MaxLag, For: forOf(r.For).String()},
		Since:           tr.Since.UTC(),
	}
	if d.Topics == nil {
		d.Topics = []TopicLag{}
	}
	if d.Partitions == nil {
		d.Partitions = []PartitionLag{}
	}
	subject := groupSubject(r.Group)
	if r.Node != "" {
		// The consumer runs on a known node: target it, so a policy can
		// restart the consumer through that node's agent.
		subject = "node/" + r.Node
	}
	return newEvent(TypeKafkaLag, subject, groupSubject(r.Group), tr.Status, tr.Since, tr.At, d)
}

package logpipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// newCluster starts an in-process Kafka cluster with the topics "logs"
// (three partitions) and "audit" (one).
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, "logs"), kfake.SeedTopics(1, "audit")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// kfakeSASL makes the cluster require SASL PLAIN as user.
func kfakeSASL(user, pass string) []kfake.Opt {
	return []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(SASLPlain, user, pass)}
}

func newAdmin(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// produce writes n records to one partition.
func produce(t *testing.T, c *kfake.Cluster, topic string, partition int32, n int, opts ...kgo.Opt) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: partition, Value: fmt.Appendf(nil, `{"message":"line %d"}`, i)}
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// commit commits offsets of group, as the consumer would.
func commit(t *testing.T, adm *kadm.Client, group, topic string, at map[int32]int64) {
	t.Helper()
	os := kadm.Offsets{}
	for p, o := range at {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: o, LeaderEpoch: -1})
	}
	if err := adm.CommitAllOffsets(t.Context(), group, os); err != nil {
		t.Fatal(err)
	}
}

func describeGroupLag(g GroupLag) string {
	var parts []string
	for _, p := range g.Partitions {
		parts = append(parts, fmt.Sprintf("%s/%d:%d-%d=%d", p.Topic, p.Partition, p.End, p.Commit, p.Lag))
	}
	var topics []string
	for _, tl := range g.Topics {
		topics = append(topics, fmt.Sprintf("%s=%d/%d", tl.Topic, tl.Lag, tl.Partitions))
	}
	return fmt.Sprintf("%s %s members=%d total=%d topics=[%s] partitions=[%s] errors=%d",
		g.Group, g.State, g.Members, g.Total, strings.Join(topics, " "), strings.Join(parts, " "), g.PartitionErrors)
}

func TestSummarizeGroupLagKafka(t *testing.T) {
	c := newCluster(t)
	adm := newAdmin(t, c)
	produce(t, c, "logs", 0, 10)
	produce(t, c, "logs", 1, 20)
	produce(t, c, "logs", 2, 30)
	produce(t, c, "audit", 0, 5)
	// logstash has read all of partition 0, a quarter of 1 and none of 2.
	commit(t, adm, "logstash", "logs", map[int32]int64{0: 10, 1: 5, 2: 0})
	commit(t, adm, "logstash", "audit", map[int32]int64{0: 1})

	lags, err := adm.Lag(t.Context(), "logstash", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		group   string
		topics  []string
		want    string
		wantErr error
	}{
		{name: "every topic", group: "logstash",
			want: "logstash Empty members=0 total=49 topics=[audit=4/1 logs=45/3] " +
				"partitions=[logs/2:30-0=30 logs/1:20-5=15 audit/0:5-1=4 logs/0:10-10=0] errors=0"},
		{name: "topics filter", group: "logstash", topics: []string{"logs"},
			want: "logstash Empty members=0 total=45 topics=[logs=45/3] partitions=[logs/2:30-0=30 logs/1:20-5=15 logs/0:10-10=0] errors=0"},
		{name: "a topic the group does not read", group: "logstash", topics: []string{"metrics"},
			want: "logstash Empty members=0 total=0 topics=[] partitions=[] errors=0"},
		{name: "a group the cluster does not know", group: "nobody", wantErr: ErrGroupNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := SummarizeGroupLag(lags[tt.group], tt.topics)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.group) {
					t.Fatalf("SummarizeGroupLag() error %v, want %v naming the group", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := describeGroupLag(g); got != tt.want {
				t.Errorf("lag\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSummarizeGroupLagErrors(t *testing.T) {
	ok := func(topic string, p int32, commit, end int64) kadm.GroupMemberLag {
		return kadm.GroupMemberLag{Topic: topic, Partition: p, Commit: kadm.Offset{At: commit}, End: kadm.ListedOffset{Offset: end}, Lag: end - commit}
	}
	failed := kadm.GroupMemberLag{Topic: "logs", Partition: 9, Lag: -1, Err: errors.New("NOT_LEADER_FOR_PARTITION")}
	many := kadm.GroupLag{"logs": {}}
	for p := range int32(60) {
		many["logs"][p] = ok("logs", p, 0, int64(p))
	}
	tests := []struct {
		name    string
		lag     kadm.DescribedGroupLag
		want    string
		omitted int
		wantErr string
	}{
		{name: "describe failed", lag: kadm.DescribedGroupLag{Group: "logstash", DescribeErr: errors.New("COORDINATOR_NOT_AVAILABLE")},
			wantErr: "consumer group logstash: COORDINATOR_NOT_AVAILABLE"},
		{name: "a dead group", lag: kadm.DescribedGroupLag{Group: "logstash", State: "Dead"}, wantErr: "consumer group logstash: consumer group not found"},
		{name: "fetching offsets failed", lag: kadm.DescribedGroupLag{Group: "logstash", State: "Stable", FetchErr: errors.New("GROUP_AUTHORIZATION_FAILED")},
			wantErr: "GROUP_AUTHORIZATION_FAILED"},
		{name: "a failed partition is counted, not summed", lag: kadm.DescribedGroupLag{Group: "logstash", State: "Stable",
			Members: make([]kadm.DescribedGroupMember, 2), Lag: kadm.GroupLag{"logs": {0: ok("logs", 0, 5, 25), 9: failed}}},
			want: "logstash Stable members=2 total=20 topics=[logs=20/1] partitions=[logs/0:25-5=20] errors=1"},
		{name: "every partition failed", lag: kadm.DescribedGroupLag{Group: "logstash", State: "Stable", Lag: kadm.GroupLag{"logs": {9: failed}}},
			wantErr: "topic logs partition 9: NOT_LEADER_FOR_PARTITION"},
		{name: "no commit yet", lag: kadm.DescribedGroupLag{Group: "g", State: "Stable", Lag: kadm.GroupLag{"logs": {0: {
			Topic: "logs", Commit: kadm.Offset{At: -1}, End: kadm.ListedOffset{Offset: 7}, Lag: 7}}}},
			want: "g Stable members=0 total=7 topics=[logs=7/1] partitions=[logs/0:7--1=7] errors=0"},
		{name: "at most 50 partitions, the most lagging", lag: kadm.DescribedGroupLag{Group: "g", State: "Stable", Lag: many},
			omitted: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := SummarizeGroupLag(tt.lag, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != "" {
				if got := describeGroupLag(g); got != tt.want {
					t.Errorf("lag\n%s\nwant\n%s", got, tt.want)
				}
			}
			if g.PartitionsOmitted != tt.omitted {
				t.Errorf("omitted %d, want %d", g.PartitionsOmitted, tt.omitted)
			}
			if tt.omitted > 0 {
				if len(g.Partitions) != maxPartitions || g.Partitions[0].Partition != 59 || g.Partitions[49].Partition != 10 || g.Total != 59*60/2 {
					t.Errorf("kept partitions %v..%v, total %d", g.Partitions[0], g.Partitions[len(g.Partitions)-1], g.Total)
				}
			}
		})
	}
}

func TestKafkaSASL(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(SASLScramSHA256, "healer", "c0rrect-h0rse"))
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pwFile, []byte("c0rrect-h0rse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := &Kafka{Brokers: c.ListenAddrs(), ClientID: "healer", SASL: &SASL{Mechanism: SASLScramSHA256, Username: "healer", PasswordFile: pwFile}}
	opts, err := kafkaOpts(k)
	if err != nil {
		t.Fatal(err)
	}
	adm := newAdmin(t, c, opts[2:]...) // the SASL option
	produce(t, c, "logs", 0, 3, opts[2:]...)
	commit(t, adm, "logstash", "logs", map[int32]int64{0: 1})
	lags, err := adm.Lag(t.Context(), "logstash")
	if err != nil {
		t.Fatal(err)
	}
	if g, err := SummarizeGroupLag(lags["logstash"], nil); err != nil || g.Total != 2 {
		t.Fatalf("lag through SASL: %+v, %v; want 2", g, err)
	}

	k.SASL.PasswordFile = filepath.Join(dir, "missing")
	if _, err := kafkaOpts(k); err == nil || !strings.Contains(err.Error(), "kafka.sasl.passwordFile") {
		t.Errorf("missing password file: %v", err)
	}
	if err := os.WriteFile(pwFile, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k.SASL.PasswordFile = pwFile
	if _, err := kafkaOpts(k); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty password file: %v", err)
	}
}

func TestKafkaTLSFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tls  TLS
		want string
	}{
		{"system roots", TLS{}, ""},
		{"missing CA file", TLS{CAFile: filepath.Join(dir, "missing.pem")}, "kafka.tls.caFile"},
		{"CA file without a certificate", TLS{CAFile: notPEM}, "no PEM certificate"},
		{"bad client certificate", TLS{CertFile: notPEM, KeyFile: notPEM}, "client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := kafkaOpts(&Kafka{Brokers: []string{"k:9093"}, TLS: &tt.tls})
			if tt.want == "" {
				if err != nil || len(opts) != 3 {
					t.Fatalf("kafkaOpts() = %d options, %v; want 3 and no error", len(opts), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("kafkaOpts() error %v, want %q", err, tt.want)
			}
		})
	}
}

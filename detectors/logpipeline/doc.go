// Package logpipeline is the detector for a log pipeline that falls behind:
// filebeat (or another shipper with filebeat's registry) reading log files
// on each node, Kafka in the middle, and Logstash (or another consumer
// group) reading from Kafka. It measures the lag at both ends and reports
// a lag that has stayed over its threshold, so that the policy can restart
// the component that is stuck.
//
// On each node (inside `healer agent`) it reads the shipper's registry
// every Interval: the newest checkpoint (<N>.json, which active.dat names)
// and the operations of log.json after it, as filebeat's own memlog store
// does on start. Each file matched by a rule's glob is then measured:
// its unshipped bytes are its size minus the registry's offset for it,
// found by device and inode ("native" file identity) or, failing that, by
// path. A file smaller than its offset was truncated in place and a file
// at a path the registry has for another inode was rotated; in both cases,
// and for a file the registry does not know, every byte is unshipped, and
// the state says which case it is. How long the oldest unshipped byte has
// waited is estimated from the file's growth seen across measurements (see
// LagMeter): a lower bound, short by at most one Interval, that starts
// from the file's last modification when the detector first sees it.
//
// On the server (inside `healer serve`) it asks Kafka for the lag of the
// configured consumer groups with franz-go's kadm (Lag): end offset minus
// committed offset per partition, summed over the group's topics or the
// configured ones.
//
// A lag fires once per excursion, when it has stayed over its threshold
// for the rule's For duration (default 5m), and resolves at the first
// measurement under it. The firing and the resolved event share their key,
// and their ids derive from the type, the key, the status and the start of
// the excursion, so publishing a transition again stores it once. The
// events are LogShipperLag (subject "node/<node>"), KafkaConsumerLag
// (subject "logpipeline/<group>") and LogShipperRegistryUnreadable.
//
// A registry, a file or a Kafka cluster that cannot be read is not a lag:
// it is logged at warn (when it starts failing or its error changes, and
// at info when it reads again), it is read again at the next measurement,
// and the instances it would have measured keep their state, firing or
// not. A registry that stays unreadable for the shipper's UnreadableFor
// (default 5m) is reported as LogShipperRegistryUnreadable, resolved when
// it reads again, because an agent that cannot see the registry cannot see
// the shipper stall either, and someone should know. A Kafka cluster that
// cannot be reached is only logged: the cluster's own monitoring reports
// it.
//
// The measuring core is pure and table-tested: ReadRegistry, ParseCheckpoint
// and ApplyLog parse the registry; LagMeter turns a registry and file sizes
// into FileLags; SummarizeGroupLag turns kadm's answer into a GroupLag; and
// Evaluator turns rounds of readings, each with its time, into firing and
// resolved transitions.
package logpipeline

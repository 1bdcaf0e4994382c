package logpipeline_test

import (
	"fmt"
	"time"

	"github.com/selfheal/healer/detectors/logpipeline"
)

// Reading a filebeat registry: the newest checkpoint with the log after it.
func ExampleReadRegistry() {
	reg, err := logpipeline.ReadRegistry("testdata/registry/checkpoint-and-log")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("checkpoint", reg.Checkpoint, "last operation", reg.TxID)
	for _, key := range []string{"filebeat::logs::native::1835021-66305", "filebeat::logs::native::1835026-66305"} {
		e := reg.Entries[key]
		fmt.Printf("%s offset %d (inode %d)\n", e.Source, e.Offset, e.Inode)
	}
	// Output:
	// checkpoint 1207.json last operation 1210
	// /var/log/app/api.log offset 3145728 (inode 1835021)
	// /var/log/app/new.log offset 512 (inode 1835026)
}

// Holding readings against a for duration.
func ExampleEvaluator() {
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	e := logpipeline.NewEvaluator[int64]()
	for i, lag := range []int64{5000, 7000, 9000, 200} {
		now := start.Add(time.Duration(i) * 3 * time.Minute)
		readings := []logpipeline.Reading[int64]{{Key: "logpipeline/logstash", Over: lag > 1000, For: 5 * time.Minute, Value: lag}}
		for _, tr := range e.Observe(now, readings) {
			fmt.Println(tr.At.Format("15:04"), tr.Status, tr.Value, "since", tr.Since.Format("15:04"))
		}
	}
	// Output:
	// 03:06 firing 9000 since 03:00
	// 03:09 resolved 200 since 03:00
}

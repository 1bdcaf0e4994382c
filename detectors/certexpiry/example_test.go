package certexpiry_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/selfheal/healer/detectors/certexpiry"
)

// A certificate that expires on a Monday morning: its 1d band would begin
// on Sunday, so it begins on the Friday before.
func ExampleBands_Of() {
	bands := certexpiry.Bands{
		Thresholds: []time.Duration{30 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour},
		Weekend:    certexpiry.WeekendFriday,
	}
	notAfter := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC) // Monday
	for _, now := range []time.Time{
		time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), // Thursday
		time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC),  // Friday
		time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC),  // Monday
	} {
		b := bands.Of(notAfter, now)
		fmt.Println(now.Format("Mon 15:04"), b.Name, "since", b.Since.Format("Mon Jan 2 15:04"))
	}
	// Output:
	// Thu 12:00 7d since Mon Nov 30 09:00
	// Fri 08:00 1d since Fri Dec 4 00:00
	// Mon 09:00 expired since Mon Dec 7 09:00
}

// Rounds of observations in, transitions out: each band fires once, and
// the renewed certificate resolves the location.
func ExampleEvaluator() {
	start := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	e := certexpiry.NewEvaluator(certexpiry.Bands{Thresholds: []time.Duration{30 * 24 * time.Hour, 7 * 24 * time.Hour}})
	loc := certexpiry.Location{Kind: certexpiry.KindFile, Node: "cp-1", Path: "/etc/kubernetes/pki/apiserver.crt"}
	old := certexpiry.Cert{SHA256: "aa", Serial: "1", NotAfter: start.Add(40 * 24 * time.Hour)}
	renewed := certexpiry.Cert{SHA256: "bb", Serial: "2", NotAfter: start.Add(400 * 24 * time.Hour)}
	for _, day := range []int{0, 12, 20, 34, 35} {
		cert := old
		if day == 35 {
			cert = renewed
		}
		now := start.AddDate(0, 0, day)
		for _, tr := range e.Observe(certexpiry.Round{At: now, Certs: []certexpiry.Observation{{Location: loc, Cert: cert}}}) {
			fmt.Println("day", day, tr.Key, strings.TrimSpace(tr.Status+" "+tr.Band.Name+" "+tr.Resolution))
		}
	}
	// Output:
	// day 12 cp-1:file:/etc/kubernetes/pki/apiserver.crt firing 30d
	// day 34 cp-1:file:/etc/kubernetes/pki/apiserver.crt firing 7d
	// day 35 cp-1:file:/etc/kubernetes/pki/apiserver.crt resolved 7d renewed
}

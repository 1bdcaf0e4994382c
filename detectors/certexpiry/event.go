package certexpiry

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/selfheal/healer/bus"
)

// EventSource is the CloudEvents source of events from this detector.
const EventSource = "certexpiry"

// Event types.
const (
	// TypeExpiring is a certificate that entered a band before its expiry.
	TypeExpiring = "CertificateExpiring"
	// TypeExpired is a certificate past its NotAfter.
	TypeExpired = "CertificateExpired"
)

// EventData is the data of every event of this detector: where the
// certificate is, what it is, and how close to its expiry. On a resolved
// event for a renewed certificate it describes the new certificate, and
// Previous the one that fired; on one for a location that is gone, the
// last certificate seen there.
type EventData struct {
	Location
	Cert
	// DaysLeft is the time to NotAfter in days, to one decimal; negative
	// once expired.
	DaysLeft float64 `json:"days_left"`
	// Band is the band entered (firing) or last fired (resolved): "30d",
	// "7d", "1d" or BandExpired.
	Band string `json:"band"`
	// Threshold is the band's threshold as a duration ("168h0m0s"); empty
	// for BandExpired.
	Threshold string `json:"threshold,omitempty"`
	// BandSince is when the certificate entered the band.
	BandSince time.Time `json:"band_since"`
	// ExpiresWeekday is the day of the week of NotAfter in the configured
	// zone, and ExpiresOnWeekend whether it is a Saturday or a Sunday.
	ExpiresWeekday   string `json:"expires_weekday"`
	ExpiresOnWeekend bool   `json:"expires_on_weekend"`
	// UsedBy is the component that uses the certificate, as far as the
	// component table knows ("kube-apiserver"); empty when it does not.
	UsedBy string `json:"used_by,omitempty"`
	// Restart are the components to restart once the certificate is
	// renewed, for the cert.renew remediator; empty when none is known.
	Restart []string `json:"restart"`
	// Resolution is ResolvedRenewed or ResolvedGone on a resolved event.
	Resolution string `json:"resolution,omitempty"`
	// Previous is the certificate that had fired at the location, when
	// another has taken its place.
	Previous *Cert `json:"previous,omitempty"`
}

// EventID is the id of the event for a transition: the same status, key,
// certificate (its SHA-256) and band or resolution always give the same
// id, so a transition found again, also by a restarted detector, is
// stored once.
func EventID(status, key, sha256hex, bandOrResolution string) string {
	h := sha256.New()
	for _, s := range []string{status, key, sha256hex, bandOrResolution} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "ce-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// DaysLeft is the time from now to notAfter in days, to one decimal.
func DaysLeft(notAfter, now time.Time) float64 {
	return math.Round(notAfter.Sub(now).Hours()/24*10) / 10
}

// Event returns the event reporting tr. who says which component uses the
// certificate; bands tell its weekday.
func Event(tr Transition, who Component, bands Bands) (*bus.Event, error) {
	o := tr.Observation
	d := EventData{
		Location:         o.Location,
		Cert:             o.Cert,
		DaysLeft:         DaysLeft(o.Cert.NotAfter, tr.At),
		Band:             tr.Band.Name,
		BandSince:        tr.Band.Since.UTC(),
		ExpiresWeekday:   o.Cert.NotAfter.In(bands.location()).Weekday().String(),
		ExpiresOnWeekend: bands.OnWeekend(o.Cert.NotAfter),
		UsedBy:           who.UsedBy,
		Restart:          who.Restart,
		Resolution:       tr.Resolution,
		Previous:         tr.Previous,
	}
	if d.Restart == nil {
		d.Restart = []string{}
	}
	if tr.Band.Threshold > 0 {
		d.Threshold = tr.Band.Threshold.String()
	}
	typ := TypeExpiring
	if tr.Band.Name == BandExpired {
		typ = TypeExpired
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s event for %s: %w", tr.Status, typ, tr.Key, err)
	}
	id := EventID(tr.Status, tr.Key, o.Cert.SHA256, tr.Band.Name)
	if tr.Status == bus.StatusResolved {
		sha := o.Cert.SHA256
		if tr.Previous != nil {
			sha = tr.Previous.SHA256
		}
		id = EventID(tr.Status, tr.Key, sha, tr.Resolution)
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              id,
		Source:          EventSource,
		Type:            typ,
		Subject:         o.Location.EventSubject(),
		Time:            tr.At.UTC(),
		DataContentType: "application/json",
		Status:          tr.Status,
		Key:             tr.Key,
		Data:            raw,
	}, nil
}

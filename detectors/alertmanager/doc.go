// Package alertmanager is the detector behind POST /webhook/alertmanager.
// It accepts Alertmanager's webhook (version 4), parsed with Alertmanager's
// own types, maps each alert to an event by configuration and publishes the
// events durably to JetStream before answering 200. Event ids are derived
// from the alert's fingerprint, start time and status, so Alertmanager's
// retries and the copies sent by an HA pair collapse into one event.
package alertmanager

package chatops

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is the Slack app healer talks through. Slack is off unless a bot
// token is configured (HEALER_SLACK_BOT_TOKEN or BotTokenFile).
type Config struct {
	// BotTokenFile holds the bot token (xoxb-...); without it the token
	// is read from HEALER_SLACK_BOT_TOKEN.
	BotTokenFile string `json:"botTokenFile"`
	// SigningSecretFile holds the app's signing secret, which every
	// request from Slack is verified with; without it the secret is read
	// from HEALER_SLACK_SIGNING_SECRET.
	SigningSecretFile string `json:"signingSecretFile"`
	// Channel is the channel id approvals and notifications go to.
	Channel string `json:"channel"`
	// APIURL is Slack's Web API; tests point it at a local server.
	APIURL string `json:"apiURL"`
	// ExternalURL is where people reach this healer: the links to the
	// audit page and the runbooks in messages.
	ExternalURL string `json:"externalURL"`
	// NotifyEvery keeps a repeated notice (the same breaker, the budget)
	// to one message per period. Default 10m.
	NotifyEvery time.Duration `json:"notifyEvery"`
	// GroupCacheFor is how long the members of an approver group are
	// remembered. Default 1m.
	GroupCacheFor time.Duration `json:"groupCacheFor"`
}

// DefaultAPIURL is Slack's Web API.
const DefaultAPIURL = "https://slack.com/api/"

// ApplyDefaults fills in unset fields.
func (c *Config) ApplyDefaults() {
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if !strings.HasSuffix(c.APIURL, "/") {
		c.APIURL += "/"
	}
	if c.NotifyEvery == 0 {
		c.NotifyEvery = 10 * time.Minute
	}
	if c.GroupCacheFor == 0 {
		c.GroupCacheFor = time.Minute
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.Channel == "" {
		errs = append(errs, errors.New("slack.channel is required: the channel id approvals are posted to"))
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("slack.apiURL %q: want an http(s) URL", c.APIURL))
	}
	if c.ExternalURL != "" {
		if u, err := url.Parse(c.ExternalURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("slack.externalURL %q: want an http(s) URL", c.ExternalURL))
		}
	}
	if c.NotifyEvery < 0 || c.GroupCacheFor < 0 {
		errs = append(errs, errors.New("slack.notifyEvery and slack.groupCacheFor must not be negative"))
	}
	return errors.Join(errs...)
}

// Secrets are the Slack app's credentials. They are never logged.
type Secrets struct {
	BotToken      string
	SigningSecret string
}

// Validate reports missing credentials.
func (s Secrets) Validate() error {
	var errs []error
	if s.BotToken == "" {
		errs = append(errs, errors.New("slack: no bot token (HEALER_SLACK_BOT_TOKEN or slack.botTokenFile)"))
	}
	if s.SigningSecret == "" {
		errs = append(errs, errors.New("slack: no signing secret (HEALER_SLACK_SIGNING_SECRET or slack.signingSecretFile): requests from Slack could not be verified"))
	}
	return errors.Join(errs...)
}

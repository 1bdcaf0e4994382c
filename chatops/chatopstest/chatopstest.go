// Package chatopstest is a Slack for tests: slacktest's server with the
// Web API methods healer calls recorded, and requests signed exactly as
// Slack signs them.
package chatopstest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"
)

// Slack is slacktest's server recording chat.postMessage, chat.update and
// chat.postEphemeral, and answering usergroups.users.list from Groups.
type Slack struct {
	srv *slacktest.Server

	mu        sync.Mutex
	posted    []url.Values
	updated   []url.Values
	ephemeral []url.Values
	next      int
	groups    map[string][]string
}

// Start starts the server; it stops when the test ends. groups maps user
// group ids to their members.
func Start(tb testing.TB, groups map[string][]string) *Slack {
	tb.Helper()
	f := &Slack{groups: groups}
	f.srv = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", f.record(&f.posted, func(v url.Values, ts string) any {
			return map[string]any{"ok": true, "channel": v.Get("channel"), "ts": ts}
		}))
		c.Handle("/chat.update", f.record(&f.updated, func(v url.Values, _ string) any {
			return map[string]any{"ok": true, "channel": v.Get("channel"), "ts": v.Get("ts")}
		}))
		c.Handle("/chat.postEphemeral", f.record(&f.ephemeral, func(_ url.Values, ts string) any {
			return map[string]any{"ok": true, "message_ts": ts}
		}))
		c.Handle("/usergroups.users.list", func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			users := f.groups[r.Form.Get("usergroup")]
			if users == nil {
				users = []string{}
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "users": users})
		})
	})
	f.srv.Start()
	tb.Cleanup(f.srv.Stop)
	return f
}

func (f *Slack) record(list *[]url.Values, reply func(url.Values, string) any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		f.mu.Lock()
		*list = append(*list, v)
		f.next++
		ts := strconv.Itoa(1700000000+f.next) + ".000100"
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(reply(v, ts))
	}
}

// APIURL is the Web API URL to configure healer with.
func (f *Slack) APIURL() string { return f.srv.GetAPIURL() }

// Posted, Updated and Ephemeral return the calls so far, in order.
func (f *Slack) Posted() []url.Values    { return f.snapshot(&f.posted) }
func (f *Slack) Updated() []url.Values   { return f.snapshot(&f.updated) }
func (f *Slack) Ephemeral() []url.Values { return f.snapshot(&f.ephemeral) }

func (f *Slack) snapshot(list *[]url.Values) []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), *list...)
}

// Sign sets Slack's v0 signature headers on r for body at ts.
func Sign(r *http.Request, body string, ts time.Time, secret string) {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + stamp + ":" + body))
	r.Header.Set("X-Slack-Request-Timestamp", stamp)
	r.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
}

// Click is the form body Slack posts when user presses a button (actionID,
// value) on a message in channel.
func Click(user, channel, actionID, value string) string {
	payload, _ := json.Marshal(map[string]any{
		"type":    "block_actions",
		"user":    map[string]any{"id": user, "username": strings.ToLower(user)},
		"channel": map[string]any{"id": channel},
		"message": map[string]any{"ts": "1700000001.000100"},
		"actions": []map[string]any{{"action_id": actionID, "block_id": "healer_vote", "value": value, "type": "button"}},
	})
	return url.Values{"payload": {string(payload)}}.Encode()
}

// Command is the form body of user running "/healer text" in channel.
func Command(user, channel, text string) string {
	return url.Values{"command": {"/healer"}, "text": {text}, "user_id": {user}, "user_name": {strings.ToLower(user)}, "channel_id": {channel}}.Encode()
}

// ButtonValue returns the value of the button actionID in the blocks of a
// posted message, or "".
func ButtonValue(blocks, actionID string) string {
	var bs []map[string]any
	if json.Unmarshal([]byte(blocks), &bs) != nil {
		return ""
	}
	for _, b := range bs {
		els, _ := b["elements"].([]any)
		for _, e := range els {
			m, _ := e.(map[string]any)
			if m["action_id"] == actionID {
				v, _ := m["value"].(string)
				return v
			}
		}
	}
	return ""
}

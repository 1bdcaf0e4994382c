// Package chatops is healer's Slack app: approvals, the /healer command and
// notices.
//
// An approval request (engine/approval) is posted to the configured
// channel as a Block Kit message: what will be done, to which target, why
// (the policy rule and reason), the blast-radius state, the runbook and
// Approve / Deny buttons. The buttons carry the request id and the digest
// of the action, so a vote counts only for the action it was shown. The
// message is rewritten with each vote, the outcome and then each step of
// the action, read from the audit trail.
//
// Text healer did not write (alert labels and annotations, policy reasons,
// error messages, what a user typed) is escaped before it is posted: & < >
// become entities and a backtick inside a code span is shown as ˋ, and each
// field is cut to a length, so that an alert cannot ping the channel, forge
// a link or a mention, or make Slack refuse the message for its size.
//
// Every request from Slack (InteractionsPath, CommandsPath) is verified
// before it is read: Slack's v0 signature with the app's signing secret, a
// timestamp at most 5 minutes old, and a signature not served before by
// any replica (a NATS KV bucket with a 10-minute TTL).
//
// Notices: a circuit breaker opening and the blast-radius budget running
// out are posted with their runbook link, at most once per NotifyEvery for
// the same remediator.
package chatops

// Package approval holds actions back until people approve them.
//
// When a policy decision says approval "one" or "two", the engine asks the
// Broker. The broker stores a Request in the NATS KV bucket
// healer_approvals, keyed by an id derived from the action's idempotency
// key, so a redelivered event (on any replica) waits on the votes already
// given rather than asking again. A Notifier (Slack) shows the request;
// votes arrive through Decide from Slack, the CLI or the web page, on any
// replica, and the waiting engine sees them through a watch on the key.
//
// The rules are the same whatever the channel:
//   - only configured approvers count (by name, by Slack user id, or as a
//     member of a configured Slack user group);
//   - "two" needs two different people, and the requester of an action
//     never approves it;
//   - a vote carries the digest of the action it was shown (event, target,
//     remediator, params) and counts only for that exact action;
//   - a request expires (default 15 minutes): the action is then
//     suppressed, as it is when anyone denies it.
//
// Every vote, the request itself and its expiry are audit records of kind
// "approval"; the engine's own approval record follows with the outcome.
package approval

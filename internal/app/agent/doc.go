// Package agent is `healer agent`, the part of healer that runs on every
// node. It connects to NATS as the node's own user, whose permissions
// confine it to healer.agent.<node>.* (bus.AgentPermissions); answers action
// requests on healer.agent.<node>.act with a fixed set of verbs, each
// checking its parameters against agentparam's allow-lists before any of
// them reaches a path, a unit or a command line (there is no free-form
// command; FuzzAgentVerbParams checks that no verb touches anything outside
// its configured directories); and sends the events its node-local
// detectors find to healer.agent.<node>.events. There serve
// (bus.RelayAgentEvents) checks each is about this node, from one of those
// detectors (EventSources) and keyed by this node, and stores it in
// HEALER_EVENTS under "<node>/<id>".
//
// Requests are idempotent by action id: a retried request that is still
// running waits for the first, and one that finished gets the same reply.
// The agent acknowledges a request at once with a progress message, then
// sends the action's progress and its reply to the requester's inbox. NATS
// disconnects are ridden out: the client reconnects without limit and its
// subscriptions resume.
package agent

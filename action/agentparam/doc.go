// Package agentparam checks the parameters of the node agents' verbs
// before any of them reaches a file name, a path, a systemd unit or a
// process. Every check is an allow-list: an action id or a member name is
// letters, digits, '.', '_' and '-' (never ".."), a component or
// certificate name is the lower-case form of that, a unit name follows
// systemd's rules, a path is absolute and already clean, and a URL is an
// http(s) host and port with nothing else.
//
// A value that fails is an *Error naming the parameter and the value
// (quoted, and cut short when long). It wraps action.ErrInvalidParams, so
// the agent answers invalid_params and the engine does not retry: the same
// request can never succeed.
package agentparam

package restart_test

import (
	"context"
	"errors"
	"testing"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/remediators/restart"
)

func TestRemediatorValidate(t *testing.T) {
	r := restart.New(nil, discard())
	for _, tc := range []struct {
		name   string
		params map[string]any
		ok     bool
	}{
		{"component", map[string]any{"component": "kubelet"}, true},
		{"with flags", map[string]any{"component": "containerd", "only_if_unhealthy": true, "timeout": "2m"}, true},
		{"missing", map[string]any{}, false},
		{"shell in name", map[string]any{"component": "kubelet && reboot"}, false},
		{"unknown param", map[string]any{"component": "kubelet", "command": "reboot"}, false},
		{"timeout too long", map[string]any{"component": "kubelet", "timeout": "2h"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Validate(tc.params)
			if tc.ok != (err == nil) {
				t.Fatalf("Validate(%v) = %v", tc.params, err)
			}
			if err != nil && !errors.Is(err, action.ErrInvalidParams) {
				t.Fatalf("error %v does not wrap ErrInvalidParams", err)
			}
		})
	}
}

type deadAgents struct{}

func (deadAgents) CallProgress(context.Context, action.NodeRequest, action.Progress) (action.Result, error) {
	return action.Result{}, action.ErrAgentUnreachable
}

func TestRemediatorFailsClosed(t *testing.T) {
	req := action.Request{ID: "a", Target: "node/worker-1", Params: map[string]any{"component": "kubelet"}}
	for name, r := range map[string]*restart.Remediator{
		"no transport":      restart.New(nil, discard()),
		"agent unreachable": restart.New(deadAgents{}, discard()),
	} {
		t.Run(name, func(t *testing.T) {
			if err := r.Check(t.Context(), req); !errors.Is(err, action.ErrUnsafe) {
				t.Fatalf("Check = %v, want ErrUnsafe", err)
			}
		})
	}
	if err := restart.New(deadAgents{}, discard()).Check(t.Context(), action.Request{Target: "etcd/member-1", Params: map[string]any{"component": "kubelet"}}); !errors.Is(err, action.ErrUnsafe) {
		t.Fatalf("Check on a non-node target = %v, want ErrUnsafe", err)
	}
}

package policies

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecisionValidate(t *testing.T) {
	limit := &RateLimit{Key: "k", Max: 1, Per: time.Minute}
	tests := []struct {
		name         string
		d            Decision
		wantErr      string
		wantApproval string
	}{
		{name: "do nothing", d: Decision{Reason: "r"}, wantApproval: ApprovalNone},
		{name: "full", d: Decision{Remediator: "x", Approval: ApprovalTwo, RateLimit: limit, RateLimits: []RateLimit{*limit}, Reason: "r"}, wantApproval: ApprovalTwo},
		{name: "approval one", d: Decision{Approval: ApprovalOne, Reason: "r"}, wantApproval: ApprovalOne},
		{name: "bad approval", d: Decision{Approval: "all", Reason: "r"}, wantErr: `approval "all"`},
		{name: "no reason", d: Decision{Remediator: "x"}, wantErr: "reason: missing"},
		{name: "bad rate_limit", d: Decision{RateLimit: &RateLimit{Max: 1, Per: time.Second}, Reason: "r"}, wantErr: "rate_limit: rate limit \"\": key: missing"},
		{name: "negative per", d: Decision{RateLimits: []RateLimit{*limit, {Key: "k", Max: 1, Per: -time.Second}}, Reason: "r"}, wantErr: "rate_limits[1]: rate limit \"k\": per -1s"},
		{name: "negative max", d: Decision{RateLimits: []RateLimit{{Key: "k", Max: -1, Per: time.Second}}, Reason: "r"}, wantErr: "max -1"},
		{name: "all problems reported", d: Decision{Remediator: "x", Approval: "?"}, wantErr: "approval \"?\": want \"none\", \"one\" or \"two\"\nreason: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tt.d.Approval != tt.wantApproval {
				t.Errorf("Approval = %q after Validate, want %q", tt.d.Approval, tt.wantApproval)
			}
		})
	}
}

func TestDecisionLimits(t *testing.T) {
	a := RateLimit{Key: "a", Max: 1, Per: time.Minute}
	b := RateLimit{Key: "b", Max: 2, Per: time.Hour}
	c := RateLimit{Key: "c", Max: 3, Per: time.Second}
	tests := []struct {
		name string
		d    Decision
		want []RateLimit
	}{
		{"none", Decision{}, []RateLimit{}},
		{"rate_limit only", Decision{RateLimit: &a}, []RateLimit{a}},
		{"rate_limits only", Decision{RateLimits: []RateLimit{b, c}}, []RateLimit{b, c}},
		{"rate_limit first", Decision{RateLimit: &a, RateLimits: []RateLimit{b, c}}, []RateLimit{a, b, c}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.Limits(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Limits = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRateLimitJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    RateLimit
		wantErr string
		out     string // marshalled again; "" means the same as in
	}{
		{name: "minutes", in: `{"key":"k","max":1,"per":"10m"}`, want: RateLimit{Key: "k", Max: 1, Per: 10 * time.Minute}},
		{name: "hours and minutes", in: `{"key":"k","max":3,"per":"1h30m"}`, want: RateLimit{Key: "k", Max: 3, Per: 90 * time.Minute}},
		{name: "hours", in: `{"key":"k","max":3,"per":"2h"}`, want: RateLimit{Key: "k", Max: 3, Per: 2 * time.Hour}},
		{name: "seconds as a number", in: `{"key":"k","max":1,"per":90}`, want: RateLimit{Key: "k", Max: 1, Per: 90 * time.Second}, out: `{"key":"k","max":1,"per":"1m30s"}`},
		{name: "sub-second", in: `{"key":"k","max":1,"per":"1.5s"}`, want: RateLimit{Key: "k", Max: 1, Per: 1500 * time.Millisecond}},
		{name: "no per", in: `{"key":"k","max":1}`, want: RateLimit{Key: "k", Max: 1}, out: `{"key":"k","max":1,"per":"0s"}`},
		{name: "bad duration", in: `{"key":"k","max":1,"per":"soon"}`, wantErr: `rate limit "k": per: time: invalid duration "soon"`},
		{name: "fractional seconds", in: `{"key":"k","max":1,"per":1.5}`, wantErr: "1.5: want a duration string or a whole number of seconds"},
		{name: "huge seconds", in: `{"key":"k","max":1,"per":99999999999999}`, wantErr: "out of range"},
		{name: "per not a duration", in: `{"key":"k","max":1,"per":true}`, wantErr: "want a duration string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got RateLimit
			err := json.Unmarshal([]byte(tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Unmarshal = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Unmarshal = %+v, want %+v", got, tt.want)
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			out := tt.out
			if out == "" {
				out = tt.in
			}
			if string(b) != out {
				t.Errorf("Marshal = %s, want %s", b, out)
			}
		})
	}
}

func TestDecisionJSON(t *testing.T) {
	d := Decision{
		Remediator: "node.cordon", Params: map[string]any{"reason": "X"}, Approval: ApprovalNone,
		RateLimit:  &RateLimit{Key: "node.cordon:node/a", Max: 1, Per: 10 * time.Minute},
		RateLimits: []RateLimit{{Key: "node.cordon:cluster", Max: 3, Per: time.Hour}},
		Reason:     "because", Rule: "r",
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"remediator":"node.cordon","params":{"reason":"X"},"approval":"none",` +
		`"rate_limit":{"key":"node.cordon:node/a","max":1,"per":"10m"},` +
		`"rate_limits":[{"key":"node.cordon:cluster","max":3,"per":"1h"}],"reason":"because","rule":"r"}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("round trip = %+v, want %+v", back, d)
	}
}

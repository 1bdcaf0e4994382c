package etcdmember

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

func lostTransitions(t *testing.T) (firing, resolved Transition) {
	t.Helper()
	e := NewEvaluator("prod", time.Minute)
	members := []Member{up(1, 1), down(0x8e9e05c52164694d), up(3, 1), up(4, 1), up(5, 1)}
	e.Observe(Snapshot{Time: t0, Members: members, AlarmsKnown: true})
	trs := e.Observe(Snapshot{Time: t0.Add(time.Minute), Members: members, AlarmsKnown: true})
	if len(trs) != 1 {
		t.Fatalf("got %d transitions, want one", len(trs))
	}
	members[1] = up(0x8e9e05c52164694d, 1)
	back := e.Observe(Snapshot{Time: t0.Add(2 * time.Minute), Members: members, AlarmsKnown: true})
	if len(back) != 1 {
		t.Fatalf("got %d transitions, want one", len(back))
	}
	return trs[0], back[0]
}

func TestEvent(t *testing.T) {
	firing, resolved := lostTransitions(t)
	e, err := firing.Event()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("event does not validate: %v", err)
	}
	if e.Source != EventSource || e.Type != TypeMemberLost || e.Status != bus.StatusFiring ||
		e.Subject != "etcd/m10276657743932975437" || e.Key != "prod/8e9e05c52164694d:lost" || !e.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("event = %+v", e)
	}
	var data map[string]any
	if err := json.Unmarshal(e.Data, &data); err != nil {
		t.Fatal(err)
	}
	member, _ := data["member"].(map[string]any)
	quorum, _ := data["quorum"].(map[string]any)
	if member["id"] != "8e9e05c52164694d" || member["is_learner"] != false || member["peer_urls"] == nil || member["client_urls"] == nil {
		t.Errorf("data.member = %v", member)
	}
	for _, k := range []string{"voters", "healthy_voters", "learners", "quorum", "leader_id", "leader_name"} {
		if _, ok := quorum[k]; !ok {
			t.Errorf("data.quorum has no %s: %v", k, quorum)
		}
	}
	if quorum["leader_id"] != "1" || quorum["healthy_voters"] != 4.0 {
		t.Errorf("data.quorum = %v", quorum)
	}
	var back EventData
	if err := json.Unmarshal(e.Data, &back); err != nil || back.Member.ID != 0x8e9e05c52164694d {
		t.Errorf("decoded member id %v, err %v", back.Member, err)
	}

	again, _ := firing.Event()
	r, _ := resolved.Event()
	if again.ID != e.ID || !strings.HasPrefix(e.ID, "em-") {
		t.Errorf("ids %s and %s for the same transition", e.ID, again.ID)
	}
	if r.ID == e.ID || r.Key != e.Key {
		t.Errorf("resolved id %s key %s; firing id %s key %s", r.ID, r.Key, e.ID, e.Key)
	}
	other := firing
	other.Data.Since = other.Data.Since.Add(time.Second)
	if EventID(&other) == e.ID {
		t.Error("another outage of the member has the same id")
	}
	a := Transition{Type: TypeLeaderChanged, Status: bus.StatusFiring, Key: "prod:leader", Data: EventData{Cluster: "prod", PreviousLeaderID: 1, Quorum: Quorum{LeaderID: 2, RaftTerm: 5}}}
	b := a
	b.Data.Quorum.LeaderID = 3
	if EventID(&a) == EventID(&b) {
		t.Error("two leader changes have the same id")
	}
	seenLater := a
	seenLater.Data.Since, seenLater.At = t0.Add(time.Hour), t0.Add(time.Hour)
	if EventID(&a) != EventID(&seenLater) {
		t.Error("one leader change seen at two times has two ids")
	}
}

func TestMemberIDText(t *testing.T) {
	var id MemberID
	if err := id.UnmarshalText([]byte("8e9e05c52164694d")); err != nil || id != 0x8e9e05c52164694d || id.String() != "8e9e05c52164694d" {
		t.Errorf("round trip: %s, %v", id, err)
	}
	if err := id.UnmarshalText([]byte("xyz")); err == nil {
		t.Error("UnmarshalText(xyz) succeeded")
	}
}

// A publish that fails is retried until it is stored, with the same id.
func TestReportRetries(t *testing.T) {
	firing, _ := lostTransitions(t)
	rec := newRecorder()
	rec.failFirst = 2
	d, err := New(Config{Endpoints: []string{"http://127.0.0.1:2379"}}, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !d.report(t.Context(), []Transition{firing}) {
		t.Fatal("report gave up")
	}
	evs := rec.Events()
	want, _ := firing.Event()
	if rec.calls != 3 || len(evs) != 1 || evs[0].ID != want.ID {
		t.Errorf("%d calls, events %v; want 3 calls and one event %s", rec.calls, evs, want.ID)
	}
}

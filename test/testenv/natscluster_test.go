package testenv

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSCluster: a stream replicated on all three servers keeps taking
// and serving messages when its leader is moved, stopped and started
// again, and the restarted server catches up.
func TestNATSCluster(t *testing.T) {
	ctx := t.Context()
	c := StartNATSCluster(t, 3)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatalf("create stream of 3 replicas: %v", err)
	}
	// publish sends n messages, each again (with the same message id)
	// until it is acknowledged, as a client does while the stream elects a
	// leader.
	sent := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			sent++
			deadline := time.Now().Add(30 * time.Second)
			for {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "t.x", []byte("x"), jetstream.WithMsgID(strconv.Itoa(sent)))
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("publish: %v", err)
				}
			}
		}
	}
	publish(10)

	leader := c.StreamLeader("T")
	if !slices.Contains(c.Names(), leader) {
		t.Fatalf("stream leader %q is not one of %v", leader, c.Names())
	}
	to := c.Names()[0]
	if to == leader {
		to = c.Names()[1]
	}
	c.MoveStreamLeader("T", to)
	if got := c.StreamLeader("T"); got != to {
		t.Fatalf("leader %q after the move, want %q", got, to)
	}

	c.Stop(to)
	if c.Server(to) != nil {
		t.Fatalf("%s still runs after Stop", to)
	}
	stopped := time.Now()
	publish(10) // the two others elect a leader and take it
	t.Logf("the stream took messages again %s after its leader stopped", time.Since(stopped).Round(time.Millisecond))
	if l := c.StreamLeader("T"); l == "" || l == to {
		t.Fatalf("leader after %s stopped: %q", to, l)
	}
	c.Start(to)
	// The restarted server soon holds every message in its own store, and
	// the leader counts it as a current replica again.
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		local := uint64(0)
		acc, err := c.Server(to).JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
		if err != nil {
			t.Fatalf("jsz of %s: %v", to, err)
		}
		for _, sd := range acc.Streams {
			if sd.Name == "T" {
				local = sd.State.Msgs
			}
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		current := 0
		for _, p := range info.Cluster.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
		if local == 20 && current == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after %s came back it holds %d of 20 messages; replicas %+v", to, local, info.Cluster.Replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package vip_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vishvananda/netns"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/remediators/vip"
)

// The agent on a master runs a Keeper and registers its verbs. The Keeper
// binds to the bucket serve created when it first needs it; it never
// creates it, and it may be built before NATS is reachable.
func ExampleNewKeeper() {
	ctx, log := context.TODO(), slog.Default()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	addrs, err := vip.NewNetlinkAddresses(netns.None())
	if err != nil {
		return
	}
	defer addrs.Close()
	k, err := vip.NewKeeper(vip.Config{
		Node: "master-1",
		VIPs: []vip.VIPConfig{{Address: "10.10.0.100/24", Interface: "eth0"}},
	}, js, addrs, log)
	if err != nil {
		return
	}
	verbs := map[string]action.NodeVerb{}
	for _, v := range k.Verbs() {
		verbs[v.Name()] = v // vip.acquire, vip.release, vip.status
	}
	_ = k.Run(ctx) // until ctx ends; then the addresses go
}

// Serve creates the bucket, runs the watcher that turns lapsed leases into
// VIPHolderLost events, and builds vip.float for the remediator set.
func ExampleNewFloat() {
	ctx, log := context.TODO(), slog.Default()
	var (
		js     jetstream.JetStream // serve's JetStream
		caller action.NodeCaller   // the NATS request/reply transport to the agents
	)
	kv, err := vip.EnsureBucket(ctx, js, 1)
	if err != nil {
		return
	}
	go func() { _ = vip.NewWatcher(kv, bus.NewPublisher(js, 5*time.Second), log).Run(ctx) }()
	float, err := vip.NewFloat(kv, caller, log, vip.FloatConfig{
		VIPs: []vip.FloatVIP{{Address: "10.10.0.100", Candidates: []string{"master-1", "master-2", "master-3"}}},
	})
	if err != nil {
		return
	}
	_ = float.Info().Name // "vip.float"
}

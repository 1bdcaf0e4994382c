// Package bustest starts real embedded JetStream servers for tests.
package bustest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// Server is an embedded JetStream server and a client connected to it.
type Server struct {
	NS *server.Server
	NC *nats.Conn
	JS jetstream.JetStream
}

// Start starts an embedded JetStream server storing in a temporary
// directory and connects to it. Both are closed when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: tb.TempDir()}, nil)
	if err != nil {
		tb.Fatalf("start embedded nats: %v", err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	s := &Server{NS: ns}
	s.NC, s.JS = s.Connect(tb)
	return s
}

// Connect opens another client connection, closed when the test ends.
func (s *Server) Connect(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(s.NS.ClientURL())
	if err != nil {
		tb.Fatalf("connect to nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Streams creates healer's streams with their default settings.
func (s *Server) Streams(tb testing.TB) *bus.Streams {
	tb.Helper()
	var sc bus.StreamsConfig
	sc.ApplyDefaults()
	streams, err := bus.EnsureStreams(tb.Context(), s.JS, sc)
	if err != nil {
		tb.Fatalf("ensure streams: %v", err)
	}
	return streams
}

// KV creates a bucket healer uses.
func (s *Server) KV(tb testing.TB, b bus.KV) jetstream.KeyValue {
	tb.Helper()
	kv, err := bus.EnsureKV(tb.Context(), s.JS, b)
	if err != nil {
		tb.Fatal(err)
	}
	return kv
}

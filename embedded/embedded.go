// Package embedded runs a NATS server inside the host process.
//
// The default server has no network listener: clients reach it through an
// in-process pipe (nats.InProcessServer), so an app gets a message broker
// without a port to open or a service to run. It never installs signal
// handlers, and it logs through the host's slog.Logger.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configures an embedded server. The zero value is an in-process
// server with no listener.
type Options struct {
	// Name identifies the server in logs and in a cluster. Default: a random
	// id chosen by nats-server.
	Name string

	// Host and Port open a client listener, needed only when processes
	// outside this one must reach the server (e.g. another instance's
	// broker). Leave Host empty for no listener. Port -1 picks a free port.
	// There is no default to all interfaces: pass "0.0.0.0" explicitly.
	Host string
	Port int

	// Logger receives the server's logs. nats-server's notices, which are
	// start-up chatter, are logged at Debug level. Default: no logging.
	Logger *slog.Logger

	// Cluster joins the server to other NATS servers as one cluster
	// (routes): every instance of an app can embed a node. nats-server
	// starts no routes without a client listener, so Host must be set too.
	Cluster *Cluster

	// LeafRemotes connects the server as a leaf node to existing NATS
	// servers ("nats-leaf://host:7422"): the app's instances join a cluster
	// run by ops, with no listener of their own.
	LeafRemotes []string

	// JetStream enables persistence (the broker's room history). Its files go
	// to StoreDir; without one, to a private temporary folder removed on
	// Shutdown (memory streams write nothing there).
	JetStream bool
	StoreDir  string
	// SyncAlways makes the file store fsync every write before JetStream
	// acknowledges it (nats-server's sync_interval: always), so that an
	// acknowledged message survives an OS crash or a power loss of this
	// node, at a cost measured in BENCHMARKS.md. Without it the store
	// flushes to the OS at once and fsyncs every two minutes: a killed
	// process loses nothing acknowledged, a crashed machine may.
	SyncAlways bool

	// ReadyTimeout bounds start-up. Default 10s.
	ReadyTimeout time.Duration

	// Configure, if set, is called with the nats-server options just before
	// the server is created: the escape hatch for settings this package does
	// not name (TLS, authorization, limits). It must not undo NoSigs.
	Configure func(*server.Options)
}

// Cluster configures routes between embedded servers.
type Cluster struct {
	Name string // the same on every node
	// Host and Port of the route listener; Port -1 picks a free port. There
	// is no default to all interfaces.
	Host string
	Port int
	// Routes are other nodes' route URLs ("nats-route://host:6222"); one
	// seed is enough, the cluster gossips the rest.
	Routes             []string
	Username, Password string
}

// tempDirPrefix names the temporary store directories; one left by a
// killed process is removed by the next Start on the machine.
const tempDirPrefix = "roomcast-nats-"

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	tempDir string   // removed on Shutdown
	lock    *os.File // held on tempDir's lock file while the server runs
}

// Start starts a server and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	so := &server.Options{
		ServerName: opts.Name,
		NoSigs:     true,
		NoLog:      opts.Logger == nil,
	}
	if opts.Host == "" {
		so.DontListen = true
	} else {
		so.Host, so.Port = opts.Host, opts.Port
		if so.Port == 0 {
			so.Port = -1 // 0 means 4222 to nats-server; a library must not squat it
		}
	}
	if c := opts.Cluster; c != nil {
		if opts.Host == "" || c.Host == "" || c.Name == "" {
			return nil, errors.New("embedded nats: a cluster node needs Name, Cluster.Host and a client listener (Host)")
		}
		port := c.Port
		if port == 0 {
			port = -1
		}
		so.Cluster = server.ClusterOpts{Name: c.Name, Host: c.Host, Port: port, Username: c.Username, Password: c.Password}
		if len(c.Routes) > 0 { // none: this node only accepts routes
			so.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
		}
	}
	if len(opts.LeafRemotes) > 0 {
		var urls []*url.URL
		for _, r := range opts.LeafRemotes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embedded nats: leaf remote %q: %w", r, err)
			}
			urls = append(urls, u)
		}
		so.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: urls}}
	}
	var tempDir string
	var lock *os.File // held while the server runs: its temporary store is in use
	if opts.JetStream {
		so.JetStream = true
		so.StoreDir = opts.StoreDir
		so.SyncAlways = opts.SyncAlways
		if so.StoreDir == "" {
			removeStaleTempDirs()
			var err error
			if tempDir, err = os.MkdirTemp("", tempDirPrefix); err != nil {
				return nil, fmt.Errorf("embedded nats: %w", err)
			}
			if lock, err = claimTempDir(tempDir); err != nil {
				os.RemoveAll(tempDir)
				return nil, fmt.Errorf("embedded nats: %w", err)
			}
			so.StoreDir = tempDir
		}
	}
	if opts.Configure != nil {
		opts.Configure(so)
		so.NoSigs = true
	}
	ns, err := server.NewServer(so)
	if err != nil {
		if tempDir != "" {
			os.RemoveAll(tempDir)
			lock.Close()
		}
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if opts.Logger != nil {
		ns.SetLogger(newServerLog(opts.Logger), opts.Logger.Enabled(context.Background(), slog.LevelDebug), false)
	}
	go ns.Start()
	timeout := opts.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if !ns.ReadyForConnections(timeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		if tempDir != "" {
			os.RemoveAll(tempDir)
			lock.Close()
		}
		return nil, errors.New("embedded nats: not ready in time")
	}
	return &Server{ns: ns, tempDir: tempDir, lock: lock}, nil
}

// Connect returns a client connection over an in-process pipe.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(s.ns)}, opts...)...)
}

// ClientURL returns the URL of the client listener, or "" when there is none.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// RouteURL returns the URL other nodes use to join this one's cluster, or
// "" when it is not a cluster node.
func (s *Server) RouteURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// NATS returns the underlying nats-server, for monitoring and tests.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until all of its goroutines are done.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
	if s.lock != nil {
		s.lock.Close()
	}
}

// StoreDir is the directory of the server's JetStream files ("" without
// JetStream).
func (s *Server) StoreDir() string {
	if s.ns.JetStreamConfig() == nil {
		return ""
	}
	return s.ns.StoreDir()
}

// StoreFree reports the bytes free on the disk of the JetStream store
// directory; ok is false where that cannot be known.
func (s *Server) StoreFree() (free uint64, ok bool) {
	dir := s.StoreDir()
	if dir == "" {
		return 0, false
	}
	return diskFree(dir)
}

// RestartJetStream stops and starts JetStream on this server, which loads
// every stream again from the store directory, with limits computed from
// the space free now. It is the way out of the state nats-server puts a
// file stream in when a write failed (a full disk): the stream keeps
// refusing writes after space is freed, until JetStream restarts. Not for
// a clustered JetStream, whose nodes recover by restarting.
func (s *Server) RestartJetStream() error {
	old := s.ns.JetStreamConfig()
	if old == nil {
		return errors.New("embedded nats: JetStream is not enabled")
	}
	if s.ns.JetStreamIsClustered() {
		return errors.New("embedded nats: JetStream is clustered: restart the node instead")
	}
	if err := s.ns.ShutdownJetStream(); err != nil {
		return fmt.Errorf("embedded nats: stopping JetStream: %w", err)
	}
	// A new value: the server keeps the one it is given, and a limit
	// left from the old one would not fit the disk as it is now.
	cfg := &server.JetStreamConfig{StoreDir: old.StoreDir, Domain: old.Domain, SyncInterval: old.SyncInterval, SyncAlways: old.SyncAlways,
		MaxMemory: old.MaxMemory, CompressOK: old.CompressOK, UniqueTag: old.UniqueTag, Strict: old.Strict}
	if err := s.ns.EnableJetStream(cfg); err != nil {
		return fmt.Errorf("embedded nats: starting JetStream again: %w", err)
	}
	return nil
}

// Healthy reports whether the server's JetStream is current: enabled, and,
// in a cluster, in touch with its metadata leader and with its streams'
// leaders (nats-server's own /healthz check). A node cut off from the
// majority of its cluster is not.
func (s *Server) Healthy() error {
	hs := s.ns.Healthz(&server.HealthzOptions{})
	if hs == nil || hs.Status == "ok" {
		return nil
	}
	if hs.Error != "" {
		return errors.New("embedded nats: " + hs.Error)
	}
	return fmt.Errorf("embedded nats: health %s", hs.Status)
}

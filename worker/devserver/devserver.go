// Package devserver runs a real Temporal server, with SQLite persistence and the Temporal Web
// UI, inside the calling process: the same thing `temporal server start-dev` gives, for
// optout-sync's one-command demo and for integration tests that need a real server.
//
// The wiring follows the temporal CLI (github.com/temporalio/cli v1.5.1, package
// temporalcli/devserver) and the server's own go.temporal.io/server/temporaltest, re-done here
// rather than imported: the CLI module pins versions that do not match ours, and temporaltest
// hides its SQLite wiring in an internal package and offers no UI.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/metrics"
	persistencesql "go.temporal.io/server/common/persistence/sql"
	"go.temporal.io/server/common/persistence/sql/sqlplugin"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/resolver"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
)

const (
	// DefaultNamespace is the namespace registered when Options.Namespace is empty.
	DefaultNamespace = "default"
	// DBFileName is the SQLite file kept inside Options.DataDir.
	DBFileName = "temporal.db"

	// clusterName is the single local cluster's name; "active" is what the CLI and
	// temporaltest use, and a file DB remembers it, so it must never change.
	clusterName = "active"
	// loopback is where the internal services (history, matching, worker) and the membership
	// ring listen: they are never meant to be reached from another machine.
	loopback = "127.0.0.1"
)

// Options configures Start. The zero value is an in-memory server, with its UI, on free
// loopback ports: what tests want.
type Options struct {
	// DataDir holds the SQLite database (DBFileName) so that runs, schedules, namespaces and
	// search attributes survive a restart. "" keeps everything in memory, gone on Stop.
	// One server at a time: Start on a DataDir another running server holds fails (a flock
	// on DBFileName+".lock", released when the process ends, even by a crash).
	DataDir string
	// IP is the address the frontend and the UI listen on. Default 127.0.0.1.
	IP string
	// FrontendPort is the gRPC port of the frontend (where SDK clients and workers connect).
	// 0 picks a free port; the demo uses 7233, Temporal's usual port.
	FrontendPort int
	// UIPort is the Web UI's HTTP port. 0 picks a free port, -1 runs no UI; the demo uses
	// 8233, the port `temporal server start-dev` uses.
	UIPort int
	// CodecEndpoint, when set, is the codec server the Web UI decodes payloads through
	// (its "codec.endpoint" setting); the server must allow the UI's origin.
	CodecEndpoint string
	// Namespace is registered before the server starts. Default "default".
	Namespace string
	// SearchAttributes are custom search attributes to register in Namespace (the
	// product's own, which its workflows package defines). Registration is idempotent; a name that already exists
	// with another type is an error. SQLite visibility has a fixed number of columns per
	// type (e.g. 10 Keyword), so only that many of each type fit in a namespace.
	SearchAttributes map[string]enumspb.IndexedValueType
	// Retention is how long closed workflow runs are kept in Namespace (at least a day,
	// the server's minimum). 0 leaves it as it is: 24h on a new DB. Applied on every start,
	// so a changed value takes effect on an existing DataDir.
	Retention time.Duration
	// DynamicConfig sets server dynamic config values by key (e.g.
	// "frontend.namespaceRPS": 1000). Values are plain values, as in the server's
	// dynamic config YAML without constraints.
	DynamicConfig map[string]any
	// Logger receives the server's and the UI's logs. Default: text to stderr.
	Logger *slog.Logger
	// LogLevel is the lowest server log level passed on to Logger. Default slog.LevelWarn:
	// the server is chatty at info while it starts and none of it helps a person.
	LogLevel slog.Leveler
}

// Server is a running dev server. Its methods are safe for concurrent use.
type Server struct {
	temporal  temporal.Server
	stopping  *atomic.Bool // quiets serverLogger
	unlock    func()       // releases DataDir
	ui        *uiServer
	frontend  string
	namespace string
	stopOnce  sync.Once
	stopErr   error
}

// FrontendAddress is the frontend's gRPC host:port, what client.Options.HostPort takes.
func (s *Server) FrontendAddress() string { return s.frontend }

// UIURL is the Web UI's base URL (http://host:port), or "" when it runs without UI.
func (s *Server) UIURL() string {
	if s.ui == nil {
		return ""
	}
	return s.ui.url
}

// Namespace is the namespace the server registered for the application.
func (s *Server) Namespace() string { return s.namespace }

// Stop stops the UI and then the Temporal server, and waits for both. It is safe to call
// more than once; later calls return the first call's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		var errs []error
		if s.ui != nil {
			errs = append(errs, s.ui.stop())
		}
		if err := s.temporal.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping temporal server: %w", err))
		}
		s.unlock()
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// Start starts a Temporal server and, unless opts.UIPort is -1, the Web UI, and returns once
// the frontend answers, the namespace exists, and the search attributes are registered.
// ctx bounds that wait; the server keeps running after ctx ends, until Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}

	host := opts.IP
	if ip := net.ParseIP(host); ip.IsUnspecified() {
		// Listening on 0.0.0.0 is fine, dialing it is not portable: clients use loopback.
		host = loopback
	}
	if opts.FrontendPort == 0 {
		if opts.FrontendPort, err = freePort(opts.IP); err != nil {
			return nil, fmt.Errorf("devserver: choosing a frontend port: %w", err)
		}
	} else if err := portAvailable(opts.IP, opts.FrontendPort); err != nil {
		return nil, fmt.Errorf("devserver: frontend port %d is not available (is another Temporal server running?): %w",
			opts.FrontendPort, err)
	}
	frontend := net.JoinHostPort(host, strconv.Itoa(opts.FrontendPort))

	unlock := func() {}
	if opts.DataDir != "" {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("devserver: creating DataDir: %w", err)
		}
		if unlock, err = lockDataDir(opts.DataDir); err != nil {
			return nil, err
		}
		unlock = sync.OnceFunc(unlock)
	}
	var uiListener net.Listener
	if opts.UIPort != -1 {
		if uiListener, err = listenUI(opts); err != nil {
			unlock()
			return nil, err
		}
	}
	fail := func(err error) (*Server, error) {
		if uiListener != nil {
			_ = uiListener.Close()
		}
		unlock()
		return nil, err
	}

	conf, err := buildConfig(opts, frontend)
	if err != nil {
		return fail(err)
	}
	if err := prepareDatabase(opts, conf); err != nil {
		return fail(err)
	}
	stopping := new(atomic.Bool)
	ts, err := newTemporalServer(opts, conf, stopping)
	if err != nil {
		return fail(err)
	}
	// Start blocks until every service has started (it joins the membership ring and
	// acquires the shard), so after it the frontend is listening.
	if err := ts.Start(); err != nil {
		return fail(fmt.Errorf("starting temporal server: %w", err))
	}

	s := &Server{temporal: ts, stopping: stopping, unlock: unlock, frontend: frontend, namespace: opts.Namespace}
	if err := s.configureNamespace(ctx, opts); err != nil {
		_ = s.Stop()
		return fail(err)
	}
	if uiListener != nil {
		if s.ui, err = serveUI(uiListener, opts, frontend, host); err != nil { // closes uiListener
			_ = s.Stop()
			return nil, err
		}
	}
	return s, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.IP == "" {
		o.IP = loopback
	}
	if o.IP == "localhost" {
		// The server binds to an IP, not a name (the CLI makes the same substitution).
		o.IP = loopback
	}
	if net.ParseIP(o.IP) == nil {
		return o, fmt.Errorf("devserver: IP %q is not an IP address", o.IP)
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.FrontendPort < 0 || o.FrontendPort > 65535 {
		return o, fmt.Errorf("devserver: FrontendPort %d out of range", o.FrontendPort)
	}
	if o.UIPort < -1 || o.UIPort > 65535 {
		return o, fmt.Errorf("devserver: UIPort %d out of range (-1 means no UI)", o.UIPort)
	}
	if o.Retention < 0 {
		return o, fmt.Errorf("devserver: Retention %v is negative", o.Retention)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.LogLevel == nil {
		o.LogLevel = slog.LevelWarn
	}
	// Copy the map: the caller's must not change under us.
	sas := make(map[string]enumspb.IndexedValueType, len(o.SearchAttributes))
	for name, typ := range o.SearchAttributes {
		if name == "" {
			return o, errors.New("devserver: SearchAttributes has an empty name")
		}
		if typ == enumspb.INDEXED_VALUE_TYPE_UNSPECIFIED {
			return o, fmt.Errorf("devserver: search attribute %q has no type", name)
		}
		sas[name] = typ
	}
	o.SearchAttributes = sas
	return o, nil
}

// buildConfig is the static server config for one SQLite-backed node: all four services in
// this process, internal ones on free loopback ports. It mirrors buildServerConfig in the
// CLI's temporalcli/devserver/server.go and LiteServerConfig.apply in temporaltest.
func buildConfig(opts Options, frontend string) (*config.Config, error) {
	conf := &config.Config{}
	conf.Global.Membership = config.Membership{
		MaxJoinDuration:  30 * time.Second,
		BroadcastAddress: loopback,
	}
	// No metrics listener and no pprof (port 0): each would be one more port to collide on
	// when tests start several servers.

	sqlConf := &config.SQL{PluginName: sqliteplugin.PluginName, ConnectAttributes: map[string]string{}}
	if opts.DataDir == "" {
		// Shared cache lets the server's several connection pools see one in-memory DB; the
		// unique name keeps two servers in one process apart.
		sqlConf.ConnectAttributes["mode"] = "memory"
		sqlConf.ConnectAttributes["cache"] = "shared"
		sqlConf.DatabaseName = memoryDBName()
	} else {
		sqlConf.ConnectAttributes["mode"] = "rwc"
		sqlConf.DatabaseName = filepath.Join(opts.DataDir, DBFileName)
	}
	conf.Persistence = config.Persistence{
		DefaultStore:     sqliteplugin.PluginName,
		VisibilityStore:  sqliteplugin.PluginName,
		NumHistoryShards: 1,
		DataStores:       map[string]config.DataStore{sqliteplugin.PluginName: {SQL: sqlConf}},
	}

	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend},
		},
	}
	conf.DCRedirectionPolicy = config.DCRedirectionPolicy{Policy: "noop"}

	frontendSvc := config.Service{RPC: config.RPC{GRPCPort: opts.FrontendPort, BindOnIP: opts.IP}}
	conf.Services = map[string]config.Service{"frontend": frontendSvc}
	for _, name := range []string{"history", "matching", "worker"} {
		port, err := freePort(loopback)
		if err != nil {
			return nil, fmt.Errorf("choosing a %s port: %w", name, err)
		}
		conf.Services[name] = config.Service{RPC: config.RPC{GRPCPort: port, BindOnLocalHost: true}}
	}
	for name, svc := range conf.Services {
		port, err := freePort(loopback)
		if err != nil {
			return nil, fmt.Errorf("choosing a %s membership port: %w", name, err)
		}
		svc.RPC.MembershipPort = port
		conf.Services[name] = svc
	}

	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	// The worker service (schedules, batch operations) reaches the frontend through this;
	// the server refuses to start without it.
	conf.PublicClient.HostPort = frontend
	return conf, nil
}

// prepareDatabase creates the schema on a new file DB and registers the namespace, with the
// search attributes, straight in the DB before the server starts; the CLI and temporaltest
// do the same, since a namespace registered through the API takes a while to reach every
// service's namespace cache. An in-memory DB gets its schema from the SQLite plugin itself.
func prepareDatabase(opts Options, conf *config.Config) error {
	sqlConf := conf.Persistence.DataStores[sqliteplugin.PluginName].SQL
	if opts.DataDir != "" {
		if _, err := os.Stat(sqlConf.DatabaseName); errors.Is(err, os.ErrNotExist) {
			if err := sqliteschema.SetupSchema(sqlConf); err != nil {
				// A half-made file would be taken as a set-up DB next time.
				_ = os.Remove(sqlConf.DatabaseName)
				return fmt.Errorf("devserver: creating SQLite schema in %s: %w", sqlConf.DatabaseName, err)
			}
		} else if err != nil {
			return fmt.Errorf("devserver: checking %s: %w", sqlConf.DatabaseName, err)
		} else if err := forgetMembers(sqlConf); err != nil {
			return err
		}
	}
	// On an existing namespace this is a no-op, so search attributes added to Options later
	// are registered through the operator API in configureNamespace.
	ns, err := sqliteschema.NewNamespaceConfig(clusterName, opts.Namespace, false, opts.SearchAttributes)
	if err != nil {
		return fmt.Errorf("devserver: namespace %q: %w", opts.Namespace, err)
	}
	if err := sqliteschema.CreateNamespaces(sqlConf, ns); err != nil {
		return fmt.Errorf("devserver: registering namespace %q: %w", opts.Namespace, err)
	}
	return nil
}

// forgetMembers empties the membership table of an existing DB. Each service records its
// host:port there for the others to find; after a restart the previous run's rows point at
// ports nobody listens on any more, and until they expire the new services try to reach
// them (dial errors, "Not enough hosts to serve the request", a Stop that hangs for many
// seconds). Only one server uses a DataDir at a time, so every row there is stale.
func forgetMembers(sqlConf *config.SQL) error {
	db, err := persistencesql.NewSQLDB(sqlplugin.DbKindMain, sqlConf, resolver.NewNoopResolver(),
		log.NewNoopLogger(), metrics.NoopMetricsHandler)
	if err != nil {
		return fmt.Errorf("devserver: opening %s: %w", sqlConf.DatabaseName, err)
	}
	defer func() { _ = db.Close() }()
	_, err = db.PruneClusterMembership(context.Background(), &sqlplugin.PruneClusterMembershipFilter{
		PruneRecordsBefore: time.Now().Add(24 * 365 * time.Hour),
	})
	if err != nil {
		return fmt.Errorf("devserver: clearing stale membership in %s: %w", sqlConf.DatabaseName, err)
	}
	return nil
}

func newTemporalServer(opts Options, conf *config.Config, stopping *atomic.Bool) (temporal.Server, error) {
	logger := &serverLogger{log: opts.Logger.With("component", "temporal"), min: opts.LogLevel, stopping: stopping}
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("devserver: authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("devserver: claim mapper: %w", err)
	}

	dc := dynamicconfig.StaticClient{
		// Without it a search attribute added through the API is only seen after the
		// cache refresh (up to a minute); temporaltest sets it for the same reason.
		dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
	}
	for k, v := range opts.DynamicConfig {
		dc[dynamicconfig.MakeKey(k)] = v
	}

	ts, err := temporal.NewServer(
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dc),
	)
	if err != nil {
		return nil, fmt.Errorf("devserver: creating temporal server: %w", err)
	}
	return ts, nil
}

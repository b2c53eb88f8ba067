//go:build cluster

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	mathrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/operatorservice/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	pgschema "go.temporal.io/server/schema/postgresql/v12"
	"go.temporal.io/server/temporal"
	sqltool "go.temporal.io/server/tools/sql"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/temporalclient"
	"github.com/optoutsync/optoutsync/workflows"
)

// TestCluster runs optout-sync the way it runs in production on a
// self-hosted Temporal cluster, on this machine's PostgreSQL
// ($OPTOUT_TEST_POSTGRES_URL), and checks what a deployment relies on:
//
//   - Temporal's two databases are made by the server's own schema tool
//     (temporal-sql-tool, with the schema embedded in the pinned server),
//     by the commands docker-compose.yml runs, twice (compose runs them on
//     every start), and end at the schema version the server expects.
//   - A Temporal server of the pinned go.temporal.io/server starts from the
//     configuration template `temporal-server start` uses in the
//     temporalio/server image, with the environment docker-compose.yml
//     gives that image (only the addresses, credentials, database names
//     and ports are this machine's): PostgreSQL persistence and SQL
//     visibility.
//   - The namespace and the search attribute are made by the calls the
//     temporal CLI makes for the commands docker-compose.yml runs.
//   - Two worker processes (the binary `go build` makes, run as in
//     production) share a configuration of two integrations, against the
//     NetSuite and Mailchimp emulators over TLS, and a PostgreSQL ledger;
//     the starter binary works against the same cluster.
//   - Both schedules fire and their runs end with the expected state on
//     both systems; a run whose worker is killed (SIGKILL) in the middle of
//     its writes is finished by the other worker; a search by
//     OptOutIntegration, as `temporal workflow list --query` makes it,
//     returns exactly that integration's runs.
//
// Run it with the command in README.md ("Running on a cluster"); .ci/run
// does. The build tag keeps it out of `go test ./...`.
func TestCluster(t *testing.T) {
	pg := clusterPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	dir := t.TempDir()
	start := time.Now()
	bins := buildBinaries(t, raceBuild, ".", "../starter")
	t.Logf("built the worker and the starter in %s", time.Since(start).Round(time.Second))

	// Temporal's databases, set up as docker-compose.yml sets them up.
	db, visibilityDB := clusterDatabases(t, pg)
	toolLog := filepath.Join(dir, "temporal-sql-tool.log")
	for range 2 {
		for _, argv := range clusterSchemaCommands(db, visibilityDB) {
			runSQLTool(t, pg, toolLog, argv)
		}
	}
	require.Equal(t, pgschema.Version, schemaVersion(t, pg, db), "persistence schema version; the tool's log:\n%s", tail(toolLog, 20))
	require.Equal(t, pgschema.VisibilityVersion, schemaVersion(t, pg, visibilityDB), "visibility schema version; the tool's log:\n%s", tail(toolLog, 20))

	// The server, configured as the compose file configures the image.
	fsys := os.DirFS("..")
	env := clusterServerEnv(t, fsys, pg, db, visibilityDB, dir)
	start = time.Now()
	frontend := startClusterServer(t, env, filepath.Join(dir, "temporal.log"))
	t.Logf("the server started in %s", time.Since(start).Round(100*time.Millisecond))

	// Payloads are encrypted, as production requires: the workers, the
	// starter and this client share the key.
	codecKey := testCodecKey(t, "cluster")
	keys, err := codec.ParseKeys(codec.KeysEnv, codecKey)
	require.NoError(t, err)
	payloads, err := codec.New(keys, true)
	require.NoError(t, err)
	opts := client.Options{HostPort: frontend, Namespace: clusterNamespace,
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))}
	temporalclient.WithCodec(&opts, payloads)
	c, err := client.DialContext(ctx, opts)
	require.NoError(t, err)
	defer c.Close()

	// The namespace and the search attribute, as the operator makes them.
	for _, argv := range clusterOperatorCommands() {
		require.NoError(t, temporalOperator(ctx, c, argv), strings.Join(argv, " "))
	}
	waitFor(t, ctx, time.Minute, "the search attribute is listed", func() error {
		list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: clusterNamespace})
		if err != nil {
			return err
		}
		if got := list.GetCustomAttributes()[workflows.IntegrationKey.GetName()]; got != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			return fmt.Errorf("%s is %v", workflows.IntegrationKey.GetName(), got)
		}
		return nil
	})

	// Two integrations against the emulators: alpha quick, beta slow, so
	// that its run can be caught in the middle of its writes.
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	alpha := seedIntegration(t, mc, "alpha", 30)
	beta := seedIntegration(t, mc, "beta", 120)
	beta.ns.Middleware.SetFaults(emulator.Faults{Latency: time.Second})
	urls, certFile := serveTLS(t, mc.Handler(), alpha.ns.Handler(), beta.ns.Handler())
	alpha.nsURL, beta.nsURL = urls[1], urls[2]
	integrations := []*clusterIntegration{alpha, beta}

	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(clusterConfigYAML(urls[0]+"/3.0", integrations...)), 0o600))
	procEnv := clusterProcessEnv(frontend, codecKey, ledgertest.DSN(t, ledger.Postgres), certFile, mc, integrations...)

	workers := []*workerProc{
		startWorkerProc(t, bins["worker"], cfgPath, procEnv, filepath.Join(dir, "worker-1.log")),
		startWorkerProc(t, bins["worker"], cfgPath, procEnv, filepath.Join(dir, "worker-2.log")),
	}
	waitFor(t, ctx, 3*time.Minute, "both workers poll the task queue", func() error {
		for _, w := range workers {
			if err := w.running(); err != nil {
				t.Fatalf("%v\nits log:\n%s", err, tail(w.log, 40))
			}
		}
		tq, err := c.DescribeTaskQueue(ctx, workflows.TaskQueue, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
		if err != nil {
			return err
		}
		for _, w := range workers {
			if !slices.ContainsFunc(tq.GetPollers(), func(p *taskqueuepb.PollerInfo) bool { return identityPID(p.GetIdentity()) == w.pid() }) {
				return fmt.Errorf("worker %s does not poll yet", w.pid())
			}
		}
		return nil
	})

	runs := collectScheduledRuns(ctx, c, integrations)

	// beta's first run, caught while its worker writes to NetSuite.
	var (
		wid, activityID string
		held            *workerProc
	)
	const patch = "PATCH /services/rest/record/v1/{type}/{id}"
	waitFor(t, ctx, 3*time.Minute, "a worker is writing beta's opt-outs to NetSuite", func() error {
		ids := runs.of(beta.id)
		if len(ids) == 0 {
			return errors.New("no run of beta yet")
		}
		wid = ids[0]
		d, err := c.DescribeWorkflowExecution(ctx, wid, "")
		if err != nil {
			return err
		}
		if beta.ns.Middleware.Counts()[patch] == 0 {
			return errors.New("no NetSuite write yet")
		}
		for _, pa := range d.GetPendingActivities() {
			if pa.GetState() != enumspb.PENDING_ACTIVITY_STATE_STARTED {
				continue
			}
			for _, w := range workers {
				if identityPID(pa.GetLastWorkerIdentity()) == w.pid() {
					activityID, held = pa.GetActivityId(), w
					return nil
				}
			}
		}
		return errors.New("no started activity")
	})
	writesBefore := beta.ns.Middleware.Counts()[patch]
	held.kill(t)
	killedAt := time.Now()
	survivor := workers[0]
	if survivor == held {
		survivor = workers[1]
	}
	t.Logf("killed worker %s while it held activity %s of %s (%d NetSuite writes asked); worker %s goes on",
		held.pid(), activityID, wid, writesBefore, survivor.pid())

	rctx, rcancel := context.WithTimeout(ctx, 6*time.Minute)
	var res workflows.SyncResult
	err = c.GetWorkflow(rctx, wid, "").Get(rctx, &res)
	rcancel()
	require.NoError(t, err, "beta's run after its worker was killed; the survivor's log:\n%s", tail(survivor.log, 40))
	t.Logf("beta's run completed %s after the kill", time.Since(killedAt).Round(time.Second))
	require.Empty(t, res.Failures)
	require.Greater(t, beta.ns.Middleware.Counts()[patch], writesBefore, "the survivor wrote what the killed worker had not")
	started := activityStarted(t, ctx, c, wid, activityID)
	require.Equal(t, survivor.pid(), identityPID(started.GetIdentity()), "the activity was finished by the other worker")
	require.GreaterOrEqual(t, started.GetAttempt(), int32(2), "the killed worker's attempt timed out and was retried")
	require.NotNil(t, started.GetLastFailure().GetTimeoutFailureInfo(), "the attempt before was lost with its worker: %v", started.GetLastFailure())

	// alpha's schedule fires on its own, again and again.
	waitFor(t, ctx, 2*time.Minute, "two of alpha's scheduled runs completed", func() error {
		done := 0
		for _, id := range runs.of(alpha.id) {
			d, err := c.DescribeWorkflowExecution(ctx, id, "")
			if err == nil && d.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
				done++
			}
		}
		if done < 2 {
			return fmt.Errorf("%d completed", done)
		}
		return nil
	})

	// The starter, against the same cluster.
	out := runStarter(t, bins["starter"], procEnv, "schedules")
	for _, in := range integrations {
		require.Contains(t, out, workflows.ScheduleID(in.id))
	}
	require.Contains(t, runStarter(t, bins["starter"], procEnv, "run", alpha.id), " of alpha finished in ")

	// No more runs: the schedules paused (`temporal schedule toggle
	// --pause`), the last ones finished.
	for _, in := range integrations {
		h := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(in.id))
		require.NoError(t, h.Pause(ctx, client.SchedulePauseOptions{Note: "cluster test done"}))
	}
	waitFor(t, ctx, 2*time.Minute, "the last runs finished", func() error {
		for _, in := range integrations {
			desc, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(in.id)).Describe(ctx)
			if err != nil {
				return err
			}
			if n := len(desc.Info.RunningWorkflows); n > 0 {
				return fmt.Errorf("%s has %d running", in.id, n)
			}
		}
		return nil
	})
	runs.stop()
	// The schedule names runs by their time: the last id is the latest run.
	betaRuns := runs.of(beta.id)
	require.Contains(t, runStarter(t, bins["starter"], procEnv, "status", beta.id),
		"Run "+betaRuns[len(betaRuns)-1]+" of beta finished in ")

	// Every run of each integration, and no other, by its search attribute.
	for _, in := range integrations {
		want := runs.of(in.id)
		require.NotEmpty(t, want)
		query := fmt.Sprintf("%s = '%s'", workflows.IntegrationKey.GetName(), in.id)
		var got []string
		waitFor(t, ctx, time.Minute, "visibility lists every run of "+in.id, func() error {
			got = listWorkflowIDs(t, ctx, c, query)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%q lists %v, the schedule started %v", query, got, want)
			}
			return nil
		})
		t.Logf("%q: %d runs", query, len(got))
	}
	for _, id := range runs.of(alpha.id) {
		require.NotContains(t, runs.of(beta.id), id)
	}

	// What the runs did, on both systems.
	for _, in := range integrations {
		in.check(t, mc)
	}

	// The histories in PostgreSQL: the events readable (their type names),
	// the payloads not (the codec encrypted them in the processes).
	histories := historyData(t, pg, db)
	require.True(t, bytes.Contains(histories, []byte("SyncWorkflow")), "the scan reads the events")
	require.False(t, bytes.Contains(histories, []byte(`"integrationId"`)), "a SyncInput in the clear in history_node")
}

// ---- PostgreSQL and Temporal's databases --------------------------------

// pgServer is where the test's PostgreSQL is, from $OPTOUT_TEST_POSTGRES_URL.
type pgServer struct {
	URL                        *url.URL
	Host, Port, User, Password string
}

func clusterPostgres(t *testing.T) pgServer {
	raw := os.Getenv(ledgertest.PostgresURLEnv)
	if raw == "" {
		t.Fatalf("%s is not set: the cluster test runs Temporal on PostgreSQL (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)", ledgertest.PostgresURLEnv)
	}
	u, err := url.Parse(raw)
	require.NoError(t, err, ledgertest.PostgresURLEnv)
	pw, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return pgServer{URL: u, Host: u.Hostname(), Port: port, User: u.User.Username(), Password: pw}
}

// clusterDatabases names Temporal's two databases for this test, and drops
// them when it ends (after the server has stopped).
func clusterDatabases(t *testing.T, pg pgServer) (db, visibilityDB string) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "optoutsync_cluster_" + hex.EncodeToString(b)
	db, visibilityDB = prefix+"_temporal", prefix+"_visibility"
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", pg.URL.String())
		if err != nil {
			t.Errorf("dropping %s: %v", prefix, err)
			return
		}
		defer admin.Close()
		for _, name := range []string{db, visibilityDB} {
			if _, err := admin.Exec(`DROP DATABASE IF EXISTS "` + name + `" WITH (FORCE)`); err != nil {
				t.Errorf("dropping %s: %v", name, err)
			}
		}
	})
	return db, visibilityDB
}

// runSQLTool runs a temporal-sql-tool command line in this process: the
// tool's own code (go.temporal.io/server/tools/sql), with this machine's
// connection added (compose gives it in SQL_HOST and the like). --quiet
// keeps a failing command from ending the test process (the tool calls
// os.Exit(1) otherwise); its error is logged, and the schema versions
// checked afterwards show it. The tool logs every statement to stderr: to
// logPath here.
func runSQLTool(t *testing.T, pg pgServer, logPath string, argv []string) {
	t.Helper()
	require.Equal(t, "temporal-sql-tool", argv[0])
	args := append([]string{argv[0], "--quiet", "--endpoint", pg.Host, "--port", pg.Port, "--user", pg.User, "--password", pg.Password}, argv[1:]...)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	defer f.Close()
	fmt.Fprintf(f, "$ %s\n", strings.Join(argv, " "))
	stderr := os.Stderr
	os.Stderr = f // the tool's logger opens "stderr" when it is built, in RunTool
	err = sqltool.RunTool(args)
	os.Stderr = stderr
	require.NoError(t, err, strings.Join(argv, " "))
}

// schemaVersion reads a database's schema version the way the tool does.
func schemaVersion(t *testing.T, pg pgServer, db string) string {
	t.Helper()
	conn, err := sqltool.NewConnection(&config.SQL{
		PluginName: clusterPlugin, ConnectAddr: net.JoinHostPort(pg.Host, pg.Port), ConnectProtocol: "tcp",
		User: pg.User, Password: pg.Password, DatabaseName: db,
	}, log.NewNoopLogger())
	require.NoError(t, err, "connecting to %s", db)
	defer conn.Close()
	v, err := conn.ReadSchemaVersion()
	require.NoError(t, err, "schema version of %s", db)
	return v
}

// historyData is every history event batch Temporal keeps in db, as stored.
func historyData(t *testing.T, pg pgServer, db string) []byte {
	u := *pg.URL
	u.Path = "/" + db
	conn, err := sql.Open("pgx", u.String())
	require.NoError(t, err)
	defer conn.Close()
	rows, err := conn.Query("SELECT data FROM history_node")
	require.NoError(t, err)
	defer rows.Close()
	var all []byte
	for rows.Next() {
		var b []byte
		require.NoError(t, rows.Scan(&b))
		all = append(all, b...)
	}
	require.NoError(t, rows.Err())
	return all
}

// ---- The Temporal server ------------------------------------------------

// clusterServerEnv is the environment docker-compose.yml gives the
// temporalio/server image, with this machine's PostgreSQL, the test's
// databases, free loopback ports, and the dynamic configuration compose
// mounts written to a file here. Everything else (the plugin, SQL
// visibility, shards, pools) is the compose file's.
func clusterServerEnv(t *testing.T, fsys fs.FS, pg pgServer, db, visibilityDB, dir string) map[string]string {
	c := dcLoad(t, fsys)
	var svc *dcService
	for _, n := range slices.Sorted(maps.Keys(c.Services)) {
		if repo, _ := dcImageName(c.Services[n].Image); repo == clusterServerImage {
			require.Nil(t, svc, "two %s services in %s", clusterServerImage, dcComposeFile)
			svc = c.Services[n]
		}
	}
	require.NotNil(t, svc, "no %s service in %s", clusterServerImage, dcComposeFile)
	env := maps.Clone(svc.Environment)

	dynPath := dcOr(env["DYNAMIC_CONFIG_FILE_PATH"], clusterDynamicConfigDefault)
	if !path.IsAbs(dynPath) {
		dynPath = path.Join(clusterServerWorkdir, dynPath)
	}
	content, from, ok, err := dcMountedFile(fsys, c, svc, dynPath)
	require.True(t, ok && err == nil && content != nil, "the dynamic configuration %s: mounted %v, from %s, %v", dynPath, ok, from, err)
	env["DYNAMIC_CONFIG_FILE_PATH"] = filepath.Join(dir, "dynamicconfig.yaml")
	require.NoError(t, os.WriteFile(env["DYNAMIC_CONFIG_FILE_PATH"], content, 0o600))

	for _, prefix := range []string{"", "VISIBILITY_"} {
		env[prefix+"POSTGRES_SEEDS"] = pg.Host
		env[prefix+"DB_PORT"] = pg.Port
		env[prefix+"POSTGRES_USER"] = pg.User
		env[prefix+"POSTGRES_PWD"] = pg.Password
	}
	env["DBNAME"], env["VISIBILITY_DBNAME"] = db, visibilityDB
	env["BIND_ON_IP"] = "127.0.0.1"
	delete(env, "TEMPORAL_BROADCAST_ADDRESS")
	used := map[string]bool{}
	for _, svc := range []string{"FRONTEND", "HISTORY", "MATCHING", "WORKER"} {
		env[svc+"_GRPC_PORT"] = port(t, used)
		env[svc+"_MEMBERSHIP_PORT"] = port(t, used)
	}
	env["FRONTEND_HTTP_PORT"] = port(t, used)
	return env
}

// port is a free loopback port not in used (and now in it), as a string.
// Below 32768: PostgreSQL
// persistence keeps the membership ports in a smallint column, and the
// server refuses to start (UpsertClusterMembership: out of range) on a port
// from the kernel's ephemeral range, where freePort's come from.
func port(t *testing.T, used map[string]bool) string {
	for range 1000 {
		p := strconv.Itoa(10000 + mathrand.IntN(32768-10000))
		if used[p] {
			continue
		}
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p)); err == nil {
			_ = l.Close()
			used[p] = true
			return p
		}
	}
	t.Fatal("no free port below 32768")
	return ""
}

// startClusterServer does what `temporal-server start` does without a
// configuration file: the embedded template rendered with env, then every
// service in this process. The server logs to logPath. It returns the
// frontend's address.
func startClusterServer(t *testing.T, env map[string]string, logPath string) string {
	// The template reads the process environment.
	for k, v := range env {
		old, had := os.LookupEnv(k)
		require.NoError(t, os.Setenv(k, v))
		defer func() {
			if had {
				_ = os.Setenv(k, old)
			} else {
				_ = os.Unsetenv(k)
			}
		}()
	}
	cfg, err := config.Load(config.WithEmbedded())
	require.NoError(t, err)
	for _, store := range []string{cfg.Persistence.DefaultStore, cfg.Persistence.VisibilityStore} {
		sqlCfg := cfg.Persistence.DataStores[store].SQL
		require.NotNil(t, sqlCfg, "store %q is not SQL", store)
		require.Equal(t, clusterPlugin, sqlCfg.PluginName, "store %q", store)
	}
	cfg.Log.Stdout, cfg.Log.OutputFile = false, logPath
	logger := log.NewZapLogger(log.BuildZapLogger(cfg.Log))
	authorizer, err := authorization.GetAuthorizerFromConfig(&cfg.Global.Authorization)
	require.NoError(t, err)
	claimMapper, err := authorization.GetClaimMapperFromConfig(&cfg.Global.Authorization, logger)
	require.NoError(t, err)
	s, err := temporal.NewServer(
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithConfig(cfg),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
	)
	require.NoError(t, err)
	require.NoError(t, s.Start(), "starting the server; its log:\n%s", tail(logPath, 40))
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
	})
	return net.JoinHostPort(env["BIND_ON_IP"], env["FRONTEND_GRPC_PORT"])
}

// temporalOperator makes the calls the temporal CLI makes for the commands
// of clusterOperatorCommands (building the CLI takes minutes here).
func temporalOperator(ctx context.Context, c client.Client, argv []string) error {
	if len(argv) < 4 || argv[0] != "temporal" || argv[1] != "operator" || argv[3] != "create" {
		return fmt.Errorf("not a `temporal operator ... create` command: %q", argv)
	}
	fs := flag.NewFlagSet(strings.Join(argv[:4], " "), flag.ContinueOnError)
	ns := fs.String("namespace", "default", "")
	var call func() error
	switch argv[2] {
	case "namespace":
		retention := fs.Duration("retention", 72*time.Hour, "")
		call = func() error {
			_, err := c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
				Namespace: *ns, WorkflowExecutionRetentionPeriod: durationpb.New(*retention),
			})
			return err
		}
	case "search-attribute":
		name := fs.String("name", "", "")
		typ := fs.String("type", "", "")
		call = func() error {
			t, err := enumspb.IndexedValueTypeFromString(*typ)
			if err != nil {
				return err
			}
			_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
				Namespace: *ns, SearchAttributes: map[string]enumspb.IndexedValueType{*name: t},
			})
			return err
		}
	default:
		return fmt.Errorf("unknown command %q", argv)
	}
	if err := fs.Parse(argv[4:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return call()
}

// ---- The integrations and the emulators ---------------------------------

// clusterIntegration is one integration of the test: its own NetSuite
// account and audience, seeded so that a first run has writes both ways.
type clusterIntegration struct {
	id     string
	ns     *netsuitetest.Server
	nsURL  string
	emails []string
	refs   []connectors.RecordRef
}

// seedIntegration seeds n people, a third of each kind: unsubscribed in
// Mailchimp (the run opts their customer out in NetSuite), opted out in
// NetSuite (the run unsubscribes them in Mailchimp), subscribed in both
// (the run leaves them).
func seedIntegration(t *testing.T, mc *mailchimptest.Server, id string, n int) *clusterIntegration {
	in := &clusterIntegration{id: id, ns: netsuitetest.NewServer(netsuitetest.Options{})}
	t.Cleanup(in.ns.Close)
	mc.AddList(id, id)
	before := time.Now().Add(-time.Hour)
	for i := range n {
		email := fmt.Sprintf("%s-%d@example.com", id, i)
		seed := mailchimptest.MemberSeed{Email: email, Status: "subscribed", LastChanged: before}
		status := "1"
		switch i % 3 {
		case 0:
			seed.Status, seed.Reason = "unsubscribed", "N/A (Unsubscribed by the cluster test)"
		case 1:
			status = "2"
		}
		require.NoError(t, mc.AddMember(id, seed))
		ref := connectors.RecordRef{Type: "customer", ID: in.ns.AddCustomer(netsuitetest.Entity{
			Email: email, SubscriptionStatus: status, LastModified: before,
		})}
		in.emails, in.refs = append(in.emails, email), append(in.refs, ref)
	}
	in.ns.AddSavedSearch(in.search(), in.refs...)
	return in
}

func (in *clusterIntegration) search() string { return "customsearch_" + in.id }

// envPrefix names the integration's credential variables.
func (in *clusterIntegration) envPrefix() string { return "CLUSTER_" + strings.ToUpper(in.id) + "_NS_" }

// check requires the state a first run leaves: every person opted out on
// both systems except the third subscribed in both.
func (in *clusterIntegration) check(t *testing.T, mc *mailchimptest.Server) {
	for i, email := range in.emails {
		wantNS, wantMC := "2", "unsubscribed"
		if i%3 == 2 {
			wantNS, wantMC = "1", "subscribed"
		}
		ent, ok := in.ns.Entity(in.refs[i].Type, in.refs[i].ID)
		require.True(t, ok, email)
		require.Equal(t, wantNS, ent.SubscriptionStatus, "%s: NetSuite customer %s of %s", in.id, in.refs[i].ID, email)
		m, ok := mc.Member(in.id, email)
		require.True(t, ok, email)
		require.Equal(t, wantMC, m.Status, "%s: Mailchimp member %s", in.id, email)
	}
}

// clusterConfigYAML is the workers' configuration: the integrations every
// 10 seconds (the shortest schedule allowed), both ways, each scoped to its
// saved search, and the ledger on PostgreSQL, shared by the workers.
func clusterConfigYAML(mailchimpURL string, ins ...*clusterIntegration) string {
	var b strings.Builder
	b.WriteString("ledger:\n  driver: postgres\n  urlEnv: OPTOUT_LEDGER_URL\n  keyEnv: OPTOUT_LEDGER_KEY\nintegrations:\n")
	for _, in := range ins {
		p := in.envPrefix()
		fmt.Fprintf(&b, `  - id: %s
    schedule: 10s
    crmToMarketing: true
    marketing:
      kind: mailchimp
      audience: %s
      apiKeyEnv: CLUSTER_MAILCHIMP_API_KEY
      baseURL: %s
    crm:
      kind: netsuite
      accountId: %s
      consumerKeyEnv: %sCONSUMER_KEY
      consumerSecretEnv: %sCONSUMER_SECRET
      tokenIdEnv: %sTOKEN_ID
      tokenSecretEnv: %sTOKEN_SECRET
      timeZone: UTC
      baseURL: %s
      recordTypes: [customer]
      lists: [%s]
`, in.id, in.id, mailchimpURL, in.ns.AccountID, p, p, p, p, in.nsURL, in.search())
	}
	return b.String()
}

// clusterProcessEnv is the environment of every worker and starter process
// of the test, in one place: this process's without its Temporal client
// settings, then the cluster's address and namespace, the ledger, the
// payload codec key, the credentials the configuration names and the
// emulators' certificate. Whatever else the worker and the starter come to
// need from their environment goes here too.
func clusterProcessEnv(frontend, codecKey, ledgerURL, certFile string, mc *mailchimptest.Server, ins ...*clusterIntegration) []string {
	env := append(withoutTemporalEnv(os.Environ()),
		"TEMPORAL_ADDRESS="+frontend,
		"TEMPORAL_NAMESPACE="+clusterNamespace,
		"OPTOUT_LEDGER_URL="+ledgerURL,
		ledger.DefaultKeyEnv+"="+string(ledgertest.TestKey),
		codec.KeysEnv+"="+codecKey,
		"CLUSTER_MAILCHIMP_API_KEY="+mc.APIKey,
		"SSL_CERT_FILE="+certFile,
	)
	for _, in := range ins {
		p := in.envPrefix()
		env = append(env,
			p+"CONSUMER_KEY="+in.ns.ConsumerKey,
			p+"CONSUMER_SECRET="+in.ns.ConsumerSecret,
			p+"TOKEN_ID="+in.ns.TokenID,
			p+"TOKEN_SECRET="+in.ns.TokenSecret,
		)
	}
	return env
}

// ---- The processes ------------------------------------------------------

// workerProc is a worker process, as production runs it: `worker -config`.
type workerProc struct {
	cmd    *exec.Cmd
	log    string
	mu     sync.Mutex
	exit   error
	exited chan struct{}
}

func startWorkerProc(t *testing.T, bin, cfgPath string, env []string, logPath string) *workerProc {
	f, err := os.Create(logPath)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	w := &workerProc{cmd: exec.Command(bin, "-config", cfgPath), log: logPath, exited: make(chan struct{})}
	w.cmd.Env, w.cmd.Stdout, w.cmd.Stderr = env, f, f
	require.NoError(t, w.cmd.Start())
	go func() {
		err := w.cmd.Wait()
		w.mu.Lock()
		w.exit = err
		w.mu.Unlock()
		close(w.exited)
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(time.Minute):
			_ = w.cmd.Process.Kill()
			<-w.exited
		}
	})
	return w
}

func (w *workerProc) pid() string { return strconv.Itoa(w.cmd.Process.Pid) }

// running is nil while the process runs.
func (w *workerProc) running() error {
	select {
	case <-w.exited:
		w.mu.Lock()
		defer w.mu.Unlock()
		return fmt.Errorf("worker %s exited: %v", w.pid(), w.exit)
	default:
		return nil
	}
}

// kill ends the process with SIGKILL: no graceful stop, no last heartbeat.
func (w *workerProc) kill(t *testing.T) {
	require.NoError(t, w.cmd.Process.Kill())
	<-w.exited
}

// identityPID is the process id in an SDK worker identity ("pid@host@...").
func identityPID(identity string) string {
	pid, _, _ := strings.Cut(identity, "@")
	return pid
}

// runStarter runs the starter binary and returns its output; it must exit 0.
func runStarter(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
	require.NoError(t, cmd.Run(), "starter %s:\n%s", strings.Join(args, " "), out.String())
	t.Logf("starter %s:\n%s", strings.Join(args, " "), out.String())
	return out.String()
}

// ---- Runs, histories, visibility ----------------------------------------

// scheduledRuns collects the workflow ids each integration's schedule has
// started, from the schedule itself (not from visibility, which is what
// the test checks), every second: the schedule keeps its last ten.
type scheduledRuns struct {
	mu   sync.Mutex
	ids  map[string][]string
	done chan struct{}
	wg   sync.WaitGroup
}

func collectScheduledRuns(ctx context.Context, c client.Client, ins []*clusterIntegration) *scheduledRuns {
	r := &scheduledRuns{ids: map[string][]string{}, done: make(chan struct{})}
	poll := func() {
		for _, in := range ins {
			desc, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(in.id)).Describe(ctx)
			if err != nil {
				continue
			}
			var seen []string
			for _, a := range desc.Info.RecentActions {
				if a.StartWorkflowResult != nil {
					seen = append(seen, a.StartWorkflowResult.WorkflowID)
				}
			}
			for _, w := range desc.Info.RunningWorkflows {
				seen = append(seen, w.WorkflowID)
			}
			r.mu.Lock()
			for _, id := range seen {
				if !slices.Contains(r.ids[in.id], id) {
					r.ids[in.id] = append(r.ids[in.id], id)
				}
			}
			r.mu.Unlock()
		}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			poll()
			select {
			case <-r.done:
				poll() // the last word, after the schedules paused
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

// of is the workflow ids of an integration's runs so far, sorted.
func (r *scheduledRuns) of(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(slices.Values(r.ids[id]))
}

func (r *scheduledRuns) stop() {
	close(r.done)
	r.wg.Wait()
}

// activityStarted returns the ActivityTaskStarted event of an activity of a
// run: it is written when the activity ends, with the attempt that ended
// it, the identity of the worker that ran that attempt, and the failure of
// the attempt before.
func activityStarted(t *testing.T, ctx context.Context, c client.Client, wid, activityID string) *historypb.ActivityTaskStartedEventAttributes {
	scheduled := map[int64]string{}
	it := c.GetWorkflowHistory(ctx, wid, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		require.NoError(t, err)
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
			scheduled[ev.GetEventId()] = a.GetActivityId()
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && scheduled[a.GetScheduledEventId()] == activityID {
			return a
		}
	}
	t.Fatalf("no ActivityTaskStarted for activity %s in %s", activityID, wid)
	return nil
}

// listWorkflowIDs lists the workflow ids a visibility query returns, as
// `temporal workflow list --query` asks for them, sorted.
func listWorkflowIDs(t *testing.T, ctx context.Context, c client.Client, query string) []string {
	var ids []string
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: clusterNamespace, Query: query, NextPageToken: token,
		})
		require.NoError(t, err, query)
		for _, e := range resp.GetExecutions() {
			if id := e.GetExecution().GetWorkflowId(); !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	slices.Sort(ids)
	return ids
}

// waitFor calls f until it returns nil, every 200 ms, for at most d.
func waitFor(t *testing.T, ctx context.Context, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting %s for %s: %v", d, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

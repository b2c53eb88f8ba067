package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
	"go.temporal.io/server/temporaltest"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// scrape reads and parses the metrics endpoint.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return families
}

// value sums the series of a family whose labels include want; ok is
// false when none has them.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := families[name]
	if mf == nil {
		return 0, false
	}
	sum, found := 0.0, false
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

var (
	addressLike = regexp.MustCompile(`[^\s@]+(@|%40)[^\s@]+\.[A-Za-z]{2,}`)
	hashLike    = regexp.MustCompile(`(?i)\b[0-9a-f]{32}\b|\b[0-9a-f]{64}\b`)
)

// TestMetricsAfterADemoRun runs the demo integration once on the worker
// in -dev mode and reads the metrics endpoint as Prometheus would: the
// opt-outs, field writes and item failures it counts are the run's own
// counts, the vendor calls to NetSuite are exactly the requests the
// emulator served, the last successful run and the propagation age are
// there with their values, the Temporal SDK reports its own series, and
// no label names a person, a record or a hash.
func TestMetricsAfterADemoRun(t *testing.T) {
	start := time.Now()
	d := startDevApp(t)
	d.pauseSchedules(t)
	ns := d.emulators.Get("netsuite").(*netsuitetest.Server)
	before := scrape(t, d.ops.Addr())
	nsBefore := ns.Middleware.Total()

	_, res := d.runDemo(t)
	delta := func(after map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
		a, _ := value(after, name, labels)
		b, _ := value(before, name, labels)
		return a - b
	}

	// The state series are read from the ledger at most every stateTTL:
	// wait until the scrape shows this run.
	var after map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		after = scrape(t, d.ops.Addr())
		_, ok := value(after, "optout_last_success_age_seconds", map[string]string{"integration": "demo"})
		_, sdk := value(after, "temporal_workflow_completed_total", map[string]string{"workflow_type": "SyncWorkflow"})
		return ok && sdk
	}, stateTTL+30*time.Second, 500*time.Millisecond)
	scraped := time.Now()

	m, k, fs := res.Counts.MarketingToCRM, res.Counts.CRMToMarketing, res.Counts.FieldSync
	require.Positive(t, m.CRMOptedOut, "the demo opts records out in NetSuite")
	require.Positive(t, k.Unsubscribed+k.AddedUnsub, "the demo unsubscribes CRM opt-outs")
	demo := func(kv ...string) map[string]string {
		l := map[string]string{"integration": "demo"}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	require.EqualValues(t, m.Unsubscribes, delta(after, "optout_optouts_observed_total", demo("direction", "marketing-to-crm")))
	require.EqualValues(t, m.CRMOptedOut+m.LateOptedOut, delta(after, "optout_optouts_written_total", demo("direction", "marketing-to-crm")))
	require.EqualValues(t, k.CRMOptOuts, delta(after, "optout_optouts_observed_total", demo("direction", "crm-to-marketing")))
	require.EqualValues(t, k.Unsubscribed+k.AddedUnsub, delta(after, "optout_optouts_written_total", demo("direction", "crm-to-marketing")))
	require.EqualValues(t, fs.FieldsUpdated, delta(after, "optout_field_sync_writes_total", demo("action", "updated")))
	require.EqualValues(t, fs.MembersAdded, delta(after, "optout_field_sync_writes_total", demo("action", "added")))
	for step, c := range map[string]activities.Counts{"marketing-to-crm": m, "crm-to-marketing": k, "field-sync": fs} {
		require.EqualValues(t, c.Failed, delta(after, "optout_item_failures_total", demo("step", step, "kind", "transient")), step)
		require.EqualValues(t, c.Refused, delta(after, "optout_item_failures_total", demo("step", step, "kind", "final")), step)
		require.EqualValues(t, c.ComplianceHeld, delta(after, "optout_item_failures_total", demo("step", step, "kind", "compliance")), step)
	}

	// Every request the NetSuite emulator served is one counted call, and
	// only known vendors and status codes appear.
	nsCalls := delta(after, "optout_vendor_requests_total", map[string]string{"vendor": "netsuite"})
	require.Positive(t, nsCalls)
	require.EqualValues(t, ns.Middleware.Total()-nsBefore, nsCalls)
	require.Positive(t, delta(after, "optout_vendor_requests_total", map[string]string{"vendor": "mailchimp"}))
	for _, s := range after["optout_vendor_requests_total"].GetMetric() {
		for _, l := range s.GetLabel() {
			switch l.GetName() {
			case "vendor":
				require.Contains(t, []string{"mailchimp", "netsuite", "salesforce", "dynamics", "bullhorn"}, l.GetValue())
			case "code":
				require.Regexp(t, `^([1-5][0-9][0-9]|error)$`, l.GetValue())
			}
		}
	}
	inFlight, ok := value(after, "optout_vendor_requests_in_flight", map[string]string{"vendor": "netsuite"})
	require.True(t, ok)
	require.Zero(t, inFlight, "nothing in flight once the run is over")

	// The state: the run just ended, and the propagation age is the
	// oldest pending opt-out's, read from the ledger at the scrape.
	age, ok := value(after, "optout_last_success_age_seconds", demo())
	require.True(t, ok)
	require.GreaterOrEqual(t, age, 0.0)
	require.LessOrEqual(t, age, scraped.Sub(start).Seconds(), "younger than the test")
	_, ok = value(after, "optout_last_success_age_seconds", map[string]string{"integration": "demo-salesforce"})
	require.False(t, ok, "an integration that never ran has no last success")
	prop, ok := value(after, "optout_propagation_age_seconds", demo())
	require.True(t, ok)
	if res.OldestPending == nil {
		require.Zero(t, prop)
	} else {
		require.LessOrEqual(t, prop, scraped.Sub(*res.OldestPending).Seconds())
		require.GreaterOrEqual(t, prop, res.FinishedAt.Sub(*res.OldestPending).Seconds()-1)
	}
	for _, in := range DemoConfig().Integrations {
		v, ok := value(after, "optout_schedule_interval_seconds", map[string]string{"integration": in.ID})
		require.True(t, ok, in.ID)
		require.EqualValues(t, 120, v, in.ID)
		_, ok = value(after, "optout_propagation_age_seconds", map[string]string{"integration": in.ID})
		require.True(t, ok, "every integration has a propagation age: %s", in.ID)
	}

	// The SDK's own series.
	completed, _ := value(after, "temporal_workflow_completed_total", map[string]string{"workflow_type": "SyncWorkflow", "task_queue": workflows.TaskQueue})
	require.GreaterOrEqual(t, completed, 1.0)
	_, ok = value(after, "temporal_activity_execution_latency_seconds", map[string]string{"activity_type": "FinishRun"})
	require.True(t, ok, "activity latencies, as histograms")

	// No label value looks like an address or a hash, in any series.
	for name, mf := range after {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				require.NotRegexp(t, addressLike, l.GetValue(), "%s{%s}", name, l.GetName())
				require.NotRegexp(t, hashLike, l.GetValue(), "%s{%s}", name, l.GetName())
			}
		}
	}
}

// syncBuffer is a log destination the worker's goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestJSONLogsHaveOneSummaryPerRun: with JSON logs, a demo run on the
// worker writes exactly one summary line, valid JSON, naming the
// integration and the run and carrying the run's counts; no line of the
// whole log holds an address.
func TestJSONLogsHaveOneSummaryPerRun(t *testing.T) {
	var out syncBuffer
	log, err := NewLogger(&out, "json", slog.LevelInfo)
	require.NoError(t, err)
	d := startDevAppWith(t, log)
	workflowID, res := d.runDemo(t)
	desc, err := d.client.DescribeWorkflowExecution(t.Context(), workflowID, "")
	require.NoError(t, err)
	runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()

	var summaries []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "a JSON object a line: %s", line)
		if m["msg"] == workflows.RunLogMessage && m["WorkflowID"] == workflowID {
			summaries = append(summaries, m)
			t.Log(line)
		}
	}
	require.Len(t, summaries, 1)
	s := summaries[0]
	require.Equal(t, "demo", s["integration"])
	require.Equal(t, runID, s["RunID"])
	require.Equal(t, "completed", s["result"])
	for key, want := range map[string]activities.Counts{"marketingToCRM": res.Counts.MarketingToCRM, "crmToMarketing": res.Counts.CRMToMarketing, "fieldSync": res.Counts.FieldSync} {
		b, err := json.Marshal(want)
		require.NoError(t, err)
		var w map[string]any
		require.NoError(t, json.Unmarshal(b, &w))
		require.Equal(t, w, s[key], key)
	}
	require.NotRegexp(t, addressLike, out.String())
}

// tcpProxy forwards connections to target until closed; reopened, it
// listens on the same address again. It stands for a network between the
// worker and what it depends on.
type tcpProxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{target: target, conns: map[net.Conn]bool{}}
	p.listen(t, "127.0.0.1:0")
	t.Cleanup(p.Close)
	return p
}

func (p *tcpProxy) listen(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *tcpProxy) pipe(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// Close stops listening and cuts every connection.
func (p *tcpProxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range maps.Keys(p.conns) {
		c.Close()
	}
}

// Reopen listens again on the same address.
func (p *tcpProxy) Reopen(t *testing.T) { p.listen(t, p.addr) }

// ready asks /readyz: its status and its body.
func ready(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestReadinessFollowsTheDatabaseAndTemporal runs the worker as in
// production (a configuration file, a Temporal server reached through
// TEMPORAL_ADDRESS, the ledger on PostgreSQL), with both connections
// through proxies: readiness turns false, naming the check, when the
// database goes away and when Temporal does, and true again when each
// returns; liveness stays true throughout.
func TestReadinessFollowsTheDatabaseAndTemporal(t *testing.T) {
	dsn := ledgertest.DSN(t, ledger.Postgres)
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	db := newTCPProxy(t, u.Host)
	u.Host = db.addr

	ts := temporaltest.NewServer(temporaltest.WithT(t))
	temporal := newTCPProxy(t, ts.GetFrontendHostPort())

	for k, v := range map[string]string{
		"TEMPORAL_ADDRESS": temporal.addr, "TEMPORAL_NAMESPACE": ts.GetDefaultNamespace(),
		"READY_LEDGER_URL": u.String(), "OPTOUT_LEDGER_KEY": "a test ledger key of 32 bytes!!!",
		"MC_KEY": "0123456789abcdef0123456789abcdef-us6", "NS_CK": "ck", "NS_CS": "cs", "NS_TI": "ti", "NS_TS": "ts",
	} {
		t.Setenv(k, v)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
ops: {listen: "127.0.0.1:0"}
codec: {encryption: "off"}
ledger: {driver: postgres, urlEnv: READY_LEDGER_URL}
integrations:
  - id: ready
    schedule: 24h
    marketing: {kind: mailchimp, audience: a1b2c3d4e5, apiKeyEnv: MC_KEY}
    crm: {kind: netsuite, accountId: "1234567", consumerKeyEnv: NS_CK, consumerSecretEnv: NS_CS, tokenIdEnv: NS_TI, tokenSecretEnv: NS_TS, timeZone: UTC}
`), 0o600))
	var ops *OpsServer
	app := NewApp(Flags{ConfigPath: path, SkipCredentialCheck: true}, slog.New(slog.DiscardHandler), fx.Populate(&ops))
	require.NoError(t, app.Err())
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = app.Stop(ctx)
	})

	becomes := func(status int, lines ...string) {
		t.Helper()
		var body string
		require.Eventually(t, func() bool {
			var got int
			got, body = ready(t, ops.Addr())
			if got != status {
				return false
			}
			for _, l := range lines {
				if !strings.Contains(body, l) {
					return false
				}
			}
			return true
		}, 90*time.Second, 250*time.Millisecond, "want %d with %q; last body:\n%s", status, lines, body)
		t.Logf("/readyz %d:\n%s", status, body)
		resp, err := http.Get("http://" + ops.Addr() + "/livez")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "liveness does not follow the dependencies")
	}
	becomes(http.StatusOK, "temporal: ok\n", "worker: ok\n", "ledger: ok\n")

	db.Close()
	becomes(http.StatusServiceUnavailable, "ledger: failed: ", "temporal: ok\n", "worker: ok\n")
	db.Reopen(t)
	becomes(http.StatusOK, "ledger: ok\n")

	temporal.Close()
	becomes(http.StatusServiceUnavailable, "temporal: failed: ", "ledger: ok\n")
	temporal.Reopen(t)
	becomes(http.StatusOK, "temporal: ok\n", "worker: ok\n", "ledger: ok\n")
}

// TestOpsConfig: the ops block is checked like every other key, and the
// dev mode turns the listener on at its loopback port unless told not to.
func TestOpsConfig(t *testing.T) {
	crm := nsTBA + `}`
	mc := `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`
	for top, want := range map[string]string{
		"ops: {listen: 'nope'}\n":                 `ops.listen: "nope" is not a listen address`,
		"ops: {listen: ':70000'}\n":               `ops.listen: ":70000"`,
		"ops: {listen: ':9464', metrics: true}\n": "ops.metrics",
	} {
		_, err := ParseConfig([]byte(top+one(mc, crm, "")), false)
		require.ErrorContains(t, err, want, top)
	}
	cfg, err := ParseConfig([]byte("ops: {listen: '127.0.0.1:9464'}\n"+one(mc, crm, "")), false)
	require.NoError(t, err)
	require.Equal(t, Ops{Listen: "127.0.0.1:9464"}, cfg.Ops)

	e := NewEmulators()
	defer e.Close()
	for port, want := range map[int]string{9464: "127.0.0.1:9464", 0: "127.0.0.1:0", -1: ""} {
		cfg, err := decorateConfigSource(Flags{Dev: true, DataDir: t.TempDir(), OpsPort: port}, e)()
		require.NoError(t, err)
		require.Equal(t, want, cfg.Ops.Listen, "-ops-port %d", port)
	}
}

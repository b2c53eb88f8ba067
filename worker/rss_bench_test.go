package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/devserver"
	"github.com/optoutsync/optoutsync/worker/temporalclient"
	"github.com/optoutsync/optoutsync/workflows"
)

// BenchmarkWorkerRSS measures the worker's memory through a first run
// over a large audience, with the worker in its own process (the binary
// `go build` makes, run as in production: no -dev, a configuration file,
// TEMPORAL_ADDRESS) against a Temporal server it does not embed, and
// prints its peak RSS, the run's time, the opt-outs written and the
// workflow history's length across continue-as-new. Run with
//
//	go test -run '^$' -bench WorkerRSS -benchtime 1x ./worker/
//
// $OPTOUT_BENCH_MEMBERS (default 1,000,000) sets the audience and
// $OPTOUT_BENCH_CHANGES (default 50,000) the changes, a third of each
// kind: Mailchimp unsubscribes to write to NetSuite, NetSuite opt-outs to
// write to Mailchimp, and NetSuite first names to write to Mailchimp
// merge fields. Every changed member has a NetSuite customer in the saved
// search the integration is scoped to; the other members are in Mailchimp
// only, so field sync mirrors the whole audience in the ledger.
//
// This process holds the Temporal server and the emulators; only the
// child's memory is measured: VmRSS from /proc/<pid>/status every 50 ms,
// and VmHWM (the kernel's own peak) at the end.
//
// The worker refuses plain http:// API addresses outside -dev, and -dev
// embeds its own Temporal server, so the emulators are served here over
// TLS too, with the test certificate handed to the child in SSL_CERT_FILE
// (which Go's certificate loader reads on Linux): the worker runs
// unchanged, production rules included.
func BenchmarkWorkerRSS(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads the worker's memory from /proc/<pid>/status, which only Linux has")
	}
	members := benchEnvInt(b, "OPTOUT_BENCH_MEMBERS", 1_000_000)
	changes := benchEnvInt(b, "OPTOUT_BENCH_CHANGES", 50_000)
	if changes < 3 || changes > members {
		b.Fatalf("OPTOUT_BENCH_CHANGES=%d must be between 3 and OPTOUT_BENCH_MEMBERS=%d", changes, members)
	}
	bin := buildBinaries(b, false, ".")["worker"] // no -race: it measures the worker's memory
	for b.Loop() {
		r := runWorkerRSS(b, bin, members, changes)
		b.ReportMetric(mb(r.peakKB), "peak-rss-MB")
		b.ReportMetric(mb(r.peakAnonKB), "peak-anon-MB")
		b.ReportMetric(mb(r.hwmKB), "vmhwm-MB")
		b.ReportMetric(r.elapsed.Seconds(), "run-s")
		b.ReportMetric(float64(r.optOuts), "opt-outs")
		b.ReportMetric(float64(r.events), "history-events")
		b.ReportMetric(float64(r.runs), "runs")
		b.Logf("worker RSS through a first run of %d members, %d changes: peak %.1f MB (VmRSS every 50 ms; VmHWM %.1f MB), "+
			"of which %.1f MB file-backed (the binary's pages) and at most %.1f MB anonymous (heap, stacks); "+
			"idle before the run %.1f MB (%.1f MB file-backed); "+
			"run %s; opt-outs written %d (NetSuite %d, Mailchimp %d), merge fields written %d, members mirrored %d; "+
			"history %d events in %d runs (continue-as-new), at most %d in one run",
			members, changes, mb(r.peakKB), mb(r.hwmKB), mb(r.peakFileKB), mb(r.peakAnonKB), mb(r.idleKB), mb(r.idleFileKB),
			r.elapsed.Round(100*time.Millisecond), r.optOuts, r.res.Counts.MarketingToCRM.CRMOptedOut, r.res.Counts.CRMToMarketing.Unsubscribed,
			r.res.Counts.FieldSync.FieldsUpdated, r.res.Counts.FieldSync.Mirrored, r.events, r.runs, r.maxEvents)
		for _, p := range r.phases {
			b.Logf("  peak RSS in phase %-32s %7.1f MB", p.phase, mb(p.peakKB))
		}
	}
}

// mb converts /proc's kB (KiB) to MB.
func mb(kb int64) float64 { return float64(kb) * 1024 / 1e6 }

// rssResult is what one measured run gives.
type rssResult struct {
	// VmRSS at its highest sample, and its file-backed part (the
	// binary's pages) then; the highest RssAnon (heap, stacks); VmHWM at
	// the end; VmRSS and RssFile once ready, before the run.
	peakKB, peakFileKB, peakAnonKB, hwmKB, idleKB, idleFileKB int64
	elapsed                                                   time.Duration
	optOuts                                                   int
	events, runs                                              int
	maxEvents                                                 int
	res                                                       workflows.SyncResult
	phases                                                    []phasePeak
}

type phasePeak struct {
	phase  workflows.Phase
	peakKB int64
}

func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}

const (
	rssIntegration = "rss-bench"
	rssAudience    = "rss-bench"
	rssSearch      = "customsearch_rss_bench"
)

// rssEmulators seeds Mailchimp with the audience and NetSuite with a
// customer per changed member, and serves both over TLS.
type rssEmulators struct {
	mc              *mailchimptest.Server
	ns              *netsuitetest.Server
	mcURL, nsURL    string
	certFile        string
	toNetSuite      []connectors.RecordRef // customers the run must opt out
	toMailchimp     []string               // addresses the run must unsubscribe
	fieldsToWrite   int
	unsubscribedNow int
}

func startRSSEmulators(b *testing.B, members, changes int) *rssEmulators {
	e := &rssEmulators{}
	e.mc = mailchimptest.NewServer(mailchimptest.Options{})
	b.Cleanup(e.mc.Close)
	e.ns = netsuitetest.NewServer(netsuitetest.Options{})
	b.Cleanup(e.ns.Close)
	e.mc.AddList(rssAudience, "RSS bench", "FNAME")

	every := members / changes
	kind := func(i int) int { // -1: unchanged; 0, 1, 2: the change kinds
		if i%every != 0 || i/every >= changes {
			return -1
		}
		return (i / every) % 3
	}
	email := func(i int) string { return fmt.Sprintf("m%d@example.com", i) }
	now := time.Now()
	year := 365 * 24 * time.Hour
	step := year / time.Duration(members) // members*year would overflow
	changedAt := func(i int) time.Time { return now.Add(-year + time.Duration(i)*step) }
	start := time.Now()
	require.NoError(b, e.mc.Generate(rssAudience, members, func(i int) mailchimptest.MemberSeed {
		s := mailchimptest.MemberSeed{Email: email(i), Status: "subscribed", LastChanged: changedAt(i)}
		if kind(i) == 0 {
			s.Status, s.Reason = "unsubscribed", "N/A (Unsubscribed by bench seed)"
		}
		return s
	}))
	var inSearch []connectors.RecordRef
	for i := 0; i < members; i += every {
		ent := netsuitetest.Entity{Email: email(i), SubscriptionStatus: "1", LastModified: changedAt(i).Truncate(time.Second)}
		switch kind(i) {
		case -1:
			continue
		case 1:
			ent.SubscriptionStatus = "2"
		case 2:
			ent.FirstName = fmt.Sprintf("First%d", i)
		}
		ref := connectors.RecordRef{Type: "customer", ID: e.ns.AddCustomer(ent)}
		inSearch = append(inSearch, ref)
		switch kind(i) {
		case 0:
			e.toNetSuite = append(e.toNetSuite, ref)
			e.unsubscribedNow++
		case 1:
			e.toMailchimp = append(e.toMailchimp, email(i))
		case 2:
			e.fieldsToWrite++
		}
	}
	e.ns.AddSavedSearch(rssSearch, inSearch...)
	b.Logf("seeded %d Mailchimp members and %d NetSuite customers in %s", members, len(inSearch), time.Since(start).Round(time.Millisecond))

	// Both emulators over TLS: the same handlers (counters and in-flight
	// caps included) behind a second listener.
	urls, certFile := serveTLS(b, e.mc.Handler(), e.ns.Handler())
	e.mcURL, e.nsURL, e.certFile = urls[0]+"/3.0", urls[1], certFile
	return e
}

// configYAML is the worker's configuration: one integration with every
// step on, scoped to the saved search, and a SQLite ledger.
func (e *rssEmulators) configYAML(ledgerPath string) string {
	return fmt.Sprintf(`ledger:
  driver: sqlite
  path: %q
integrations:
  - id: %s
    schedule: 24h
    crmToMarketing: true
    fieldMap:
      firstName: FNAME
    marketing:
      kind: mailchimp
      audience: %s
      apiKeyEnv: RSS_BENCH_MAILCHIMP_API_KEY
      baseURL: %s
    crm:
      kind: netsuite
      accountId: %s
      consumerKeyEnv: RSS_BENCH_NS_CONSUMER_KEY
      consumerSecretEnv: RSS_BENCH_NS_CONSUMER_SECRET
      tokenIdEnv: RSS_BENCH_NS_TOKEN_ID
      tokenSecretEnv: RSS_BENCH_NS_TOKEN_SECRET
      timeZone: UTC
      baseURL: %s
      recordTypes: [customer]
      lists: [%s]
`, ledgerPath, rssIntegration, rssAudience, e.mcURL, e.ns.AccountID, e.nsURL, rssSearch)
}

func (e *rssEmulators) env() []string {
	return []string{
		"RSS_BENCH_MAILCHIMP_API_KEY=" + e.mc.APIKey,
		"RSS_BENCH_NS_CONSUMER_KEY=" + e.ns.ConsumerKey,
		"RSS_BENCH_NS_CONSUMER_SECRET=" + e.ns.ConsumerSecret,
		"RSS_BENCH_NS_TOKEN_ID=" + e.ns.TokenID,
		"RSS_BENCH_NS_TOKEN_SECRET=" + e.ns.TokenSecret,
		"SSL_CERT_FILE=" + e.certFile,
	}
}

func runWorkerRSS(b *testing.B, bin string, members, changes int) rssResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	dir := b.TempDir()
	em := startRSSEmulators(b, members, changes)

	serverLog, err := os.Create(filepath.Join(dir, "temporal.log"))
	require.NoError(b, err)
	b.Cleanup(func() { _ = serverLog.Close() })
	srv, err := devserver.Start(ctx, devserver.Options{
		UIPort:           -1,
		SearchAttributes: map[string]enumspb.IndexedValueType{workflows.IntegrationKey.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD},
		Logger:           slog.New(slog.NewTextHandler(serverLog, nil)),
	})
	require.NoError(b, err)
	b.Cleanup(func() { _ = srv.Stop() })
	// Payloads encrypted, as the worker requires outside the demo: the
	// benchmark's client reads the run's result with the same key.
	codecKey := testCodecKey(b, "bench")
	keys, err := codec.ParseKeys(codec.KeysEnv, codecKey)
	require.NoError(b, err)
	cd, err := codec.New(keys, true)
	require.NoError(b, err)
	opts := client.Options{HostPort: srv.FrontendAddress(), Namespace: srv.Namespace(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))}
	temporalclient.WithCodec(&opts, cd)
	c, err := client.Dial(opts)
	require.NoError(b, err)
	b.Cleanup(c.Close)

	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(b, os.WriteFile(cfgPath, []byte(em.configYAML(filepath.Join(dir, "ledger.db"))), 0o600))
	// $OPTOUT_BENCH_WORKER_LOG keeps the worker's log (e.g. with
	// GODEBUG=gctrace=1, which the worker inherits) after the benchmark.
	workerLog := os.Getenv("OPTOUT_BENCH_WORKER_LOG")
	if workerLog == "" {
		workerLog = filepath.Join(dir, "worker.log")
	}
	logFile, err := os.Create(workerLog)
	require.NoError(b, err)
	b.Cleanup(func() { _ = logFile.Close() })

	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(withoutTemporalEnv(os.Environ()),
		"TEMPORAL_ADDRESS="+srv.FrontendAddress(),
		"TEMPORAL_NAMESPACE="+srv.Namespace(),
		ledger.DefaultKeyEnv+"=rss bench ledger key, not a secret",
		codec.KeysEnv+"="+codecKey,
	)
	cmd.Env = append(cmd.Env, em.env()...)
	require.NoError(b, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	b.Cleanup(stop)
	fail := func(format string, args ...any) {
		b.Helper()
		b.Fatalf(format+"\nworker log (tail):\n%s", append(args, tail(workerLog, 40))...)
	}

	// Ready once its schedule exists (it creates it before polling).
	sched := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(rssIntegration))
	ready := time.Now().Add(3 * time.Minute)
	for {
		if _, err := sched.Describe(ctx); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			fail("the worker exited before it was ready: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(ready) {
			fail("the worker created no schedule within 3 minutes")
		}
	}
	pid := cmd.Process.Pid
	idle, err := procStatus(pid)
	require.NoError(b, err)

	// Sample VmRSS every 50 ms; the phase (from the status query, as
	// `starter run` follows a run) tells where the peak was reached.
	var (
		mu    sync.Mutex
		peak  map[string]int64 // at the highest VmRSS
		anon  int64            // the highest RssAnon
		phase = workflows.PhaseStarting
		peaks = map[workflows.Phase]int64{}
		order []workflows.Phase
	)
	quit, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			kb, err := procStatus(pid)
			if err != nil {
				return // the process is gone
			}
			mu.Lock()
			if kb["VmRSS"] > peak["VmRSS"] {
				peak = kb
			}
			anon = max(anon, kb["RssAnon"])
			if _, ok := peaks[phase]; !ok {
				order = append(order, phase)
			}
			peaks[phase] = max(peaks[phase], kb["VmRSS"])
			mu.Unlock()
			select {
			case <-t.C:
			case <-quit:
				return
			}
		}
	}()

	start := time.Now()
	require.NoError(b, sched.Trigger(ctx, client.ScheduleTriggerOptions{}))
	var wid, firstRun string
	for wid == "" {
		desc, err := sched.Describe(ctx)
		require.NoError(b, err)
		for _, a := range desc.Info.RecentActions {
			if r := a.StartWorkflowResult; r != nil {
				wid, firstRun = r.WorkflowID, r.FirstExecutionRunID
			}
		}
		if wid == "" {
			if time.Since(start) > time.Minute {
				fail("the schedule started no run within a minute of the trigger")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var res workflows.SyncResult
	done := make(chan error, 1)
	go func() { done <- c.GetWorkflow(ctx, wid, "").Get(ctx, &res) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
wait:
	for {
		select {
		case runErr = <-done:
			break wait
		case err := <-exited:
			exited <- err
			fail("the worker exited during the run: %v", err)
		case <-tick.C:
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			v, err := c.QueryWorkflow(qctx, wid, "", workflows.StatusQuery)
			var st workflows.Status
			if err == nil && v.Get(&st) == nil && st.Phase != "" {
				mu.Lock()
				phase = st.Phase
				mu.Unlock()
			}
			qcancel()
		}
	}
	elapsed := time.Since(start)
	if runErr != nil {
		fail("run %s failed: %v", wid, runErr)
	}
	close(quit)
	<-sampled
	last, err := procStatus(pid)
	require.NoError(b, err)
	stop()

	events, runs, maxEvents := historyLength(b, ctx, c, wid, firstRun)

	// The run did what it was seeded to do, on both systems.
	require.Empty(b, res.Failures)
	require.Equal(b, len(em.toNetSuite), res.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(b, len(em.toMailchimp), res.Counts.CRMToMarketing.Unsubscribed)
	require.Equal(b, em.fieldsToWrite, res.Counts.FieldSync.FieldsUpdated)
	for _, ref := range em.toNetSuite {
		ent, ok := em.ns.Entity(ref.Type, ref.ID)
		require.True(b, ok)
		require.Equal(b, "2", ent.SubscriptionStatus, "customer %s", ref.ID)
	}
	for _, addr := range em.toMailchimp {
		m, ok := em.mc.Member(rssAudience, addr)
		require.True(b, ok)
		require.Equal(b, "unsubscribed", m.Status, addr)
	}
	require.Equal(b, em.unsubscribedNow+len(em.toMailchimp), em.mc.CountByStatus(rssAudience)["unsubscribed"])

	r := rssResult{peakKB: peak["VmRSS"], peakFileKB: peak["RssFile"], peakAnonKB: anon, hwmKB: last["VmHWM"],
		idleKB: idle["VmRSS"], idleFileKB: idle["RssFile"], elapsed: elapsed, res: res,
		optOuts: res.Counts.MarketingToCRM.CRMOptedOut + res.Counts.CRMToMarketing.Unsubscribed,
		events:  events, runs: runs, maxEvents: maxEvents}
	for _, p := range order {
		r.phases = append(r.phases, phasePeak{p, peaks[p]})
	}
	return r
}

// withoutTemporalEnv drops this machine's Temporal client settings, so
// the worker dials the benchmark's server and nothing else.
func withoutTemporalEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TEMPORAL_") {
			out = append(out, kv)
		}
	}
	return out
}

// procStatus reads the "kB" fields of /proc/<pid>/status: VmRSS (RssAnon
// + RssFile + RssShmem), VmHWM (the peak of VmRSS), and the parts.
func procStatus(pid int) (map[string]int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	kb := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		v, found := strings.CutSuffix(strings.TrimSpace(rest), " kB")
		if !ok || !found {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			kb[name] = n
		}
	}
	if _, ok := kb["VmRSS"]; !ok {
		return nil, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return kb, nil
}

// historyLength counts the events of a run's histories, following its
// continue-as-new chain from the first run: the total, the runs, and the
// largest single history (the one Temporal's limits apply to).
func historyLength(b *testing.B, ctx context.Context, c client.Client, wid, runID string) (total, runs, most int) {
	for runID != "" {
		runs++
		n := 0
		next := ""
		it := c.GetWorkflowHistory(ctx, wid, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			require.NoError(b, err)
			n++
			if a := ev.GetWorkflowExecutionContinuedAsNewEventAttributes(); a != nil {
				next = a.GetNewExecutionRunId()
			}
		}
		total += n
		most = max(most, n)
		runID = next
	}
	return total, runs, most
}

// tail is the last n lines of a file, for a failure message.
func tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

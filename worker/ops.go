package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
	"github.com/optoutsync/optoutsync/connectors/metrics"
)

// Ops is the "ops:" block: the operations listener, which serves the
// Prometheus metrics (/metrics), liveness (/livez) and readiness (/readyz).
type Ops struct {
	// Listen is the listener's address, e.g. "127.0.0.1:9464"; "" turns
	// it off (in -dev mode it defaults to 127.0.0.1:9464, see -ops-port).
	Listen string `yaml:"listen"`
}

func (o Ops) validate() []string { return checkListen("ops.listen", o.Listen, "9464") }

// OpsModule serves the operations listener when ops.listen is set.
var OpsModule = fx.Module("ops",
	fx.Provide(provideHealth, provideOps),
	fx.Invoke(func(*OpsServer) {}),
)

// The timeouts of the operations listener.
const (
	// checkTimeout bounds each readiness check.
	checkTimeout = 2 * time.Second
	// stateTTL is how long the state read for a scrape (last runs,
	// oldest pending opt-outs) is reused: scrapes from several
	// Prometheus servers cost the database one read.
	stateTTL = 10 * time.Second
)

// Health is what readiness checks: the Temporal frontend answers, the
// worker polls, the ledger's database answers.
type Health struct {
	client client.Client
	ledger ledger.Ledger

	mu     sync.Mutex
	worker string // "" while polling; otherwise why not
}

func provideHealth(c client.Client, led ledger.Ledger) *Health {
	return &Health{client: c, ledger: led, worker: "not started"}
}

// WorkerStarted, WorkerStopping and WorkerFailed follow the worker's life.
func (h *Health) WorkerStarted()  { h.setWorker("") }
func (h *Health) WorkerStopping() { h.setWorker("stopping") }

// WorkerFailed records the fatal error that stopped the worker.
func (h *Health) WorkerFailed(err error) { h.setWorker("stopped on a fatal error: " + err.Error()) }

func (h *Health) setWorker(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.worker = s
}

// Check is one readiness check's answer: nil when it passed.
type Check struct {
	Name string
	Err  error
}

// Checks runs the readiness checks at once, each within checkTimeout.
func (h *Health) Checks(ctx context.Context) []Check {
	checks := []Check{{Name: "temporal"}, {Name: "worker"}, {Name: "ledger"}}
	run := []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := h.client.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		},
		func(context.Context) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.worker != "" {
				return errors.New(h.worker)
			}
			return nil
		},
		h.ledger.Ping,
	}
	var wg sync.WaitGroup
	for i := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			checks[i].Err = run[i](cctx)
		})
	}
	wg.Wait()
	return checks
}

func (h *Health) serveReady(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	ok := true
	for _, c := range h.Checks(r.Context()) {
		if c.Err != nil {
			ok = false
			// An error may quote a vendor's or a driver's answer: no
			// address leaves in it.
			fmt.Fprintf(&b, "%s: failed: %s\n", c.Name, httpx.Redact(c.Err.Error()))
		} else {
			fmt.Fprintf(&b, "%s: ok\n", c.Name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, b.String())
}

// OpsServer is the running operations listener.
type OpsServer struct {
	addr string
}

// Addr is where it listens once started ("" when off).
func (o *OpsServer) Addr() string { return o.addr }

// provideOps listens on ops.listen at start (synchronously, so a taken
// port fails the start) and serves in a goroutine. It starts before the
// worker and stops after it, so readiness says "stopping" while running
// activities finish.
func provideOps(lc fx.Lifecycle, cfg *Config, h *Health, reg activities.MapRegistry, led ledger.Ledger, log *slog.Logger) *OpsServer {
	o := &OpsServer{}
	if cfg.Ops.Listen == "" {
		return o
	}
	state := prometheus.NewRegistry()
	state.MustRegister(newStateCollector(cfg, reg, led, log))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(state))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", h.serveReady)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", cfg.Ops.Listen)
			if err != nil {
				return fmt.Errorf("ops.listen: %w", err)
			}
			o.addr = ln.Addr().String()
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("operations listener stopped", "error", err)
				}
			}()
			log.Info("operations listener serving /metrics, /livez and /readyz", "addr", o.addr)
			return nil
		},
		OnStop: srv.Shutdown,
	})
	return o
}

// stateCollector gives, at each scrape, what is state rather than an
// event, read from what every worker shares (the ledger) or reports (a
// CRM's budget), so that any worker answers right whichever ran the run.
type stateCollector struct {
	cfg *Config
	reg activities.MapRegistry
	led ledger.Ledger
	log *slog.Logger

	mu      sync.Mutex
	readAt  time.Time
	runs    map[string]ledger.Run
	pending map[string]time.Time // integrations with an opt-out pending
	err     error
}

var (
	descInterval = prometheus.NewDesc(metrics.Namespace+"_schedule_interval_seconds",
		"The integration's configured interval between scheduled runs.", []string{"integration"}, nil)
	descLastSuccess = prometheus.NewDesc(metrics.Namespace+"_last_success_age_seconds",
		"Time since the integration's last successful run, by any worker (absent before the first).", []string{"integration"}, nil)
	descPropagation = prometheus.NewDesc(metrics.Namespace+"_propagation_age_seconds",
		"Age of the oldest opt-out observed and not yet written to its other side (0 when none is pending).", []string{"integration"}, nil)
	descBudgetLeft = prometheus.NewDesc(metrics.Namespace+"_crm_api_budget_remaining",
		"Calls left in the CRM's daily API budget, as its last answer to this worker said (CRMs that report one).", []string{"integration"}, nil)
	descBudgetMax = prometheus.NewDesc(metrics.Namespace+"_crm_api_budget_max",
		"The CRM's daily API budget, as its last answer to this worker said.", []string{"integration"}, nil)
)

func newStateCollector(cfg *Config, reg activities.MapRegistry, led ledger.Ledger, log *slog.Logger) *stateCollector {
	return &stateCollector{cfg: cfg, reg: reg, led: led, log: log}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInterval, descLastSuccess, descPropagation, descBudgetLeft, descBudgetMax} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	runs, pending, err := c.read()
	now := time.Now()
	for i := range c.cfg.Integrations {
		id := c.cfg.Integrations[i].ID
		ch <- prometheus.MustNewConstMetric(descInterval, prometheus.GaugeValue, c.cfg.Integrations[i].Interval().Seconds(), id)
		if err == nil {
			if r, ok := runs[id]; ok {
				ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, max(now.Sub(r.FinishedAt).Seconds(), 0), id)
			}
			age := 0.0
			if at, ok := pending[id]; ok {
				age = max(now.Sub(at).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(descPropagation, prometheus.GaugeValue, age, id)
		}
		if integ := c.reg[id]; integ != nil {
			if u, ok := integ.CRM.(connectors.UsageReporter); ok {
				if used, limit, ok := u.APIUsage(); ok {
					ch <- prometheus.MustNewConstMetric(descBudgetLeft, prometheus.GaugeValue, float64(max(limit-used, 0)), id)
					ch <- prometheus.MustNewConstMetric(descBudgetMax, prometheus.GaugeValue, float64(limit), id)
				}
			}
		}
	}
}

// read returns the ledger's state, read at most once per stateTTL. A
// failed read is kept as long (the database being down must not make
// every scrape wait for the timeout); readiness reports it.
func (c *stateCollector) read() (map[string]ledger.Run, map[string]time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && time.Since(c.readAt) < stateTTL {
		return c.runs, c.pending, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	c.readAt = time.Now()
	c.runs, c.pending, c.err = nil, map[string]time.Time{}, nil
	c.runs, c.err = c.led.LastRuns(ctx)
	for i := range c.cfg.Integrations {
		if c.err != nil {
			break
		}
		id := c.cfg.Integrations[i].ID
		var at time.Time
		var ok bool
		if at, ok, c.err = c.led.OldestPending(ctx, id); ok {
			c.pending[id] = at
		}
	}
	if c.err != nil {
		c.log.Warn("metrics: cannot read the ledger; its series are left out until it answers", "error", c.err)
	}
	return c.runs, c.pending, c.err
}

var (
	sdkMetricsOnce sync.Once
	sdkMetrics     client.MetricsHandler
)

// temporalMetrics is the Temporal SDK's own metrics (workflow and activity
// task latencies, polls, failures), reported through the SDK's tally
// contrib into the process's registry. One per process, like the registry
// its series are registered in.
func temporalMetrics(log *slog.Logger) client.MetricsHandler {
	sdkMetricsOnce.Do(func() {
		reporter := tallyprom.NewReporter(tallyprom.Options{
			Registerer:       metrics.Registry,
			DefaultTimerType: tallyprom.HistogramTimerType,
			OnRegisterError:  func(err error) { log.Warn("metrics: a Temporal SDK series cannot be registered", "error", err) },
		})
		// Names and label keys as Prometheus wants them; label values
		// keep their '-' and '.', so that the task queue reads
		// "optout-sync" as everywhere else.
		sanitize := sdktally.PrometheusSanitizeOptions
		sanitize.ValueCharacters = tally.ValidCharacters{Ranges: tally.AlphanumericRange, Characters: []rune{'_', '-', '.', ':', '/'}}
		scope, _ := tally.NewRootScope(tally.ScopeOptions{
			CachedReporter:  reporter,
			Separator:       tallyprom.DefaultSeparator,
			SanitizeOptions: &sanitize,
		}, time.Second)
		sdkMetrics = sdktally.NewMetricsHandler(sdktally.NewPrometheusNamingScope(scope))
	})
	return sdkMetrics
}

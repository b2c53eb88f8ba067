// Package metrics holds the worker's Prometheus series: the registry they
// are gathered from and every product series, defined here once so that
// their names, labels and meanings sit in one table (the README's). The
// code that counts an event increments the series: the shared HTTP layer
// (connectors/httpx) the vendor calls, the activities the opt-outs and the
// failures. What is state rather than an event (the time since a run
// succeeded, the oldest opt-out not yet propagated, a CRM's budget) is
// read when scraped, by the worker's collector.
//
// Labels name integrations, steps, vendors, endpoint classes and status
// codes: never an address, a hash, a record id or a secret.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds the process's series: the product's, the Go runtime's
// and the process's. The series count events of the whole process (the
// connectors' HTTP clients are process-wide, like their limiters), so
// the registry is too; what one worker app adds is gathered beside it
// (see Handler).
var Registry = prometheus.NewRegistry()

// Namespace starts every product series name.
const Namespace = "optout"

// The failure kinds, as the activities classify failures.
const (
	// KindTransient: retried (by the next run for an item, by Temporal's
	// retry policy for a call).
	KindTransient = "transient"
	// KindFinal: retrying cannot change it (an invalid, fake or forgotten
	// address; bad credentials; a spent budget).
	KindFinal = "final"
	// KindCompliance: refused because the person is unsubscribed, cleaned
	// or deleted: final, and not a failure of the run.
	KindCompliance = "compliance"
)

var (
	// OptOutsObserved counts opt-outs read at their source, by direction:
	// marketing-to-crm (marketing unsubscribes, polled or pushed by a
	// webhook) and crm-to-marketing (opted-out CRM records). The watermark
	// overlap reads a few again: it is a count of readings.
	OptOutsObserved = counter("optouts_observed_total",
		"Opt-outs read at their source, by direction (marketing-to-crm, crm-to-marketing).", "integration", "direction")
	// OptOutsWritten counts opt-outs this product wrote to the other side:
	// CRM records opted out (marketing-to-crm), members unsubscribed or
	// added as unsubscribed (crm-to-marketing).
	OptOutsWritten = counter("optouts_written_total",
		"Opt-outs written to the other system, by direction.", "integration", "direction")
	// FieldSyncWrites counts the field-sync step's member writes.
	FieldSyncWrites = counter("field_sync_writes_total",
		"Members written by field-sync: action updated (merge fields) or added (new member).", "integration", "action")
	// ItemFailures counts items (a record, a member) not written, by step
	// and kind (transient, final, compliance).
	ItemFailures = counter("item_failures_total",
		"Items not written, by step and kind (transient: retried by the next run; final; compliance).", "integration", "step", "kind")
	// ActivityFailures counts the errors the activities classify (a
	// vendor's answer, the ledger): transient ones, which Temporal's retry
	// policy retries (or, for pushed events, the next batch), and final
	// ones, which fail the run (credentials, permissions, a spent budget).
	ActivityFailures = counter("activity_failures_total",
		"Errors the activities met, by kind (transient: retried; final: the run fails).", "integration", "kind")

	// VendorRequests counts HTTP requests to the vendors' APIs, each
	// attempt once, by vendor, endpoint class and status code ("error"
	// when no answer came).
	VendorRequests = counter("vendor_requests_total",
		"HTTP requests to vendor APIs (each attempt), by vendor, endpoint class and status code.", "vendor", "endpoint", "code")
	// VendorLimited counts limit answers (HTTP 429).
	VendorLimited = counter("vendor_limit_answers_total",
		"Limit answers (HTTP 429) from vendor APIs.", "vendor")
	// VendorRetries counts requests sent again by the HTTP layer after a
	// transient failure (a connection error, a 429, a 5xx).
	VendorRetries = counter("vendor_retries_total",
		"Vendor API requests retried by the HTTP layer.", "vendor")
	// VendorInFlight is the requests sent and not yet answered in full.
	VendorInFlight = gauge("vendor_requests_in_flight",
		"Vendor API requests in flight.", "vendor")
)

func counter(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	Registry.MustRegister(c)
	return c
}

func gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	Registry.MustRegister(g)
	return g
}

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// Handler serves the process's series and those of more, in the
// Prometheus text format. A collector that fails is reported in the
// answer's errors and the rest is still served.
func Handler(more ...prometheus.Gatherer) http.Handler {
	g := append(prometheus.Gatherers{Registry}, more...)
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

package activities_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// benchBullhornVendor is Bullhorn as the benchmark loads it: Mailchimp's
// latency (150 ms, scaled as benchVendors scales it) and the connector's
// default of 10 calls in flight, with its pacing to the newer editions'
// 1,500 requests a minute (B6) sped up by the same scale, so that the
// rate bounds the steps here as it does at the real latency. rpm is that
// scaled limit, which the bound counts too (vendor.bound).
func benchBullhornVendor() (v vendor, rpm int) {
	mc, _, _ := benchVendors()
	scale := int(150 * time.Millisecond / mc.latency)
	rpm = 1500 * scale
	return vendor{name: "bullhorn", latency: mc.latency, inFlight: 10, perMinute: rpm}, rpm
}

// benchBullhorn starts a corporation of n records of each of types,
// opted out or not, modified a millisecond apart over the past hour (a
// whole table stamped in one millisecond would make every change read
// skip a run of equal stamps), and a client limited to the vendor's
// in-flight cap and paced to rpm. The emulator enforces no rate: the
// client's own pacing is what is measured.
func benchBullhorn(b *testing.B, v *vendor, rpm int, types []string, n int, optedOut bool) *bullhorn.Client {
	clock := emulator.NewClock(time.Now().Add(-time.Hour))
	srv := bullhorntest.NewServer(bullhorntest.Options{RequestsPerMinute: -1, Clock: clock.Now})
	b.Cleanup(srv.Close)
	for _, t := range types {
		srv.Seed(t, n, func(i int) bullhorntest.Person {
			clock.Advance(time.Millisecond)
			return bullhorntest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: optedOut}
		})
	}
	v.attach(srv.Middleware)
	crm, err := bullhorn.New(bullhorn.Options{LoginInfoURL: srv.LoginInfoURL(), ClientID: srv.ClientID, ClientSecret: srv.ClientSecret,
		Username: srv.Username, Password: srv.Password, MaxInFlight: v.inFlight, RequestsPerMinute: rpm})
	require.NoError(b, err)
	return crm
}

// BenchmarkThroughputBullhorn is BenchmarkThroughput's Bullhorn part, run
// by the same command (-bench Throughput).
func BenchmarkThroughputBullhorn(b *testing.B) { benchThroughputBullhorn(b) }

func benchThroughputBullhorn(b *testing.B) {
	b.Run("bullhorn/marketing-to-crm", func(b *testing.B) {
		const n = 2_000
		types := []string{"Candidate", "ClientContact", "Lead"}
		mcV, _, _ := benchVendors()
		bV, rpm := benchBullhornVendor()
		for b.Loop() {
			mk := benchMailchimp(b, &mcV, n, "unsubscribed")
			crm := benchBullhorn(b, &bV, rpm, types[:1], n, false)
			s := benchSettings("bench-bh-m2c", "bullhorn", types)
			acts := benchActivities(b, s, mk, crm)
			// Sign in before the clock starts, as a worker's client has.
			require.NoError(b, crm.Ping(b.Context()))
			mcV.mw.ResetCounts()
			bV.mw.ResetCounts()
			start := startClock()
			c := drain(b, acts, acts.SyncMarketingChanges, activities.PageInput{IntegrationID: s.IntegrationID, Settings: s, Status: connectors.StatusUnsubscribed})
			elapsed := start.stop()
			require.Equal(b, n, c.CRMOptedOut)
			// One search per record type per 100 addresses (MaxBatch), one
			// entity update per record: Bullhorn's mass update keeps no
			// per-record results.
			calls := 3*((n+99)/100) + n
			report(b, n, elapsed, need{&mcV, (n + 999) / 1000}, need{&bV, calls})
		}
	})
	b.Run("bullhorn/crm-to-marketing", func(b *testing.B) {
		const n = 20_000
		mcV, _, _ := benchVendors()
		bV, rpm := benchBullhornVendor()
		for b.Loop() {
			mk := benchMailchimp(b, &mcV, n, "subscribed")
			crm := benchBullhorn(b, &bV, rpm, []string{"Candidate"}, n, true)
			s := benchSettings("bench-bh-c2m", "bullhorn", []string{"Candidate"})
			acts := benchActivities(b, s, mk, crm)
			require.NoError(b, crm.Ping(b.Context()))
			mcV.mw.ResetCounts()
			bV.mw.ResetCounts()
			start := startClock()
			c := drain(b, acts, acts.SyncCRMOptOuts, activities.PageInput{IntegrationID: s.IntegrationID, Settings: s, Since: time.Now().AddDate(-1, 0, 0)})
			elapsed := start.stop()
			require.Equal(b, n, c.Unsubscribed)
			// Searches of 500 rows, the most a call asks (B3).
			calls := (n + 499) / 500
			report(b, n, elapsed, need{&mcV, (n + 499) / 500}, need{&bV, calls})
		}
	})
}

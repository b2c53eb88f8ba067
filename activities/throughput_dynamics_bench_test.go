package activities_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
)

// benchDynamicsVendor is Dataverse as the benchmark loads it: Mailchimp's
// latency (150 ms, scaled as benchVendors scales it) and the connector's
// default of 8 requests in flight, well under the 52 service protection
// allows per user.
func benchDynamicsVendor() vendor {
	mc, _, _ := benchVendors()
	return vendor{name: "dynamics", latency: mc.latency, inFlight: dynamics.DefaultMaxInFlight}
}

// benchDynamics starts an environment of n contacts, opted out or not, and
// a client limited to the vendor's in-flight cap.
func benchDynamics(b *testing.B, v *vendor, n int, optedOut bool) connectors.CRM {
	srv := dynamicstest.NewServer(dynamicstest.Options{RequestLimit: -1})
	b.Cleanup(srv.Close)
	srv.Seed("contacts", n, func(i int) dynamicstest.Person {
		return dynamicstest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: optedOut}
	})
	v.attach(srv.Middleware)
	crm, err := dynamics.New(dynamics.Options{OrgURL: srv.URL, AuthorityURL: srv.URL, TenantID: srv.TenantID,
		ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, MaxInFlight: v.inFlight})
	require.NoError(b, err)
	return crm
}

// BenchmarkThroughputDynamics is BenchmarkThroughput's Dynamics 365 part,
// run by the same command (-bench Throughput).
func BenchmarkThroughputDynamics(b *testing.B) { benchThroughputDynamics(b) }

func benchThroughputDynamics(b *testing.B) {
	b.Run("dynamics/marketing-to-crm", func(b *testing.B) {
		const n = 4_000
		mcV, _, _ := benchVendors()
		dV := benchDynamicsVendor()
		for b.Loop() {
			mk := benchMailchimp(b, &mcV, n, "unsubscribed")
			crm := benchDynamics(b, &dV, n, false)
			s := benchSettings("bench-dyn-m2c", "dynamics", []string{"contact", "lead"})
			acts := benchActivities(b, s, mk, crm)
			mcV.mw.ResetCounts()
			dV.mw.ResetCounts()
			start := startClock()
			c := drain(b, acts, acts.SyncMarketingChanges, activities.PageInput{IntegrationID: s.IntegrationID, Settings: s, Status: connectors.StatusUnsubscribed})
			elapsed := start.stop()
			require.Equal(b, n, c.CRMOptedOut)
			// One $batch of lookups (a query per record type) per 200
			// addresses, one $batch of writes per 200 records.
			report(b, n, elapsed, need{&mcV, (n + 999) / 1000}, need{&dV, 2 * ((n + 199) / 200)})
		}
	})
	b.Run("dynamics/crm-to-marketing", func(b *testing.B) {
		const n = 20_000
		mcV, _, _ := benchVendors()
		dV := benchDynamicsVendor()
		for b.Loop() {
			mk := benchMailchimp(b, &mcV, n, "subscribed")
			crm := benchDynamics(b, &dV, n, true)
			s := benchSettings("bench-dyn-c2m", "dynamics", []string{"contact"})
			acts := benchActivities(b, s, mk, crm)
			mcV.mw.ResetCounts()
			dV.mw.ResetCounts()
			start := startClock()
			c := drain(b, acts, acts.SyncCRMOptOuts, activities.PageInput{IntegrationID: s.IntegrationID, Settings: s, Since: time.Now().AddDate(-1, 0, 0)})
			elapsed := start.stop()
			require.Equal(b, n, c.Unsubscribed)
			// Query batches of 5,000 rows, the most Dataverse answers at
			// once (a page of 1,000 takes the rest of a batch without a call).
			report(b, n, elapsed, need{&mcV, (n + 499) / 500}, need{&dV, (n + 4999) / 5000})
		}
	})
}

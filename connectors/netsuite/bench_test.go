package netsuite_test

import (
	"testing"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// BenchmarkOptedOut100k reads every opt-out of a 100k population (10%
// opted out, a saved search over a fifth of it) page by page, as a first
// sync run would.
func BenchmarkOptedOut100k(b *testing.B) {
	s := netsuitetest.NewServer(netsuitetest.Options{Concurrency: -1})
	defer s.Close()
	s.Populate(netsuitetest.Population{Customers: 60_000, Contacts: 40_000, OptedOut: 0.1, Duplicates: 0.2, SavedSearch: "customsearch_sync", InSearch: 0.2, Seed: 1})
	c := tbaClient(b, s)
	for _, bc := range []struct {
		name  string
		lists []string
	}{{"all", nil}, {"scoped", []string{"customsearch_sync"}}} {
		b.Run(bc.name, func(b *testing.B) {
			records := 0
			s.Middleware.ResetCounts()
			for b.Loop() {
				q := connectors.OptOutQuery{Types: both, Field: standard, Since: time.Now().AddDate(-2, 0, 0), Lists: bc.lists}
				for {
					page, err := c.OptedOut(b.Context(), q)
					if err != nil {
						b.Fatal(err)
					}
					records += len(page.Records)
					if page.Next == "" {
						break
					}
					q.Cursor = page.Next
				}
			}
			b.ReportMetric(float64(records)/float64(b.N), "records/op")
			b.ReportMetric(float64(s.Middleware.Total())/float64(b.N), "requests/op")
		})
	}
}

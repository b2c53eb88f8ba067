package workflows_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// lostAcks answers every nth delivery the receiver took with a 503, as if
// the answer were lost on the way back: Mailchimp then retries a delivery
// that is already durable, a duplicate the workflow must drop.
func lostAcks(n int, lost *atomic.Int64) func(http.Handler) http.Handler {
	var seen atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || seen.Add(1)%int64(n) != 0 {
				next.ServeHTTP(w, r)
				return
			}
			rec := &statusRecorder{header: http.Header{}}
			next.ServeHTTP(rec, r)
			if rec.status == http.StatusOK {
				lost.Add(1)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		})
	}
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.status = code }

// seedPeople gives n people a subscribed member and a NetSuite customer
// each, returning their addresses and the customers' ids.
func seedPeople(t testing.TB, h *hookStack, n int) ([]string, []string) {
	t.Helper()
	emails := make([]string, n)
	ids := make([]string, n)
	require.NoError(t, h.mc.Generate(audience, n, func(i int) mailchimptest.MemberSeed {
		emails[i] = fmt.Sprintf("person%05d@example.com", i)
		return mailchimptest.MemberSeed{Email: emails[i], Status: "subscribed"}
	}))
	for i, e := range emails {
		ids[i] = h.ns.AddCustomer(netsuitetest.Entity{Email: e, SubscriptionStatus: "1"})
	}
	return emails, ids
}

// 10,000 unsubscribes delivered within 10 seconds, one in twenty of them
// delivered twice (the first answer lost): every one is applied exactly
// once, and the workflow's history stays within Temporal's limits.
func TestWebhookLoadTenThousandDeliveriesAppliedOnce(t *testing.T) {
	const n = 10000
	var lost atomic.Int64
	h := newHookStack(t, "", lostAcks(20, &lost))
	h.patience = 15 * time.Minute // -race on a small machine is several times slower
	emails, ids := seedPeople(t, h, n)

	start := time.Now()
	for _, e := range emails {
		require.NoError(t, h.mc.Act(audience, e, "unsubscribe", mailchimptest.SourceUser))
	}
	fired := time.Since(start)
	st := h.settle(t, n)
	t.Logf("%d unsubscribes made in %s; all applied %s after the first; %d deliveries, %d duplicates, %d batches, continued as new %d times",
		n, fired.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), st.Received, st.Duplicates, st.Batches, st.Continued)
	require.Less(t, fired, 10*time.Second, "the load is 10,000 deliveries within 10 seconds")

	require.Equal(t, n, st.Counts.Events, "each unsubscribe applied once")
	require.Equal(t, n, st.Counts.CRMOptedOut)
	byStatus := map[int]int{}
	for _, d := range h.mc.Deliveries() {
		byStatus[d.Status]++
	}
	t.Logf("answers to the emulator by status: %v; acks lost on purpose: %d", byStatus, lost.Load())
	require.Zero(t, h.mc.WebhookStats().GaveUp, "no delivery given up")
	require.Positive(t, lost.Load())
	require.GreaterOrEqual(t, st.Duplicates, int(lost.Load())-byStatus[0], "re-deliveries of taken deliveries dropped")
	require.Equal(t, n, st.Received-st.Duplicates, "every delivery taken once")
	require.Equal(t, n, h.ns.Middleware.Counts()["PATCH /services/rest/record/v1/{type}/{id}"], "one write per record")
	for i, id := range ids {
		e, ok := h.ns.Entity("customer", id)
		require.True(t, ok)
		require.Equal(t, "2", e.SubscriptionStatus, emails[i])
	}
	desc, err := h.c.DescribeWorkflowExecution(t.Context(), workflows.EventsWorkflowID(h.id), "")
	require.NoError(t, err)
	require.Less(t, desc.GetWorkflowExecutionInfo().GetHistoryLength(), int64(10240), "under Temporal's history warning")
}

// BenchmarkWebhookLatency prints the time from a person's unsubscribe in
// the Mailchimp emulator (its webhook delivery starts at once) to the
// NetSuite emulator holding the opt-out, at 1 and at 100 events a second.
func BenchmarkWebhookLatency(b *testing.B) {
	for _, tc := range []struct {
		rate, n int
	}{{1, 15}, {100, 1000}} {
		b.Run(fmt.Sprintf("%d-per-second", tc.rate), func(b *testing.B) {
			for range b.N {
				h := newHookStack(b, "", nil)
				emails, ids := seedPeople(b, h, tc.n)
				var (
					mu      sync.Mutex
					started = map[int]time.Time{}
					lat     []time.Duration
					done    = make(chan struct{})
				)
				go func() { // watch the CRM
					defer close(done)
					for len(lat) < tc.n {
						mu.Lock()
						for i, at := range started {
							if e, _ := h.ns.Entity("customer", ids[i]); e.SubscriptionStatus == "2" {
								lat = append(lat, time.Since(at))
								delete(started, i)
							}
						}
						mu.Unlock()
						time.Sleep(time.Millisecond)
					}
				}()
				tick := time.NewTicker(time.Second / time.Duration(tc.rate))
				for i, e := range emails {
					<-tick.C
					mu.Lock()
					started[i] = time.Now()
					mu.Unlock()
					if err := h.mc.Act(audience, e, "unsubscribe", mailchimptest.SourceUser); err != nil {
						b.Fatal(err)
					}
				}
				tick.Stop()
				<-done
				slices.Sort(lat)
				p50, p99 := lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
				b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
				b.Logf("%d events at %d/s: delivery to CRM write p50 %s, p99 %s, max %s", tc.n, tc.rate,
					p50.Round(time.Millisecond), p99.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
			}
		})
	}
}

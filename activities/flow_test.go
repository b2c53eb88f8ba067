package activities

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
)

// splitCRM holds n opted-out records, r0..r(n-1), read whole ("w:<from>")
// or, once split, in two parts ("p:<rem>:<from>": the records from <from>
// on whose number is rem modulo 2). The first read of each part waits for
// the other's, so the test sees whether they are read at once.
type splitCRM struct {
	connectors.CRM
	n         int
	reading   atomic.Int32
	peak      atomic.Int32
	both      sync.WaitGroup
	firstRead [2]sync.Once
}

func (c *splitCRM) OptedOut(_ context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	n := c.reading.Add(1)
	defer c.reading.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	mod, rem, from := 1, 0, 0
	switch f := strings.Split(q.Cursor, ":"); f[0] {
	case "w":
		from, _ = strconv.Atoi(f[1])
	case "p":
		mod = 2
		rem, _ = strconv.Atoi(f[1])
		from, _ = strconv.Atoi(f[2])
		c.firstRead[rem].Do(func() {
			c.both.Done()
			wait := make(chan struct{})
			go func() { c.both.Wait(); close(wait) }()
			select {
			case <-wait:
			case <-time.After(5 * time.Second):
			}
		})
	}
	var page connectors.RecordPage
	i := from
	for ; i < c.n && len(page.Records) < q.PageSize; i++ {
		if i%mod == rem {
			page.Records = append(page.Records, connectors.Record{Ref: connectors.RecordRef{Type: "customer", ID: strconv.Itoa(i)},
				Email: fmt.Sprintf("r%d@example.com", i), OptedOut: true, InLists: true})
		}
	}
	if i < c.n {
		if mod == 1 {
			page.Next = "w:" + strconv.Itoa(i)
		} else {
			page.Next = "p:" + strconv.Itoa(rem) + ":" + strconv.Itoa(i)
		}
	}
	return page, nil
}

func (c *splitCRM) SplitCursor(cursor string) []string {
	if !strings.HasPrefix(cursor, "w:") {
		return nil
	}
	from := strings.TrimPrefix(cursor, "w:")
	return []string{"p:0:" + from, "p:1:" + from}
}

// countingMarketing unsubscribes whatever it is asked to and counts each address.
type countingMarketing struct {
	connectors.Marketing
	mu   sync.Mutex
	sent map[string]int
}

func (m *countingMarketing) Unsubscribe(_ context.Context, _ string, emails []string) (connectors.BatchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range emails {
		m.sent[e]++
	}
	return connectors.BatchResult{Written: len(emails)}, nil
}

func (m *countingMarketing) MaxBatch() int { return 7 }

// TestSplitReadGoesOnInPartsReadAtOnce: a CRM read whose first page is
// full goes on in the parts the connector splits it into, read at once;
// the cursor between activity calls names every part not finished, and
// every record is sent once.
func TestSplitReadGoesOnInPartsReadAtOnce(t *testing.T) {
	const n = 95
	crm := &splitCRM{n: n}
	crm.both.Add(2)
	mk := &countingMarketing{sent: map[string]int{}}
	s := Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", CRMToMarketing: true, PageSize: 10, PagesPerActivity: 3}
	acts := New(MapRegistry{"x": {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	var ts testsuite.WorkflowTestSuite
	var total Counts
	cursor, calls := "", 0
	for {
		env := ts.NewTestActivityEnvironment()
		env.RegisterActivity(acts)
		val, err := env.ExecuteActivity(acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s, Cursor: cursor})
		require.NoError(t, err)
		var res PageResult
		require.NoError(t, val.Get(&res))
		total.Add(res.Counts)
		calls++
		if calls == 1 {
			require.True(t, strings.HasPrefix(res.Next, partsPrefix), "the cursor names both parts: %q", res.Next)
		}
		if cursor = res.Next; cursor == "" {
			break
		}
	}
	require.Equal(t, 2, int(crm.peak.Load()), "the two parts were read at once")
	require.Equal(t, n, total.Unsubscribed)
	require.Equal(t, n, total.Read)
	require.Len(t, mk.sent, n)
	for e, k := range mk.sent {
		require.Equal(t, 1, k, "%s sent once", e)
	}
	require.Equal(t, (n+9)/10+1, total.Pages, "a first page, then each part's pages (the last of one part is short)")
}

// TestStagesRunInPageOrderAndOverlap: each stage runs for one page at a
// time in page order, a page's first stage may run while the page before
// waits on its vendor calls, and a page claiming a person an earlier page
// still holds waits for that page to finish.
func TestStagesRunInPageOrderAndOverlap(t *testing.T) {
	ctx := t.Context()
	var mu sync.Mutex
	var log []string
	note := func(s string) {
		mu.Lock()
		log = append(log, s)
		mu.Unlock()
	}
	p1 := newWork(nil, "")
	p2 := newWork(p1, "")
	p3 := newWork(p2, "")
	vendor1 := make(chan struct{})
	done := make(chan error, 3)
	go func() {
		defer close(p1.done)
		err := p1.inOrder(ctx, 0, func() error { note("1:0"); return p1.claim(ctx, []string{"ann"}) })
		<-vendor1 // page 1's vendor calls
		if err == nil {
			err = p1.inOrder(ctx, 1, func() error { note("1:1"); return nil })
		}
		p1.finish(ctx)
		done <- err
	}()
	go func() {
		defer close(p2.done)
		err := p2.inOrder(ctx, 0, func() error { note("2:0"); return p2.claim(ctx, []string{"bob"}) })
		if err == nil {
			err = p2.inOrder(ctx, 1, func() error { note("2:1"); return nil })
		}
		p2.finish(ctx)
		done <- err
	}()
	// Page 2 (another person) gets past its first stage while page 1's
	// vendor calls are in flight, but not into its second.
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(log) == 2 }, 5*time.Second, time.Millisecond)
	go func() {
		defer close(p3.done)
		// Page 3 claims ann, whom page 1 still holds.
		err := p3.inOrder(ctx, 0, func() error {
			err := p3.claim(ctx, []string{"ann"})
			note("3:0")
			return err
		})
		p3.finish(ctx)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	require.Equal(t, []string{"1:0", "2:0"}, log, "page 2 waits for page 1's second stage, page 3 for page 1 to finish")
	mu.Unlock()
	close(vendor1)
	for range 3 {
		require.NoError(t, <-done)
	}
	require.Len(t, log, 5)
	at := map[string]int{}
	for i, s := range log {
		at[s] = i
	}
	require.Less(t, at["1:1"], at["2:1"], "second stages in page order")
	require.Less(t, at["1:1"], at["3:0"], "page 3 went on once page 1 finished")
}

package activities

import (
	"context"
	"fmt"
	"slices"
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

// modCursor reads the cursors of the fake CRMs below: "" or "w:<from>"
// for a read whole, "p:<rem>:<from>" for the part of the records whose
// number is rem modulo mod.
func modCursor(c string, mod int) (m, rem, from int) {
	f := strings.Split(c, ":")
	switch f[0] {
	case "w":
		from, _ = strconv.Atoi(f[1])
	case "p":
		rem, _ = strconv.Atoi(f[1])
		from, _ = strconv.Atoi(f[2])
		return mod, rem, from
	}
	return 1, 0, from
}

// modPage is the page of opted-out records r<from>..r(n-1) whose number
// is rem modulo mod, at most size, with the cursor after it.
func modPage(n, mod, rem, from, size int) connectors.RecordPage {
	var page connectors.RecordPage
	i := from
	for ; i < n && len(page.Records) < size; i++ {
		if i%mod == rem {
			page.Records = append(page.Records, connectors.Record{Ref: connectors.RecordRef{Type: "customer", ID: strconv.Itoa(i)},
				Email: fmt.Sprintf("r%d@example.com", i), OptedOut: true, InLists: true})
		}
	}
	if i < n {
		if mod == 1 {
			page.Next = "w:" + strconv.Itoa(i)
		} else {
			page.Next = "p:" + strconv.Itoa(rem) + ":" + strconv.Itoa(i)
		}
	}
	return page
}

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
	// apart: the parts' first reads do not wait for each other.
	apart bool
}

func (c *splitCRM) OptedOut(_ context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	n := c.reading.Add(1)
	defer c.reading.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	mod, rem, from := modCursor(q.Cursor, 2)
	if mod > 1 {
		c.firstRead[rem].Do(func() {
			if c.apart {
				return
			}
			c.both.Done()
			wait := make(chan struct{})
			go func() { c.both.Wait(); close(wait) }()
			select {
			case <-wait:
			case <-time.After(5 * time.Second):
			}
		})
	}
	return modPage(c.n, mod, rem, from, q.PageSize), nil
}

func (c *splitCRM) SplitCursor(_ context.Context, cursor string, _ int) ([]string, error) {
	if !strings.HasPrefix(cursor, "w:") {
		return nil, nil
	}
	from := strings.TrimPrefix(cursor, "w:")
	return []string{"p:0:" + from, "p:1:" + from}, nil
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
	calls := drainPages(t, acts, acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s})
	require.True(t, strings.HasPrefix(calls[0].Next, partsPrefix), "the cursor names both parts: %q", calls[0].Next)
	total, _ := sumPages(calls)
	require.Equal(t, 2, int(crm.peak.Load()), "the two parts were read at once")
	require.Equal(t, n, total.Unsubscribed)
	require.Equal(t, n, total.Read)
	require.Len(t, mk.sent, n)
	for e, k := range mk.sent {
		require.Equal(t, 1, k, "%s sent once", e)
	}
	require.Equal(t, (n+9)/10+1, total.Pages, "a first page, then each part's pages (the last of one part is short)")
}

// TestClaimsTakeTurnsAndWaitOnlyForTheSamePeople: pages claim their
// people in page order; a page whose people no earlier page in flight
// holds goes on while an earlier page waits on its vendor calls, and a
// page claiming a person an earlier page holds waits for that page to
// finish.
func TestClaimsTakeTurnsAndWaitOnlyForTheSamePeople(t *testing.T) {
	ctx := t.Context()
	var mu sync.Mutex
	var log []string
	note := func(s string) {
		mu.Lock()
		log = append(log, s)
		mu.Unlock()
	}
	logged := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(log)
	}
	page := func(w *work, name string, persons []string, vendor chan struct{}) chan error {
		done := make(chan error, 1)
		go func() {
			defer close(w.done)
			err := w.claim(ctx, func() ([]string, error) { note(name + " claims"); return persons, nil })
			if err == nil {
				note(name + " looks up")
				if vendor != nil {
					<-vendor
				}
				note(name + " done")
			}
			w.err = err
			w.finish(ctx)
			done <- err
		}()
		return done
	}
	p1 := newWork(nil, "")
	p2 := newWork(p1, "")
	p3 := newWork(p2, "")
	vendor1 := make(chan struct{})
	// Page 3 starts first, but claims after pages 1 and 2.
	d3 := page(p3, "3", []string{"ann"}, nil)
	time.Sleep(20 * time.Millisecond)
	require.Empty(t, logged(), "page 3 waits for its turn")
	d1 := page(p1, "1", []string{"ann"}, vendor1)
	d2 := page(p2, "2", []string{"bob"}, nil)
	require.NoError(t, <-d2, "page 2 holds no one page 1 holds: it finishes while page 1 waits")
	require.Eventually(t, func() bool { return slices.Contains(logged(), "3 claims") }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	require.NotContains(t, logged(), "3 looks up", "page 3 waits for page 1, which holds ann")
	require.NotContains(t, logged(), "1 done")
	close(vendor1)
	require.NoError(t, <-d1)
	require.NoError(t, <-d3)
	at := map[string]int{}
	for i, s := range logged() {
		at[s] = i
	}
	require.Len(t, at, 9)
	require.Less(t, at["1 claims"], at["2 claims"], "claims in page order")
	require.Less(t, at["2 claims"], at["3 claims"])
	require.Less(t, at["1 done"], at["3 looks up"])
}

// TestACallReadsNoNewPageAfterItsBudget: once callBudget has passed, a
// call reads no further page, finishes the pages under way and returns
// the cursor after them (the parts of a split read included), and the
// next calls go on from it until every record is sent once.
func TestACallReadsNoNewPageAfterItsBudget(t *testing.T) {
	budget := callBudget
	callBudget = 0 // every call reads its first page only
	t.Cleanup(func() { callBudget = budget })
	const n = 95
	crm := &splitCRM{n: n, apart: true}
	mk := &countingMarketing{sent: map[string]int{}}
	s := Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", CRMToMarketing: true, PageSize: 10, PagesPerActivity: 100}
	acts := New(MapRegistry{"x": {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	rs := drainPages(t, acts, acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s})
	for i, r := range rs {
		require.Equal(t, 1, r.Counts.Pages, "call %d handled one page", i)
	}
	calls := len(rs)
	total, _ := sumPages(rs)
	require.Equal(t, (n+9)/10+1, calls, "a first page, then each part's pages, a call each")
	require.Equal(t, n, total.Unsubscribed)
	require.Len(t, mk.sent, n)
	for e, k := range mk.sent {
		require.Equal(t, 1, k, "%s sent once", e)
	}
}

// pagedCRM holds opted-out records r0..r(n-1), read in one part ("w:<from>"),
// and counts the reads begun.
type pagedCRM struct {
	connectors.CRM
	n     int
	reads atomic.Int32
}

func (c *pagedCRM) OptedOut(_ context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	c.reads.Add(1)
	mod, rem, from := modCursor(q.Cursor, 1)
	return modPage(c.n, mod, rem, from, q.PageSize), nil
}

// gatedMarketing holds every unsubscribe until open is closed.
type gatedMarketing struct {
	countingMarketing
	open chan struct{}
}

func (m *gatedMarketing) Unsubscribe(ctx context.Context, audience string, emails []string) (connectors.BatchResult, error) {
	select {
	case <-m.open:
	case <-ctx.Done():
		return connectors.BatchResult{}, ctx.Err()
	}
	return m.countingMarketing.Unsubscribe(ctx, audience, emails)
}

// TestReadsGoOnWhilePagesWaitForHandlers: with every handler busy (its
// vendor calls held), a read goes on past the pages in flight, up to as
// many again waiting for a handler: a part's next page is read when its
// page arrives, not when a handler takes it. Then every record is sent
// once.
func TestReadsGoOnWhilePagesWaitForHandlers(t *testing.T) {
	const n, size = 400, 10
	crm := &pagedCRM{n: n}
	mk := &gatedMarketing{countingMarketing: countingMarketing{sent: map[string]int{}}, open: make(chan struct{})}
	s := Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", CRMToMarketing: true, PageSize: size, PagesPerActivity: 100}
	acts := New(MapRegistry{"x": {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	// The pages in flight, and as many waiting for a handler.
	want := int32(2 * pagesInFlight)
	var atOpen atomic.Int32
	go func() {
		defer close(mk.open)
		deadline := time.Now().Add(10 * time.Second)
		for crm.reads.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // room for a read too many
		atOpen.Store(crm.reads.Load())
	}()
	calls := drainPages(t, acts, acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s})
	total, _ := sumPages(calls)
	require.Equal(t, n, total.Unsubscribed)
	require.Len(t, mk.sent, n)
	for e, k := range mk.sent {
		require.Equal(t, 1, k, "%s sent once", e)
	}
	require.Equal(t, want, atOpen.Load(), "pages read while every handler waited")
	require.Equal(t, n/size, int(crm.reads.Load()), "each page read once")
}

// TestAStoppingWorkerStartsNoPageReadAhead: pages read ahead while every
// handler was busy are not started once the worker is told to stop: the
// call finishes the pages under way and returns the cursor after them,
// for another worker to go on from (the stop gives running activities
// seconds only, and each page started is more vendor calls).
func TestAStoppingWorkerStartsNoPageReadAhead(t *testing.T) {
	const n, size = 400, 10
	crm := &pagedCRM{n: n}
	mk := &gatedMarketing{countingMarketing: countingMarketing{sent: map[string]int{}}, open: make(chan struct{})}
	s := Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", CRMToMarketing: true, PageSize: size, PagesPerActivity: 100}
	acts := New(MapRegistry{"x": {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	stop := make(chan struct{})
	env.SetWorkerStopChannel(stop)
	go func() {
		// Every handler busy, and the reads ahead done: then the stop.
		defer close(mk.open)
		readsSettle(&crm.reads)
		close(stop)
	}()
	val, err := env.ExecuteActivity(acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s})
	require.NoError(t, err)
	var res PageResult
	require.NoError(t, val.Get(&res))
	// The pages being handled, and at most the one the call had taken.
	require.LessOrEqual(t, res.Counts.Pages, pagesInFlight+1, "pages read ahead are not started after the stop")
	require.Equal(t, "w:"+strconv.Itoa(res.Counts.Pages*size), res.Next, "the rest is left to the next call")
	require.Len(t, mk.sent, res.Counts.Pages*size)
}

// readsSettle waits, for up to 10 s, until the reads counted have gone
// past pagesInFlight and no more begin.
func readsSettle(reads *atomic.Int32) {
	deadline := time.Now().Add(10 * time.Second)
	for last := int32(-1); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		k := reads.Load()
		if k == last && k > pagesInFlight {
			return
		}
		last = k
	}
}

// modCRM holds opted-out records r0..r(n-1), read whole ("w:<from>") or,
// once split, in parts ("p:<rem>:<from>": the records from <from> on
// whose number is rem modulo the parts), and counts the reads begun.
type modCRM struct {
	connectors.CRM
	n     int
	reads atomic.Int32
}

func (c *modCRM) OptedOut(_ context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	c.reads.Add(1)
	mod, rem, from := modCursor(q.Cursor, pagesInFlight)
	return modPage(c.n, mod, rem, from, q.PageSize), nil
}

func (c *modCRM) SplitCursor(_ context.Context, cursor string, parts int) ([]string, error) {
	from, ok := strings.CutPrefix(cursor, "w:")
	if !ok {
		return nil, nil
	}
	out := make([]string, parts)
	for i := range out {
		out[i] = "p:" + strconv.Itoa(i) + ":" + from
	}
	return out, nil
}

// TestPagesReadAheadOfBusyHandlersAreBounded: however many parts a read
// goes on in, the pages read while every handler is busy, waiting for
// one, are at most pagesInFlight: what a call holds in memory does not
// grow with the parts.
func TestPagesReadAheadOfBusyHandlersAreBounded(t *testing.T) {
	const n, size = 4000, 10
	crm := &modCRM{n: n}
	mk := &gatedMarketing{countingMarketing: countingMarketing{sent: map[string]int{}}, open: make(chan struct{})}
	s := Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", CRMToMarketing: true, PageSize: size, PagesPerActivity: 100}
	acts := New(MapRegistry{"x": {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	var atOpen atomic.Int32
	go func() {
		// Every handler busy, until the reads ahead are done.
		defer close(mk.open)
		readsSettle(&crm.reads)
		atOpen.Store(crm.reads.Load())
	}()
	calls := drainPages(t, acts, acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s})
	total, parts := sumPages(calls)
	require.True(t, parts, "the read went on in parts")
	require.Equal(t, n, total.Unsubscribed)
	require.Len(t, mk.sent, n)
	// The pages being handled, and at most as many again read ahead.
	require.LessOrEqual(t, int(atOpen.Load()), 2*pagesInFlight, "pages read while every handler was busy")
}

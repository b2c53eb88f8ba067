package workflows_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// addAbsentAsUnsubscribed off (Settings.SkipAbsent): cases that hold.

// Pending and transactional members are in the audience: their opt-outs
// are written. Two records of one absent address (letter case aside) are
// one lookup and add nothing; the address joining later is unsubscribed.
func TestIntegrationAbsentPendingTransactionalAndDuplicates(t *testing.T) {
	forEachLedger(t, testAbsentPendingTransactionalAndDuplicates)
}

func testAbsentPendingTransactionalAndDuplicates(t *testing.T, led ledger.Ledger) {
	s := newStackWith(t, func(st *activities.Settings) { st.SkipAbsent = true }, led)
	s.member(t, "pen@example.com", connectors.StatusPending)
	s.member(t, "tra@example.com", connectors.StatusTransactional)
	pen := s.customer(t, "pen", "pen@example.com", "2")
	tra := s.customer(t, "tra", "tra@example.com", "2")
	d1 := s.customer(t, "d1", "Dup@Example.com", "2")
	d2 := s.contact(t, "d2", "dup@example.com", "2")
	s.ns.AddSavedSearch(search, pen, tra, d1, d2)

	r1 := s.run(t)
	k := r1.Counts.CRMToMarketing
	require.Equal(t, 2, k.Unsubscribed)
	require.Zero(t, k.AddedUnsub)
	require.Equal(t, 1, k.AbsentNotAdded)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "pen@example.com"))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "tra@example.com"))
	_, ok := s.mc.Member(audience, "dup@example.com")
	require.False(t, ok)
	require.Equal(t, 3, s.mc.Counts()[memberGET])

	s.mc.ResetCounts()
	r2 := s.runAfter(t, r1)
	require.Zero(t, s.mc.Counts()[memberGET])
	require.Zero(t, s.mc.Counts()[batchPOST])
	require.Equal(t, 1, r2.Counts.CRMToMarketing.AbsentNotAdded, "one address, as the first run counted it, not one per record")

	s.member(t, "DUP@example.com", connectors.StatusSubscribed)
	r3 := s.runAfter(t, r2)
	require.Equal(t, 1, r3.Counts.MarketingToCRM.JoinedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "dup@example.com"))
}

// Field sync never adds an address whose CRM opt-out was not added,
// even once the CRM record is opted in again.
func TestIntegrationAbsentIsNeverAddedByFieldSync(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) {
		st.SkipAbsent = true
		st.FieldMap = map[string]string{"firstName": "FNAME"}
	})
	s.mc.AddList(audience, "Demo audience", "FNAME")
	ref := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: "abs@example.com", FirstName: "Abs", SubscriptionStatus: "2"})}
	s.refs["abs"] = ref
	s.ns.AddSavedSearch(search, ref)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded)
	_, ok := s.mc.Member(audience, "abs@example.com")
	require.False(t, ok)

	time.Sleep(time.Second)
	require.NoError(t, s.ns.Update("customer", ref.ID, func(e *netsuitetest.Entity) { e.SubscriptionStatus = "1"; e.LastModified = time.Now() }))
	r2 := s.runAfter(t, r1)
	_, ok = s.mc.Member(audience, "abs@example.com")
	require.False(t, ok, "not added by field sync: %+v", r2.Counts.FieldSync)
	r3 := s.runAfter(t, r2)
	_, ok = s.mc.Member(audience, "abs@example.com")
	require.False(t, ok, "not added by field sync: %+v", r3.Counts.FieldSync)
}

// throughMailchimp points the integration's Mailchimp connector at the
// emulator through wrap, which may fail some requests.
func (s *stack) throughMailchimp(t *testing.T, wrap func(http.Handler) http.Handler) {
	t.Helper()
	hs := httptest.NewServer(wrap(s.mc.Handler()))
	t.Cleanup(hs.Close)
	mk, err := mailchimp.New(mailchimp.Options{APIKey: s.mc.APIKey, BaseURL: hs.URL + "/3.0", RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	require.NoError(t, err)
	s.reg.mu.Lock()
	s.reg.in.Marketing = mk
	s.reg.mu.Unlock()
}

// failLookups answers 503 to the first n lookups of email.
func failLookups(email string, n int) func(http.Handler) http.Handler {
	path := "/members/" + connectors.AddressHash(email)
	var left atomic.Int64
	left.Store(int64(n))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, path) && left.Add(-1) >= 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// throttleBatch leaves email out of each batch subscribe while on, and
// answers for it the per-address throttle, a transient refusal.
func throttleBatch(email string, on *atomic.Bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/lists/"+audience) || !on.Load() {
				next.ServeHTTP(w, r)
				return
			}
			var body map[string]any
			b, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(b, &body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var kept []any
			throttled := false
			for _, m := range body["members"].([]any) {
				if strings.EqualFold(m.(map[string]any)["email_address"].(string), email) {
					throttled = true
					continue
				}
				kept = append(kept, m)
			}
			body["members"] = kept
			var doc map[string]any
			if len(kept) > 0 {
				b, _ = json.Marshal(body)
				r.Body = io.NopCloser(bytes.NewReader(b))
				r.ContentLength = int64(len(b))
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
			} else {
				doc = map[string]any{"new_members": []any{}, "updated_members": []any{}, "errors": []any{}}
			}
			if throttled {
				doc["errors"] = append(doc["errors"].([]any), map[string]any{"email_address": email, "error_code": "ERROR_GENERIC",
					"error": email + " has signed up to a lot of lists very recently; we're not allowing more signups for now"})
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(doc)
		})
	}
}

// A transient failure of a lookup is retried: nothing is added, nothing
// is lost.
func TestIntegrationAbsentLookupFailureIsRetried(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	s.throughMailchimp(t, failLookups("flaky@example.com", 6))
	s.member(t, "sub@example.com", connectors.StatusSubscribed)
	sub := s.customer(t, "sub", "sub@example.com", "2")
	flaky := s.customer(t, "flaky", "flaky@example.com", "2")
	s.member(t, "pre@example.com", connectors.StatusSubscribed)
	pre := s.customer(t, "pre", "pre@example.com", "2")
	s.ns.AddSavedSearch(search, sub, flaky, pre)
	r1 := s.run(t)
	require.Equal(t, 2, r1.Counts.CRMToMarketing.Unsubscribed)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded)
	require.Zero(t, r1.Counts.CRMToMarketing.AddedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "sub@example.com"))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "pre@example.com"))
	_, ok := s.mc.Member(audience, "flaky@example.com")
	require.False(t, ok)
	require.Equal(t, 5, s.mc.Counts()[memberGET], "the attempt that failed is made again: the failures were served")
}

// A join whose unsubscribe is refused for now (the per-address throttle)
// holds the re-subscribes watermark, and the next run unsubscribes it.
func TestIntegrationJoinUnsubscribeThrottledIsRetried(t *testing.T) {
	var on atomic.Bool
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	s.throughMailchimp(t, throttleBatch("joiner@example.com", &on))
	j := s.customer(t, "j", "joiner@example.com", "2")
	s.ns.AddSavedSearch(search, j)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded)

	s.member(t, "joiner@example.com", connectors.StatusSubscribed)
	on.Store(true)
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.Failed, "%+v", r2.Counts.MarketingToCRM)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "joiner@example.com"))
	require.Equal(t, r1.Next.Resubscribes, r2.Next.Resubscribes, "held")

	on.Store(false)
	r3 := s.runAfter(t, r2)
	require.Equal(t, 1, r3.Counts.MarketingToCRM.JoinedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "joiner@example.com"))
	require.Zero(t, r3.Counts.MarketingToCRM.Resubscribes)
}

// A member who changes address to one whose CRM opt-out was not added
// joins with it: the re-subscribes read unsubscribes it.
func TestIntegrationAbsentAddressTakenByAnAddressChangeIsUnsubscribed(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	abs := s.customer(t, "abs", "abs@example.com", "2")
	s.ns.AddSavedSearch(search, abs)
	s.member(t, "other@example.com", connectors.StatusSubscribed)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded)

	time.Sleep(time.Second)
	require.NoError(t, s.mc.ChangeEmail(audience, "other@example.com", "abs@example.com"))
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.JoinedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "abs@example.com"))
}

// addAbsentAsUnsubscribed off, on, off: each change reads the step from
// the beginning; on adds the absent address as unsubscribed, and off
// again looks nobody up (the ledger knows it unsubscribed).
func TestIntegrationAbsentSettingToggledOffOnOff(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	abs := s.customer(t, "abs", "abs@example.com", "2")
	s.ns.AddSavedSearch(search, abs)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded)
	_, ok := s.mc.Member(audience, "abs@example.com")
	require.False(t, ok)

	s.reg.configure(func(st *activities.Settings) { st.SkipAbsent = false })
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.CRMToMarketing.AddedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "abs@example.com"))

	s.reg.configure(func(st *activities.Settings) { st.SkipAbsent = true })
	s.mc.ResetCounts()
	r3 := s.runAfter(t, r2)
	require.Contains(t, notesText(r3), "crm-to-marketing reads from the beginning once")
	require.Equal(t, 1, r3.Counts.CRMToMarketing.AlreadyUnsub)
	require.Zero(t, s.mc.Counts()[memberGET])
	require.Zero(t, s.mc.Counts()[batchPOST])
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "abs@example.com"))
}

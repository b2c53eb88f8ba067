package mailchimptest_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

func newClock() *emulator.Clock {
	return emulator.NewClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (a answer) str(k string) string {
	s, _ := a.body[k].(string)
	return s
}

type caller struct {
	t    *testing.T
	base string
	auth func(*http.Request)
}

func newCaller(t *testing.T, s *mailchimptest.Server) *caller {
	return &caller{t: t, base: s.URL, auth: func(r *http.Request) { r.SetBasicAuth("anystring", s.APIKey) }}
}

func (c *caller) do(method, path string, body any) answer {
	c.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(c.t, err)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, rd)
	require.NoError(c.t, err)
	if c.auth != nil {
		c.auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusNoContent {
		require.NoError(c.t, json.NewDecoder(resp.Body).Decode(&a.body))
	}
	return a
}

func requireProblem(t *testing.T, a answer, status int, title string) {
	t.Helper()
	require.Equal(t, status, a.status, "body: %v", a.body)
	require.Equal(t, "application/problem+json; charset=utf-8", a.header.Get("Content-Type"))
	require.Equal(t, title, a.str("title"))
	require.Equal(t, float64(status), a.body["status"])
	require.Equal(t, "https://mailchimp.com/developer/marketing/docs/errors/", a.str("type"))
	require.NotEmpty(t, a.str("instance"))
	require.Equal(t, a.str("instance"), a.header.Get("X-Request-Id"))
}

func newServer(t *testing.T, opts mailchimptest.Options) (*mailchimptest.Server, *emulator.Clock) {
	clk := newClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	s := mailchimptest.NewServer(opts)
	t.Cleanup(s.Close)
	s.AddList("L1", "Newsletter")
	return s, clk
}

func TestPingAndAuth(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{OAuthTokens: []string{"oauth-token-1"}})
	require.Regexp(t, `^[0-9a-f]{32}-us6$`, s.APIKey)
	c := newCaller(t, s)

	a := c.do("GET", "/ping", nil)
	require.Equal(t, 200, a.status)
	require.Equal(t, "Everything's Chimpy!", a.str("health_status"))

	c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+s.APIKey) }
	require.Equal(t, 200, c.do("GET", "/ping", nil).status)
	c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer oauth-token-1") }
	require.Equal(t, 200, c.do("GET", "/ping", nil).status)
	c.auth = func(r *http.Request) { r.SetBasicAuth("user", "oauth-token-1") }
	require.Equal(t, 200, c.do("GET", "/ping", nil).status)

	c.auth = func(r *http.Request) { r.SetBasicAuth("anystring", "0123-us6") }
	requireProblem(t, c.do("GET", "/ping", nil), 401, "API Key Invalid")
	c.auth = nil
	requireProblem(t, c.do("GET", "/ping", nil), 401, "API Key Missing")
}

func TestUnknownPathsAndMethods(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{APIKey: "abc-us1"})
	require.Equal(t, "abc-us1", s.APIKey)
	c := newCaller(t, s)
	requireProblem(t, c.do("GET", "/nothing/here", nil), 404, "Resource Not Found")
	requireProblem(t, c.do("GET", "/lists/NOPE", nil), 404, "Resource Not Found")
	requireProblem(t, c.do("GET", "/lists/NOPE/members", nil), 404, "Resource Not Found")
	a := c.do("DELETE", "/lists/L1/members", nil)
	requireProblem(t, a, 405, "Method Not Allowed")
	require.Equal(t, "GET, POST", a.header.Get("Allow"))
	requireProblem(t, c.do("GET", "/lists/L1/members/x%40y.com/actions/delete-permanent", nil), 405, "Method Not Allowed")

	a = c.do("GET", "/lists/L1", nil)
	require.Equal(t, 200, a.status)
	require.Equal(t, "L1", a.str("id"))
	require.Equal(t, "Newsletter", a.str("name"))
}

func TestMemberStateRules(t *testing.T) {
	s, clk := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)

	a := c.do("POST", "/lists/L1/members", map[string]any{"email_address": "Ann@Example.com", "status": "subscribed", "merge_fields": map[string]any{"FNAME": "Ann", "NOTATAG": "x"}})
	require.Equal(t, 200, a.status)
	require.Equal(t, "subscribed", a.str("status"))
	sum := md5.Sum([]byte("ann@example.com"))
	require.Equal(t, hex.EncodeToString(sum[:]), a.str("id"))
	require.Equal(t, "2025-03-01T12:00:00+00:00", a.str("last_changed"))
	require.Equal(t, a.str("last_changed"), a.str("timestamp_opt"))
	require.Equal(t, "", a.str("timestamp_signup"))
	require.Equal(t, "L1", a.str("list_id"))
	require.Len(t, a.str("unique_email_id"), 10)
	require.Len(t, a.str("contact_id"), 32)
	require.NotContains(t, a.body["merge_fields"], "NOTATAG")
	require.Equal(t, "Ann", a.body["merge_fields"].(map[string]any)["FNAME"])
	require.NotEmpty(t, a.body["_links"])
	id, contact := a.str("id"), a.str("contact_id")

	requireProblem(t, c.do("POST", "/lists/L1/members", map[string]any{"email_address": "ann@example.com", "status": "subscribed"}), 400, "Member Exists")
	requireProblem(t, c.do("POST", "/lists/L1/members", map[string]any{"email_address": "not-an-address", "status": "subscribed"}), 400, "Invalid Resource")

	// The path takes the hash, the address, or the contact_id.
	for _, key := range []string{id, "ann@example.com", contact} {
		require.Equal(t, 200, c.do("GET", "/lists/L1/members/"+url.PathEscape(key), nil).status, key)
	}

	// A no-op write does not move last_changed; a change does.
	clk.Advance(time.Minute)
	a = c.do("PATCH", "/lists/L1/members/"+id, map[string]any{"status": "subscribed", "merge_fields": map[string]any{"FNAME": "Ann"}})
	require.Equal(t, 200, a.status)
	require.Equal(t, "2025-03-01T12:00:00+00:00", a.str("last_changed"))
	a = c.do("PATCH", "/lists/L1/members/"+id, map[string]any{"status": "unsubscribed"})
	require.Equal(t, "unsubscribed", a.str("status"))
	require.Equal(t, "2025-03-01T12:01:00+00:00", a.str("last_changed"))
	require.NotEmpty(t, a.str("unsubscribe_reason"))

	// unsubscribed -> subscribed is refused, with the documented detail.
	clk.Advance(time.Minute)
	for _, method := range []string{"PATCH", "PUT"} {
		a = c.do(method, "/lists/L1/members/"+id, map[string]any{"email_address": "ann@example.com", "status": "subscribed"})
		requireProblem(t, a, 400, "Member In Compliance State")
		require.Equal(t, "Ann@Example.com is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.", a.str("detail"))
	}
	m, ok := s.Member("L1", "ann@example.com")
	require.True(t, ok)
	require.Equal(t, "unsubscribed", m.Status)
	require.Equal(t, time.Date(2025, 3, 1, 12, 1, 0, 0, time.UTC), m.LastChanged)

	// pending is allowed.
	a = c.do("PATCH", "/lists/L1/members/"+id, map[string]any{"status": "pending"})
	require.Equal(t, 200, a.status)
	require.Equal(t, "pending", a.str("status"))

	// cleaned -> subscribed refused; cleaned -> unsubscribed refused (our choice): stays cleaned.
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "bounce@example.com", Status: "cleaned"}))
	requireProblem(t, c.do("PATCH", "/lists/L1/members/bounce@example.com", map[string]any{"status": "subscribed"}), 400, "Member In Compliance State")
	requireProblem(t, c.do("PATCH", "/lists/L1/members/bounce@example.com", map[string]any{"status": "unsubscribed"}), 400, "Member In Compliance State")
	m, _ = s.Member("L1", "bounce@example.com")
	require.Equal(t, "cleaned", m.Status)

	// Archive, then re-add.
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "arch@example.com"}))
	require.Equal(t, 204, c.do("DELETE", "/lists/L1/members/arch@example.com", nil).status)
	require.Equal(t, "archived", c.do("GET", "/lists/L1/members/arch@example.com", nil).str("status"))
	a = c.do("DELETE", "/lists/L1/members/arch@example.com", nil)
	requireProblem(t, a, 405, "Method Not Allowed")
	require.Equal(t, "GET, PUT", a.header.Get("Allow"))
	a = c.do("POST", "/lists/L1/members", map[string]any{"email_address": "arch@example.com", "status": "subscribed"})
	require.Equal(t, 200, a.status)
	require.Equal(t, "subscribed", a.str("status"))

	// Permanently deleted: gone, and cannot be re-added.
	gone := c.do("GET", "/lists/L1/members/arch@example.com", nil).str("id")
	requireProblem(t, c.do("POST", "/lists/L1/members/arch@example.com/actions/delete-permanent", nil), 404, "Resource Not Found")
	require.Equal(t, 204, c.do("POST", "/lists/L1/members/"+gone+"/actions/delete-permanent", nil).status)
	requireProblem(t, c.do("GET", "/lists/L1/members/"+gone, nil), 404, "Resource Not Found")
	a = c.do("POST", "/lists/L1/members", map[string]any{"email_address": "arch@example.com", "status": "subscribed"})
	requireProblem(t, a, 400, "Forgotten Email Not Subscribed")
	require.Equal(t, "arch@example.com was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.", a.str("detail"))
	requireProblem(t, c.do("PUT", "/lists/L1/members/"+gone, map[string]any{"email_address": "arch@example.com", "status_if_new": "subscribed"}), 400, "Forgotten Email Not Subscribed")
	requireProblem(t, c.do("PATCH", "/lists/L1/members/"+gone, map[string]any{"status": "unsubscribed"}), 404, "Resource Not Found")
	m, _ = s.Member("L1", "arch@example.com")
	require.True(t, m.Forgotten)
}

func TestPutNeverTouchesStatusWithoutStatus(t *testing.T) {
	s, clk := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "u@example.com", Status: "unsubscribed"}))
	clk.Advance(time.Hour)
	a := c.do("PUT", "/lists/L1/members/u@example.com", map[string]any{"email_address": "u@example.com", "status_if_new": "subscribed", "merge_fields": map[string]any{"LNAME": "Lee"}})
	require.Equal(t, 200, a.status)
	require.Equal(t, "unsubscribed", a.str("status"))
	require.Equal(t, "2025-03-01T13:00:00+00:00", a.str("last_changed"))

	a = c.do("PUT", "/lists/L1/members/new@example.com", map[string]any{"email_address": "new@example.com", "status_if_new": "pending"})
	require.Equal(t, 200, a.status)
	require.Equal(t, "pending", a.str("status"))
	requireProblem(t, c.do("PUT", "/lists/L1/members/0123456789abcdef0123456789abcdef", map[string]any{"email_address": "other@example.com", "status_if_new": "subscribed"}), 400, "Invalid Resource")
	requireProblem(t, c.do("PUT", "/lists/L1/members/x@example.com", map[string]any{"email_address": "x@example.com"}), 400, "Invalid Resource")
}

func TestListMembersQuery(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, e := range []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"} {
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", LastChanged: t0.Add(time.Duration(i) * time.Second)}))
	}
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "s@example.com", LastChanged: t0.Add(2 * time.Second)}))

	a := c.do("GET", "/lists/L1/members?status=unsubscribed&sort_field=last_changed&sort_dir=ASC&since_last_changed="+url.QueryEscape("2025-01-01T00:00:01+00:00"), nil)
	require.Equal(t, 200, a.status)
	require.Equal(t, float64(2), a.body["total_items"]) // strictly after 00:00:01
	members := a.body["members"].([]any)
	require.Equal(t, "c@example.com", members[0].(map[string]any)["email_address"])

	a = c.do("GET", "/lists/L1/members?status=unsubscribed&count=1&offset=1&sort_dir=DESC&fields=members.email_address,members.status,total_items", nil)
	require.Equal(t, float64(4), a.body["total_items"])
	require.Equal(t, []any{map[string]any{"email_address": "c@example.com", "status": "unsubscribed"}}, a.body["members"])
	require.NotContains(t, a.body, "_links")

	a = c.do("GET", "/lists/L1/members?count=1&exclude_fields=members._links,members.merge_fields,_links", nil)
	require.Equal(t, float64(5), a.body["total_items"])
	m0 := a.body["members"].([]any)[0].(map[string]any)
	require.NotContains(t, m0, "_links")
	require.NotContains(t, m0, "merge_fields")
	require.Contains(t, m0, "email_address")
	require.NotContains(t, a.body, "_links")

	a = c.do("GET", "/lists/L1/members/a@example.com?fields=email_address,status", nil)
	require.Equal(t, map[string]any{"email_address": "a@example.com", "status": "unsubscribed"}, a.body)

	requireProblem(t, c.do("GET", "/lists/L1/members?count=1001", nil), 400, "Invalid Resource")
	require.Equal(t, 200, c.do("GET", "/lists/L1/members?count=1000", nil).status)
	requireProblem(t, c.do("GET", "/lists/L1/members?status=cleaned&unsubscribed_since=2025-01-01", nil), 400, "Invalid Resource")
	requireProblem(t, c.do("GET", "/lists/L1/members?unsubscribed_since=2025-01-01", nil), 400, "Invalid Resource")
	requireProblem(t, c.do("GET", "/lists/L1/members?status=nope", nil), 400, "Invalid Resource")
}

func TestUnsubscribedSince(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	old := time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC)
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "old@example.com", Status: "unsubscribed", UnsubscribedAt: old, LastChanged: old.Add(48 * time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "new@example.com", Status: "unsubscribed", LastChanged: old.Add(47 * time.Hour)}))
	a := c.do("GET", "/lists/L1/members?status=unsubscribed&unsubscribed_since=2025-01-02", nil)
	require.Equal(t, float64(1), a.body["total_items"])
	require.Equal(t, "new@example.com", a.body["members"].([]any)[0].(map[string]any)["email_address"])
	a = c.do("GET", "/lists/L1/members?status=unsubscribed&unsubscribed_since=2025-01-01", nil)
	require.Equal(t, float64(2), a.body["total_items"])
	a = c.do("GET", "/lists/L1/members?status=unsubscribed&unsubscribed_since="+url.QueryEscape("2025-01-01T10:00:00+00:00"), nil)
	require.Equal(t, float64(1), a.body["total_items"])
}

func TestBatchSubscribeUnsubscribe(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "sub@example.com"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "bounce@example.com", Status: "cleaned"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))

	unsub := func(e string) map[string]any { return map[string]any{"email_address": e, "status": "unsubscribed"} }
	a := c.do("POST", "/lists/L1", map[string]any{"update_existing": true, "members": []any{
		unsub("sub@example.com"), unsub("fresh@example.com"), unsub("bounce@example.com"), unsub("gone@example.com"), unsub("bad-address"),
	}})
	require.Equal(t, 200, a.status)
	require.Equal(t, float64(1), a.body["total_created"])
	require.Equal(t, float64(1), a.body["total_updated"])
	require.Equal(t, float64(3), a.body["error_count"])
	errs := a.body["errors"].([]any)
	require.Equal(t, "bounce@example.com", errs[0].(map[string]any)["email_address"])
	require.Contains(t, errs[0].(map[string]any)["error"], "compliance state")
	require.Equal(t, "ERROR_GENERIC", errs[0].(map[string]any)["error_code"])
	require.Contains(t, errs[1].(map[string]any)["error"], "permanently deleted")

	require.Equal(t, map[string]int{"unsubscribed": 2, "cleaned": 1, "forgotten": 1}, s.CountByStatus("L1"))

	// Without update_existing an existing member is reported, not changed.
	a = c.do("POST", "/lists/L1", map[string]any{"members": []any{map[string]any{"email_address": "sub@example.com", "status": "subscribed"}}})
	require.Equal(t, "ERROR_CONTACT_EXISTS", a.body["errors"].([]any)[0].(map[string]any)["error_code"])

	many := make([]any, 501)
	for i := range many {
		many[i] = unsub("x@example.com")
	}
	requireProblem(t, c.do("POST", "/lists/L1", map[string]any{"members": many, "update_existing": true}), 400, "Invalid Resource")
}

func TestEleventhRequestGets429(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	s.SetFaults(emulator.Faults{Latency: 30 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/ping", nil)
			req.SetBasicAuth("x", s.APIKey)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	require.Eventually(t, func() bool { return s.PeakInFlight() == 10 }, 10*time.Second, 5*time.Millisecond)
	a := c.do("GET", "/ping", nil)
	requireProblem(t, a, 429, "TooManyRequests")
	require.Equal(t, "You have exceeded the limit of 10 simultaneous connections.", a.str("detail"))
	require.Empty(t, a.header.Get("Retry-After"))
	require.Equal(t, 1, s.Faulted()["over-limit"])
	cancel()
	wg.Wait()
}

func TestInjectedFaults(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{Faults: emulator.Faults{Rate429: 1}})
	c := newCaller(t, s)
	a := c.do("GET", "/lists/L1/members", nil)
	requireProblem(t, a, 429, "TooManyRequests")
	require.Equal(t, "You have exceeded the limit of 10 simultaneous connections.", a.str("detail"))
	s.SetFaults(emulator.Faults{Rate5xx: 1})
	requireProblem(t, c.do("GET", "/lists/L1/members", nil), 500, "InternalServerError")
	require.Equal(t, 2, s.Counts()["GET /lists/{list_id}/members"])
}

func TestChangeLogStaysOrdered(t *testing.T) {
	s, clk := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	require.NoError(t, s.Generate("L1", 3000, nil))
	// Many edits of the same members (compaction kicks in), then a page
	// since the seeding sees only the edited ones, oldest change first.
	for i := range 2500 {
		clk.Advance(time.Second)
		e := []string{"member1@example.com", "member2@example.com", "member3@example.com"}[i%3]
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, MergeFields: map[string]string{"FNAME": time.Duration(i).String()}}))
	}
	clk.Advance(time.Second)
	a := c.do("PATCH", "/lists/L1/members/member1@example.com", map[string]any{"merge_fields": map[string]any{"FNAME": "last"}})
	require.Equal(t, 200, a.status)
	a = c.do("GET", "/lists/L1/members?since_last_changed="+url.QueryEscape("2025-03-01T12:00:00+00:00")+"&fields=members.email_address,total_items", nil)
	require.Equal(t, float64(3), a.body["total_items"])
	require.Equal(t, "member1@example.com", a.body["members"].([]any)[2].(map[string]any)["email_address"])
	require.Len(t, s.Members("L1"), 3000)
	require.Equal(t, map[string]int{"subscribed": 3000}, s.CountByStatus("L1"))
}

func hashHex(email string) string {
	sum := md5.Sum([]byte(email))
	return hex.EncodeToString(sum[:])
}

func TestEmailChange(t *testing.T) {
	s, clk := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	a := c.do("POST", "/lists/L1/members", map[string]any{"email_address": "Ann@Example.com", "status": "subscribed"})
	require.Equal(t, 200, a.status)
	oldID, contact, unique, web := a.str("id"), a.str("contact_id"), a.str("unique_email_id"), a.body["web_id"]

	// PATCH with a new address: a new id, the same contact.
	clk.Advance(time.Minute)
	a = c.do("PATCH", "/lists/L1/members/"+oldID, map[string]any{"email_address": "Ann.New@Example.com"})
	require.Equal(t, 200, a.status, "body: %v", a.body)
	newID := hashHex("ann.new@example.com")
	require.Equal(t, newID, a.str("id"))
	require.Equal(t, "Ann.New@Example.com", a.str("email_address"))
	require.Equal(t, contact, a.str("contact_id"))
	require.Equal(t, unique, a.str("unique_email_id"))
	require.Equal(t, web, a.body["web_id"])
	require.Equal(t, "2025-03-01T12:01:00+00:00", a.str("last_changed"))
	require.Equal(t, "subscribed", a.str("status"))

	// The old hash and address no longer find it; the new ones and the
	// contact_id do.
	requireProblem(t, c.do("GET", "/lists/L1/members/"+oldID, nil), 404, "Resource Not Found")
	requireProblem(t, c.do("GET", "/lists/L1/members/ann@example.com", nil), 404, "Resource Not Found")
	requireProblem(t, c.do("PATCH", "/lists/L1/members/"+oldID, map[string]any{"status": "unsubscribed"}), 404, "Resource Not Found")
	for _, key := range []string{newID, "ann.new@example.com", contact} {
		a = c.do("GET", "/lists/L1/members/"+url.PathEscape(key), nil)
		require.Equal(t, 200, a.status, key)
		require.Equal(t, newID, a.str("id"), key)
	}
	_, ok := s.Member("L1", "ann@example.com")
	require.False(t, ok)
	m, ok := s.Member("L1", "ann.new@example.com")
	require.True(t, ok)
	require.Equal(t, contact, m.ContactID)
	require.Equal(t, unique, m.UniqueEmailID)

	// The change is a change: a since_last_changed read sees it.
	a = c.do("GET", "/lists/L1/members?since_last_changed="+url.QueryEscape("2025-03-01T12:00:00+00:00"), nil)
	require.Equal(t, float64(1), a.body["total_items"])
	require.Equal(t, contact, a.body["members"].([]any)[0].(map[string]any)["contact_id"])

	// PUT with a new address changes it too (by hash, address or contact_id).
	clk.Advance(time.Minute)
	a = c.do("PUT", "/lists/L1/members/"+contact, map[string]any{"email_address": "ann3@example.com", "status_if_new": "subscribed"})
	require.Equal(t, 200, a.status, "body: %v", a.body)
	require.Equal(t, hashHex("ann3@example.com"), a.str("id"))
	require.Equal(t, contact, a.str("contact_id"))
	require.Equal(t, "2025-03-01T12:02:00+00:00", a.str("last_changed"))
	requireProblem(t, c.do("GET", "/lists/L1/members/"+newID, nil), 404, "Resource Not Found")

	// Only the case differs: not a change.
	clk.Advance(time.Minute)
	a = c.do("PATCH", "/lists/L1/members/ann3@example.com", map[string]any{"email_address": "ANN3@example.com"})
	require.Equal(t, 200, a.status)
	require.Equal(t, "ann3@example.com", a.str("email_address"))
	require.Equal(t, "2025-03-01T12:02:00+00:00", a.str("last_changed"))

	// A new member on the old address is another contact, and the
	// contact_id still finds the member that moved.
	a = c.do("POST", "/lists/L1/members", map[string]any{"email_address": "ann@example.com", "status": "subscribed"})
	require.Equal(t, 200, a.status)
	require.Equal(t, oldID, a.str("id"))
	require.NotEqual(t, contact, a.str("contact_id"))
	require.NotEqual(t, unique, a.str("unique_email_id"))
	other := a.str("contact_id")
	require.Equal(t, "ann3@example.com", c.do("GET", "/lists/L1/members/"+contact, nil).str("email_address"))
	require.Equal(t, "ann@example.com", c.do("GET", "/lists/L1/members/"+other, nil).str("email_address"))

	// Refusals change nothing: a taken address, an invalid one, and a
	// change sent with a status the member cannot take.
	requireProblem(t, c.do("PATCH", "/lists/L1/members/ann3@example.com", map[string]any{"email_address": "ann@example.com"}), 400, "Member Exists")
	requireProblem(t, c.do("PATCH", "/lists/L1/members/ann3@example.com", map[string]any{"email_address": "not-an-address"}), 400, "Invalid Resource")
	require.Equal(t, 200, c.do("PATCH", "/lists/L1/members/ann3@example.com", map[string]any{"status": "unsubscribed"}).status)
	requireProblem(t, c.do("PATCH", "/lists/L1/members/ann3@example.com", map[string]any{"email_address": "ann4@example.com", "status": "subscribed"}), 400, "Member In Compliance State")
	m, ok = s.Member("L1", "ann3@example.com")
	require.True(t, ok)
	require.Equal(t, "unsubscribed", m.Status)
	_, ok = s.Member("L1", "ann4@example.com")
	require.False(t, ok)

	// ChangeEmail does what the API does.
	clk.Advance(time.Minute)
	require.NoError(t, s.ChangeEmail("L1", "ann3@example.com", "ann5@example.com"))
	m, ok = s.Member("L1", "ann5@example.com")
	require.True(t, ok)
	require.Equal(t, contact, m.ContactID)
	require.Equal(t, "unsubscribed", m.Status)
	require.Equal(t, time.Date(2025, 3, 1, 12, 4, 0, 0, time.UTC), m.LastChanged)
	require.Equal(t, hashHex("ann5@example.com"), m.ID)
	require.Equal(t, 200, c.do("GET", "/lists/L1/members/"+contact, nil).status)
	require.ErrorContains(t, s.ChangeEmail("L1", "ann3@example.com", "x@example.com"), "not a member")
	require.ErrorContains(t, s.ChangeEmail("L1", "ann5@example.com", "ann@example.com"), "Member Exists")
	require.ErrorContains(t, s.ChangeEmail("L1", "ann5@example.com", "bogus"), "Invalid Resource")
	require.ErrorContains(t, s.ChangeEmail("NOPE", "ann5@example.com", "y@example.com"), "no list")
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))
	require.ErrorContains(t, s.ChangeEmail("L1", "ann5@example.com", "gone@example.com"), "Forgotten Email Not Subscribed")
}

// UNCONFIRMED which way Mailchimp goes; the option gives the other one.
func TestEmailChangeContactIDFollowsAddress(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{ContactIDFollowsAddress: true})
	c := newCaller(t, s)
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "a@example.com"}))
	before, _ := s.Member("L1", "a@example.com")
	a := c.do("PATCH", "/lists/L1/members/a@example.com", map[string]any{"email_address": "b@example.com"})
	require.Equal(t, 200, a.status)
	require.NotEqual(t, before.ContactID, a.str("contact_id"))
	require.Equal(t, before.UniqueEmailID, a.str("unique_email_id"))
	requireProblem(t, c.do("GET", "/lists/L1/members/"+before.ContactID, nil), 404, "Resource Not Found")
	require.Equal(t, "b@example.com", c.do("GET", "/lists/L1/members/"+a.str("contact_id"), nil).str("email_address"))

	// The new contact_id is the one the new address derives, as a member
	// created on it has in a fresh audience.
	fresh, _ := newServer(t, mailchimptest.Options{})
	require.NoError(t, fresh.AddMember("L1", mailchimptest.MemberSeed{Email: "b@example.com"}))
	fb, _ := fresh.Member("L1", "b@example.com")
	require.Equal(t, fb.ContactID, a.str("contact_id"))

	// A member created on the old address gets neither contact_id.
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "a@example.com"}))
	na, _ := s.Member("L1", "a@example.com")
	require.NotEqual(t, before.ContactID, na.ContactID)
	require.NotEqual(t, a.str("contact_id"), na.ContactID)
}

func listIDs(t *testing.T, c *caller, query string) []string {
	t.Helper()
	a := c.do("GET", "/lists/L1/members?count=1000&fields=members.id,members.last_changed,members.timestamp_opt,total_items&"+query, nil)
	require.Equal(t, 200, a.status, "body: %v", a.body)
	var out []string
	for _, m := range a.body["members"].([]any) {
		out = append(out, m.(map[string]any)["id"].(string))
	}
	return out
}

func TestShuffleEqualTimes(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	seed := func(s *mailchimptest.Server) {
		for i := range 60 {
			require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{
				Email: fmt.Sprintf("m%02d@example.com", i), LastChanged: t0.Add(time.Duration(i/30) * time.Second),
				TimestampOpt: t0.Add(-time.Duration(i%2) * time.Hour),
			}))
		}
	}
	second := func(i int) int { return i / 30 }
	inOrder := make([]string, 60)
	for i := range inOrder {
		inOrder[i] = hashHex(fmt.Sprintf("m%02d@example.com", i))
	}
	pos := map[string]int{}
	for i, id := range inOrder {
		pos[id] = i
	}

	// By default, equal times come in the order the changes happened.
	plain, _ := newServer(t, mailchimptest.Options{})
	seed(plain)
	pc := newCaller(t, plain)
	for range 3 {
		require.Equal(t, inOrder, listIDs(t, pc, "sort_field=last_changed&sort_dir=ASC"))
	}

	s, _ := newServer(t, mailchimptest.Options{ShuffleEqualTimes: true, ShuffleSeed: 42})
	seed(s)
	c := newCaller(t, s)
	first := listIDs(t, c, "sort_field=last_changed&sort_dir=ASC")
	again := listIDs(t, c, "sort_field=last_changed&sort_dir=ASC")
	for _, got := range [][]string{first, again} {
		require.ElementsMatch(t, inOrder, got)
		// Still sorted by last_changed; only the order inside a second moves.
		for k := 1; k < len(got); k++ {
			require.LessOrEqual(t, second(pos[got[k-1]]), second(pos[got[k]]))
		}
	}
	require.NotEqual(t, inOrder, first)
	require.NotEqual(t, first, again, "a new order on each request")
	// Sorted by timestamp_opt, equal opt-in times are shuffled too.
	byOpt := listIDs(t, c, "sort_field=timestamp_opt&sort_dir=ASC")
	require.ElementsMatch(t, inOrder, byOpt)
	for k := range byOpt {
		// The 30 opted in an hour earlier (odd i) come first.
		require.Equal(t, k < 30, pos[byOpt[k]]%2 == 1, k)
	}
}

func TestTimestampOptAndLastChangedFilters(t *testing.T) {
	s, _ := newServer(t, mailchimptest.Options{})
	c := newCaller(t, s)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, e := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, LastChanged: t0.Add(time.Duration(i) * time.Second), TimestampOpt: t0.Add(time.Duration(i) * time.Hour)}))
	}
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "never@example.com", Status: "pending", LastChanged: t0.Add(time.Second), NoTimestampOpt: true}))
	a, b, cc, never := hashHex("a@example.com"), hashHex("b@example.com"), hashHex("c@example.com"), hashHex("never@example.com")
	q := func(k string, tm time.Time) string { return k + "=" + url.QueryEscape(tm.Format(time.RFC3339)) }

	// Strictly after / strictly before; a member without an opt-in time
	// matches neither opt-in filter.
	require.Equal(t, []string{b, cc}, listIDs(t, c, q("since_timestamp_opt", t0)))
	require.Equal(t, []string{a, b}, listIDs(t, c, q("before_timestamp_opt", t0.Add(2*time.Hour))))
	require.Equal(t, []string{b}, listIDs(t, c, q("since_timestamp_opt", t0)+"&"+q("before_timestamp_opt", t0.Add(2*time.Hour))))
	require.Equal(t, []string{a, b, cc}, listIDs(t, c, q("since_timestamp_opt", time.Unix(0, 0))))
	// One second of last_changed, bounded both sides.
	require.ElementsMatch(t, []string{b, never}, listIDs(t, c, q("since_last_changed", t0)+"&"+q("before_last_changed", t0.Add(2*time.Second))))
	// Sorted by opt-in time, "" first.
	require.Equal(t, []string{never, a, b, cc}, listIDs(t, c, "sort_field=timestamp_opt&sort_dir=ASC"))
	a2 := c.do("GET", "/lists/L1/members/never@example.com?fields=timestamp_opt", nil)
	require.Equal(t, "", a2.str("timestamp_opt"))

	requireProblem(t, c.do("GET", "/lists/L1/members?since_timestamp_opt=yesterday", nil), 400, "Invalid Resource")
	requireProblem(t, c.do("GET", "/lists/L1/members?before_timestamp_opt=soon", nil), 400, "Invalid Resource")
}

// Package mailchimptest is an in-process emulator of the Mailchimp Marketing
// API v3 endpoints the sync uses (ping, list, members, batch
// subscribe/unsubscribe), in the manner of net/http/httptest: NewServer
// returns a running loopback server with seedable audiences, and the shared
// emulator middleware supplies faults, the 10-connection cap and counters.
//
// Wire shapes, error titles and state rules follow
// shared/reference/api-wire-facts.md section 1 and the Marketing OpenAPI
// 3.0.55; choices where the reference is silent are marked UNCONFIRMED.
package mailchimptest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// Options configures a Server.
type Options struct {
	// Addr is the loopback address to listen on; "" picks a free port.
	Addr string
	// APIKey is the accepted API key; "" generates "<32 hex>-<DC>".
	APIKey string
	// DC is the data center suffix of a generated key; "" means "us6".
	DC string
	// OAuthTokens are extra accepted credentials (OAuth access tokens,
	// sent the same ways as a key: Basic password or Bearer).
	OAuthTokens []string
	// Now is the clock behind last_changed and the other timestamps;
	// nil means time.Now. Mailchimp timestamps have second granularity.
	Now func() time.Time
	// MaxConnections caps simultaneous requests; 0 means Mailchimp's 10,
	// negative means no cap.
	MaxConnections int
	// Faults are injected from the start; change them with SetFaults.
	Faults emulator.Faults
	// ContactIDFollowsAddress chooses what an address change (PATCH or PUT
	// of /lists/{list_id}/members/{subscriber_hash} with a new
	// email_address, or ChangeEmail) does to contact_id. UNCONFIRMED which
	// one Mailchimp does. The OpenAPI says of contact_id: "As Mailchimp
	// evolves beyond email, you may eventually have contacts without email
	// addresses. While the `email_id` is the MD5 hash of their email
	// address, this `contact_id` is agnostic of contact's inclusion of an
	// email address." So by default (false) contact_id survives the change;
	// true derives a new contact_id from the new address. Either way the
	// id (subscriber hash) becomes the new address's, the old hash answers
	// 404, and unique_email_id stays.
	ContactIDFollowsAddress bool
	// ShuffleEqualTimes returns members whose sort value is equal (the same
	// last_changed second, or the same timestamp_opt / timestamp_signup
	// when sorted by those) in a new random order on every request, as the
	// real API is free to: it documents no order among equal values. By
	// default they come in the order the changes happened.
	ShuffleEqualTimes bool
	// ShuffleSeed seeds that order, for a reproducible test; 0 picks a
	// random seed.
	ShuffleSeed uint64
	// WebhookRetries are the waits before each retry of a failed webhook
	// delivery; nil means Mailchimp's increasing intervals over about 75
	// minutes (tests shorten them).
	WebhookRetries []time.Duration
}

// Server is a running Mailchimp emulator. The embedded Middleware gives
// SetFaults, SetLimit, Counts, Faulted, Total, PeakInFlight, ResetCounts.
type Server struct {
	*emulator.Middleware

	// URL is the API base, including /3.0.
	URL string
	// APIKey is the accepted API key.
	APIKey string

	srv    *httptest.Server
	now    func() time.Time
	tokens map[string]bool
	// contactFollows is Options.ContactIDFollowsAddress.
	contactFollows bool
	// shuffle orders equal sort values when Options.ShuffleEqualTimes;
	// nil otherwise. Used under mu.
	shuffle *mrand.Rand

	mu    sync.Mutex
	lists map[string]*list
	// source is where the change being made comes from (SourceAPI unless
	// Act says otherwise), for webhook deliveries. Used under mu.
	source string
	hooks  *hooks
}

// NewServer starts an emulator. It panics if it cannot listen, like
// httptest.NewServer.
func NewServer(opts Options) *Server {
	s := &Server{now: opts.Now, lists: map[string]*list{}, tokens: map[string]bool{}, contactFollows: opts.ContactIDFollowsAddress, source: SourceAPI}
	if s.now == nil {
		s.now = time.Now
	}
	s.hooks = newHooks(s.now, opts.WebhookRetries)
	if opts.ShuffleEqualTimes {
		seed := opts.ShuffleSeed
		if seed == 0 {
			seed = mrand.Uint64()
		}
		s.shuffle = mrand.New(mrand.NewPCG(seed, 0x6d61696c))
	}
	s.APIKey = opts.APIKey
	if s.APIKey == "" {
		dc := opts.DC
		if dc == "" {
			dc = "us6"
		}
		s.APIKey = randomHex(16) + "-" + dc
	}
	s.tokens[s.APIKey] = true
	for _, t := range opts.OAuthTokens {
		s.tokens[t] = true
	}
	s.Middleware = emulator.NewMiddleware(emulator.Vendor{
		TooMany:     tooMany,
		ServerError: serverError,
		OverLimit:   tooMany,
		Endpoint:    endpoint,
	})
	limit := opts.MaxConnections
	if limit == 0 {
		limit = 10
	}
	if limit > 0 {
		s.SetLimit(limit)
	}
	s.SetFaults(opts.Faults)
	srv, err := emulator.Listen(opts.Addr, s.Wrap(http.HandlerFunc(s.serve)))
	if err != nil {
		panic(fmt.Sprintf("mailchimptest: listen %s: %v", opts.Addr, err))
	}
	s.srv = srv
	s.URL = srv.URL + "/3.0"
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.hooks.close()
	s.srv.Close()
}

// nowUnix is the clock at Mailchimp's one-second granularity.
func (s *Server) nowUnix() int64 { return s.now().Unix() }

// AddList creates an audience (or renames an existing one). Every list has
// the default merge tags FNAME, LNAME, ADDRESS, PHONE, BIRTHDAY plus
// mergeTags.
func (s *Server) AddList(id, name string, mergeTags ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.lists[id]; ok {
		l.name = name
		return
	}
	l := newList(id, name, s.nowUnix(), mergeTags)
	l.notify = func(typ string, i int32, old string) { s.emit(l, typ, i, old) }
	s.lists[id] = l
}

func (s *Server) list(id string) (*list, error) {
	l, ok := s.lists[id]
	if !ok {
		return nil, fmt.Errorf("mailchimptest: no list %q (AddList first)", id)
	}
	return l, nil
}

// AddMember seeds one member (or overwrites the seeded state of an
// existing one) without any of the API's state rules.
func (s *Server) AddMember(listID string, m MemberSeed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.list(listID)
	if err != nil {
		return err
	}
	return l.seed(m, s.nowUnix())
}

// ChangeEmail changes a member's address as PATCH with a new
// email_address does (see Options.ContactIDFollowsAddress): the member is
// found by its old address, its id becomes the new address's hash, and
// last_changed moves to the clock's now. It fails as the API would when
// the old address is not a member or the new one is invalid or taken.
func (s *Server) ChangeEmail(listID, oldEmail, newEmail string) error {
	return s.changeEmail(listID, oldEmail, newEmail, SourceAPI)
}

func (s *Server) changeEmail(listID, oldEmail, newEmail, source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.source = source
	defer func() { s.source = SourceAPI }()
	l, err := s.list(listID)
	if err != nil {
		return err
	}
	i, ok := l.byHash[hashOf(strings.TrimSpace(oldEmail))]
	if !ok || l.members[i].status == stForgotten {
		return fmt.Errorf("mailchimptest: %q is not a member of list %q", oldEmail, listID)
	}
	if strings.EqualFold(strings.TrimSpace(newEmail), l.email(&l.members[i])) {
		return nil
	}
	if p := l.emailChangeProblem(i, newEmail); p != nil {
		return fmt.Errorf("mailchimptest: change %q to %q: %d %s: %s", oldEmail, newEmail, p.status, p.title, p.detail)
	}
	l.changeEmail(i, newEmail, s.contactFollows)
	l.touch(i, s.nowUnix())
	return nil
}

// Generate seeds n members from gen(i), i in [0, n). A nil gen makes
// subscribed members "member<i>@example.com" changed at the clock's now.
// Members are stored compactly enough for a million in one list.
func (s *Server) Generate(listID string, n int, gen func(i int) MemberSeed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.list(listID)
	if err != nil {
		return err
	}
	now := s.nowUnix()
	l.members = growCap(l.members, n)
	l.order = growCap(l.order, n)
	for i := range n {
		seed := MemberSeed{Email: fmt.Sprintf("member%d@example.com", i)}
		if gen != nil {
			seed = gen(i)
		}
		if err := l.seed(seed, now); err != nil {
			return err
		}
	}
	return nil
}

func growCap[T any](s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	out := make([]T, len(s), len(s)+n)
	copy(out, s)
	return out
}

// Member returns the stored state of one member (permanently deleted
// members included, with Forgotten set).
func (s *Server) Member(listID, email string) (Member, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.lists[listID]
	if !ok {
		return Member{}, false
	}
	i, ok := l.byHash[hashOf(email)]
	if !ok {
		return Member{}, false
	}
	return l.inspect(i), true
}

// Members returns every member of a list in last_changed order (oldest
// first). Meant for small test audiences.
func (s *Server) Members(listID string) []Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.lists[listID]
	if !ok {
		return nil
	}
	var out []Member
	for j, e := range l.order {
		if l.members[e.idx].pos == int32(j) {
			out = append(out, l.inspect(e.idx))
		}
	}
	return out
}

// CountByStatus counts a list's members by status ("forgotten" for
// permanently deleted addresses).
func (s *Server) CountByStatus(listID string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	if l, ok := s.lists[listID]; ok {
		for i := range l.members {
			out[l.members[i].status.String()]++
		}
	}
	return out
}

// Handler returns the emulator's handler with its middleware, for serving
// it elsewhere (a dev-mode listener).
func (s *Server) Handler() http.Handler { return s.srv.Config.Handler }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func requestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// route is a parsed API path.
type route struct {
	template string // "/lists/{list_id}/members/{subscriber_hash}"
	listID   string
	key      string // subscriber_hash, email or contact_id
	allow    string // methods the path supports
}

func parseRoute(path string) (route, bool) {
	rest, ok := strings.CutPrefix(path, "/3.0/")
	if !ok {
		return route{}, false
	}
	seg := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	switch {
	case len(seg) == 1 && seg[0] == "ping":
		return route{template: "/ping", allow: "GET"}, true
	case len(seg) == 2 && seg[0] == "lists" && seg[1] != "":
		return route{template: "/lists/{list_id}", listID: seg[1], allow: "GET, POST"}, true
	case len(seg) == 3 && seg[0] == "lists" && seg[2] == "members":
		return route{template: "/lists/{list_id}/members", listID: seg[1], allow: "GET, POST"}, true
	case len(seg) == 4 && seg[0] == "lists" && seg[2] == "members" && seg[3] != "":
		return route{template: "/lists/{list_id}/members/{subscriber_hash}", listID: seg[1], key: seg[3], allow: "GET, PUT, PATCH, DELETE"}, true
	case len(seg) == 3 && seg[0] == "lists" && seg[2] == "webhooks":
		return route{template: "/lists/{list_id}/webhooks", listID: seg[1], allow: "GET, POST"}, true
	case len(seg) == 4 && seg[0] == "lists" && seg[2] == "webhooks" && seg[3] != "":
		return route{template: "/lists/{list_id}/webhooks/{webhook_id}", listID: seg[1], key: seg[3], allow: "GET, PATCH, DELETE"}, true
	case len(seg) == 6 && seg[0] == "lists" && seg[2] == "members" && seg[4] == "actions" && seg[5] == "delete-permanent":
		return route{template: "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent", listID: seg[1], key: seg[3], allow: "POST"}, true
	}
	return route{}, false
}

// endpoint names a request for the counters: "GET /lists/{list_id}/members".
func endpoint(r *http.Request) string {
	if rt, ok := parseRoute(r.URL.Path); ok {
		return r.Method + " " + rt.template
	}
	return r.Method + " (unknown)"
}

// credential returns the key or token a request carries: HTTP Basic with
// any username and the key as password, or Bearer.
func credential(r *http.Request) string {
	h := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(h, "Basic "):
		b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Basic "))
		if err != nil {
			return "\x00invalid"
		}
		_, pass, _ := strings.Cut(string(b), ":")
		return pass
	case strings.HasPrefix(h, "Bearer "):
		return strings.TrimPrefix(h, "Bearer ")
	case strings.HasPrefix(h, "OAuth "):
		return strings.TrimPrefix(h, "OAuth ")
	}
	return ""
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// The Date header follows the emulator's clock, so that a client
	// comparing timestamps with it sees one consistent time.
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	if rest, ok := strings.CutPrefix(r.URL.Path, "/emulator/lists/"); ok {
		// The emulator's own endpoint: a person's action, not the API.
		if listID, ok := strings.CutSuffix(rest, "/act"); ok && !strings.Contains(listID, "/") {
			s.serveAct(w, r, listID)
			return
		}
		notFound(w)
		return
	}
	switch cred := credential(r); {
	case cred == "":
		// UNCONFIRMED: title and detail of a request without credentials;
		// the glossary names APIKeyMissing as a 401.
		writeProblem(w, http.StatusUnauthorized, "API Key Missing", "Your request did not include an API key.", nil)
		return
	case !s.tokens[cred]:
		// UNCONFIRMED detail text; the title is the documented one.
		writeProblem(w, http.StatusUnauthorized, "API Key Invalid", "Your API key may be invalid, or you've attempted to access the wrong datacenter.", nil)
		return
	}
	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		notFound(w)
		return
	}
	if !strings.Contains(rt.allow+",", r.Method+",") {
		w.Header().Set("Allow", rt.allow)
		writeProblem(w, http.StatusMethodNotAllowed, "Method Not Allowed", "The requested method and resource are not compatible. See the Allow header for this resource's available methods.", nil)
		return
	}
	if strings.HasPrefix(rt.template, "/lists/{list_id}/webhooks") {
		s.serveWebhooks(w, r, rt)
		return
	}
	// The answer is made under the lock and encoded after it: a page of
	// 1,000 members or a batch of 500 takes milliseconds to encode, and
	// holding the lock through it queued every other request behind it.
	d := &deferredJSON{ResponseWriter: w}
	s.handle(d, r, rt)
	d.flush()
}

// handle answers an API request under the store's lock.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, rt route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt.template == "/ping" {
		writeJSON(w, http.StatusOK, map[string]any{"health_status": "Everything's Chimpy!"}, r)
		return
	}
	l, ok := s.lists[rt.listID]
	if !ok {
		notFound(w)
		return
	}
	switch rt.template + " " + r.Method {
	case "/lists/{list_id} GET":
		s.getList(w, r, l)
	case "/lists/{list_id} POST":
		s.batch(w, r, l)
	case "/lists/{list_id}/members GET":
		s.listMembers(w, r, l)
	case "/lists/{list_id}/members POST":
		s.addMember(w, r, l)
	case "/lists/{list_id}/members/{subscriber_hash} GET":
		s.getMember(w, r, l, rt.key)
	case "/lists/{list_id}/members/{subscriber_hash} PUT":
		s.putMember(w, r, l, rt.key)
	case "/lists/{list_id}/members/{subscriber_hash} PATCH":
		s.patchMember(w, r, l, rt.key)
	case "/lists/{list_id}/members/{subscriber_hash} DELETE":
		s.archiveMember(w, r, l, rt.key)
	case "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent POST":
		s.deletePermanent(w, r, l, rt.key)
	}
}

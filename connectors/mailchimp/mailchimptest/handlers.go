package mailchimptest

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

const problemType = "https://mailchimp.com/developer/marketing/docs/errors/"

// fieldError is one entry of a validation problem's errors array.
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// problem is an API error answer before it is written.
type problem struct {
	status int
	title  string
	detail string
	errs   []fieldError
}

func writeProblem(w http.ResponseWriter, status int, title, detail string, errs []fieldError) {
	id := requestID()
	body := map[string]any{"type": problemType, "title": title, "status": status, "detail": detail, "instance": id}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/problem+json; charset=utf-8")
	h.Set("X-Request-Id", id)
	h.Set("Link", `<https://us6.api.mailchimp.com/schema/3.0/Definitions/ProblemDetailDocument.json>; rel="describedBy"`)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (p *problem) write(w http.ResponseWriter) { writeProblem(w, p.status, p.title, p.detail, p.errs) }

func notFound(w http.ResponseWriter) {
	writeProblem(w, http.StatusNotFound, "Resource Not Found", "The requested resource could not be found.", nil)
}

// tooMany is the answer to the 11th simultaneous request and to an injected
// 429. Mailchimp documents no Retry-After header (UNCONFIRMED: absent).
func tooMany(w http.ResponseWriter, _ *http.Request) {
	writeProblem(w, http.StatusTooManyRequests, "TooManyRequests", "You have exceeded the limit of 10 simultaneous connections.", nil)
}

func serverError(w http.ResponseWriter, _ *http.Request) {
	writeProblem(w, http.StatusInternalServerError, "InternalServerError", "An unexpected internal error has occurred. Please contact Support for more information.", nil)
}

func badRequest(title, detail string, errs ...fieldError) *problem {
	return &problem{status: http.StatusBadRequest, title: title, detail: detail, errs: errs}
}

func invalidResource(errs ...fieldError) *problem {
	return badRequest("Invalid Resource", "The resource submitted could not be validated. For field-specific details, see the 'errors' array.", errs...)
}

func complianceProblem(email string) *problem {
	return badRequest("Member In Compliance State", email+" is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.")
}

func forgottenProblem(email string) *problem {
	return badRequest("Forgotten Email Not Subscribed", email+" was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.")
}

func fakeEmailProblem(email string) *problem {
	if email == "" {
		return invalidResource(fieldError{Field: "email_address", Message: "This value should not be blank."})
	}
	// UNCONFIRMED: detail text recalled from real answers, not in a stored source.
	return badRequest("Invalid Resource", email+" looks fake or invalid, please enter a real email address.")
}

// writeJSON writes v, applying the fields / exclude_fields partial response.
func writeJSON(w http.ResponseWriter, status int, v any, r *http.Request) {
	if d, ok := w.(*deferredJSON); ok {
		// v is made of fresh values (memberJSON copies what it reads), so
		// it can be encoded once the store's lock is released.
		d.status, d.v, d.r = status, v, r
		return
	}
	q := r.URL.Query()
	if f := q.Get("fields"); f != "" {
		v = include(v, parseFields(f))
	} else if f := q.Get("exclude_fields"); f != "" {
		v = exclude(v, parseFields(f))
	}
	b := append(appendJSON(nil, v), '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Request-Id", requestID())
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// deferredJSON holds the JSON answer writeJSON was given, for flush to
// encode and write after the store's lock is released; anything else
// goes to the ResponseWriter at once.
type deferredJSON struct {
	http.ResponseWriter
	status int
	v      any
	r      *http.Request
}

func (d *deferredJSON) flush() {
	if d.r != nil {
		writeJSON(d.ResponseWriter, d.status, d.v, d.r)
	}
}

func noContent(w http.ResponseWriter) {
	w.Header().Set("X-Request-Id", requestID())
	w.WriteHeader(http.StatusNoContent)
}

func ts(sec int64) string {
	if sec == 0 {
		return ""
	}
	return time.Unix(sec, 0).UTC().Format("2006-01-02T15:04:05-07:00")
}

func base(r *http.Request) string { return "http://" + r.Host + "/3.0" }

// memberJSON renders a member with the fields of the reference's member
// object ("List Members 2"). id is the subscriber hash; unique_email_id,
// web_id and contact_id derive from the hash of the address the member was
// created with (see ident), contact_id as a reversible mask of it. want,
// when not nil, names the only top-level fields the answer will keep
// (fields=...), so the others are not built: a page of 1000 members stays
// cheap.
func (l *list) memberJSON(i int32, r *http.Request, want fieldTree) map[string]any {
	m := &l.members[i]
	email := l.email(m)
	h := hashOf(email)
	id := hex.EncodeToString(h[:])
	out := make(map[string]any, 32)
	put := func(k string, v func() any) {
		if _, ok := want[k]; ok || want == nil {
			out[k] = v()
		}
	}
	val := func(v any) func() any { return func() any { return v } }
	var merge map[string]any
	mergeOf := func() map[string]any {
		if merge == nil {
			merge = l.mergeOf(i)
		}
		return merge
	}
	self := func() string { return base(r) + "/lists/" + l.id + "/members/" + id }
	put("id", val(id))
	put("email_address", val(email))
	put("unique_email_id", func() any { o := l.originOf(i); return hex.EncodeToString(o[:])[16:26] })
	put("contact_id", func() any { c := contactID(l.contactOf(i)); return hex.EncodeToString(c[:]) })
	put("full_name", func() any {
		mf := mergeOf()
		return strings.TrimSpace(mf["FNAME"].(string) + " " + mf["LNAME"].(string))
	})
	put("web_id", func() any { o := l.originOf(i); return int(binary.BigEndian.Uint32(o[4:8]) & 0x3fffffff) })
	put("email_type", val("html"))
	put("status", val(m.status.String()))
	put("consents_to_one_to_one_messaging", val(true))
	put("merge_fields", func() any { return mergeOf() })
	put("stats", func() any { return map[string]any{"avg_open_rate": 0, "avg_click_rate": 0} })
	put("ip_signup", val(""))
	put("timestamp_signup", func() any { return ts(m.signupAt) })
	put("ip_opt", val(""))
	put("timestamp_opt", func() any { return ts(m.optAt) })
	put("member_rating", val(2))
	put("last_changed", func() any { return ts(m.lastChanged) })
	put("language", val(""))
	put("vip", val(false))
	put("email_client", val(""))
	put("location", func() any {
		return map[string]any{"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0, "country_code": "", "timezone": "", "region": ""}
	})
	put("source", val("API - Generic"))
	put("tags_count", val(0))
	put("tags", func() any { return []any{} })
	put("list_id", val(l.id))
	put("_links", func() any {
		return []any{
			map[string]any{"rel": "self", "href": self(), "method": "GET"},
			map[string]any{"rel": "parent", "href": base(r) + "/lists/" + l.id + "/members", "method": "GET"},
			map[string]any{"rel": "update", "href": self(), "method": "PATCH"},
			map[string]any{"rel": "upsert", "href": self(), "method": "PUT"},
			map[string]any{"rel": "delete", "href": self(), "method": "DELETE"},
		}
	})
	if m.status == stUnsubscribed {
		put("unsubscribe_reason", func() any {
			reason := ""
			if m.extra != 0 {
				reason = l.extras[m.extra-1].reason
			}
			if reason == "" {
				// UNCONFIRMED: the text for an admin/API unsubscribe is not
				// documented; this one is invented. Do not assert on it.
				reason = "N/A (Unsubscribed by an admin)"
			}
			return reason
		})
	}
	return out
}

// wanted is the part of the request's fields=... tree under path (nil:
// everything), and whether anything under path is wanted at all.
func wanted(r *http.Request, path ...string) (fieldTree, bool) {
	f := r.URL.Query().Get("fields")
	if f == "" {
		return nil, true
	}
	t := parseFields(f)
	for _, p := range path {
		sub, ok := t[p]
		if !ok {
			return nil, false
		}
		if sub == nil {
			return nil, true
		}
		t = sub
	}
	return t, true
}

func (s *Server) getList(w http.ResponseWriter, r *http.Request, l *list) {
	var subs, unsubs, cleaned int
	for i := range l.members {
		switch l.members[i].status {
		case stSubscribed:
			subs++
		case stUnsubscribed:
			unsubs++
		case stCleaned:
			cleaned++
		}
	}
	self := base(r) + "/lists/" + l.id
	writeJSON(w, http.StatusOK, map[string]any{
		"id": l.id, "web_id": l.webID, "name": l.name,
		"contact":             map[string]any{"company": "", "address1": "", "address2": "", "city": "", "state": "", "zip": "", "country": "", "phone": ""},
		"permission_reminder": "", "use_archive_bar": false,
		"campaign_defaults":   map[string]any{"from_name": "", "from_email": "", "subject": "", "language": "en"},
		"notify_on_subscribe": "", "notify_on_unsubscribe": "",
		"date_created": ts(l.created), "list_rating": 0, "email_type_option": false,
		"subscribe_url_short": "", "subscribe_url_long": "", "beamer_address": "",
		"visibility": "pub", "double_optin": false, "has_welcome": false, "marketing_permissions": false,
		"modules": []any{},
		"stats": map[string]any{
			"member_count": subs, "unsubscribe_count": unsubs, "cleaned_count": cleaned,
			"member_count_since_send": subs, "unsubscribe_count_since_send": unsubs, "cleaned_count_since_send": cleaned,
			"campaign_count": 0, "campaign_last_sent": "", "merge_field_count": len(l.mergeTags),
			"avg_sub_rate": 0, "avg_unsub_rate": 0, "target_sub_rate": 0, "open_rate": 0, "click_rate": 0,
			"last_sub_date": "", "last_unsub_date": "",
		},
		"_links": []any{map[string]any{"rel": "self", "href": self, "method": "GET"}},
	}, r)
}

// parseTime reads a timestamp query parameter: ISO 8601 with offset as
// documented, or a bare date (then dateOnly is true).
func parseTime(v string) (t time.Time, dateOnly bool, ok bool) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05-0700", "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, false, true
		}
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, true, true
	}
	return time.Time{}, false, false
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request, l *list) {
	q := r.URL.Query()
	count, offset := 10, 0
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			invalidResource(fieldError{Field: "count", Message: "This value should be a valid number."}).write(w)
			return
		}
		if n > 1000 {
			// UNCONFIRMED: title/detail; the documented fact is that
			// count is at most 1000 and more is an error.
			badRequest("Invalid Resource", "The count parameter may not be greater than 1000.", fieldError{Field: "count", Message: "This value should be 1000 or less."}).write(w)
			return
		}
		count = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			invalidResource(fieldError{Field: "offset", Message: "This value should be a valid number."}).write(w)
			return
		}
		offset = n
	}
	want := stNone
	if v := q.Get("status"); v != "" {
		if want = parseStatus(v); want == stNone {
			invalidResource(fieldError{Field: "status", Message: "Value must be one of: subscribed, unsubscribed, cleaned, pending, transactional, archived"}).write(w)
			return
		}
	}
	since, before := int64(-1<<62), int64(1<<62)
	if v := q.Get("since_last_changed"); v != "" {
		t, _, ok := parseTime(v)
		if !ok {
			invalidResource(fieldError{Field: "since_last_changed", Message: "This value is not a valid datetime."}).write(w)
			return
		}
		since = t.Unix()
	}
	if v := q.Get("before_last_changed"); v != "" {
		t, _, ok := parseTime(v)
		if !ok {
			invalidResource(fieldError{Field: "before_last_changed", Message: "This value is not a valid datetime."}).write(w)
			return
		}
		before = t.Unix()
	}
	// The opt-in time filters are strictly after / strictly before, like
	// the last_changed ones. UNCONFIRMED: whether a member with no opt-in
	// time (timestamp_opt "") matches them; we take it to match neither,
	// as a NULL column would not.
	optSince, optBefore, optFilter := int64(-1<<62), int64(1<<62), false
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"since_timestamp_opt", &optSince}, {"before_timestamp_opt", &optBefore}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		t, _, ok := parseTime(v)
		if !ok {
			invalidResource(fieldError{Field: f.name, Message: "This value is not a valid datetime."}).write(w)
			return
		}
		*f.dst, optFilter = t.Unix(), true
	}
	unsubFrom, unsubStrict := int64(0), false
	if v := q.Get("unsubscribed_since"); v != "" {
		if want != stUnsubscribed {
			// Documented: "Using any status other than unsubscribed with
			// this filter will result in an error." UNCONFIRMED: its text.
			badRequest("Invalid Resource", "The unsubscribed_since filter can only be used with status=unsubscribed.").write(w)
			return
		}
		// UNCONFIRMED: the format ("a specific date"). We take a date,
		// meaning from 00:00 UTC that day on, or an ISO 8601 time, meaning
		// strictly after it, like since_last_changed.
		t, dateOnly, ok := parseTime(v)
		if !ok {
			invalidResource(fieldError{Field: "unsubscribed_since", Message: "This value is not a valid date."}).write(w)
			return
		}
		unsubFrom, unsubStrict = t.Unix(), !dateOnly
	}
	if q.Get("since_last_campaign") != "" && want == stNone {
		badRequest("Invalid Resource", "Member status is required to use the since_last_campaign filter.").write(w)
		return
	}
	sortField := q.Get("sort_field")
	switch sortField {
	case "", "last_changed", "timestamp_opt", "timestamp_signup":
	default:
		invalidResource(fieldError{Field: "sort_field", Message: "Value must be one of: timestamp_opt, timestamp_signup, last_changed"}).write(w)
		return
	}
	desc := false
	switch q.Get("sort_dir") {
	case "", "ASC":
	case "DESC":
		desc = true
	default:
		invalidResource(fieldError{Field: "sort_dir", Message: "Value must be one of: ASC, DESC"}).write(w)
		return
	}

	// The change log is sorted by last_changed: start after since
	// (strictly after, at second granularity) and walk only the suffix.
	start := sort.Search(len(l.order), func(j int) bool { return l.order[j].lc > since })
	var matched []int32
	for j := start; j < len(l.order); j++ {
		e := l.order[j]
		if e.lc >= before {
			break
		}
		m := &l.members[e.idx]
		if m.pos != int32(j) || m.status == stForgotten {
			continue
		}
		// UNCONFIRMED: whether archived members appear without a status
		// filter; we list them, with status "archived".
		if want != stNone && m.status != want {
			continue
		}
		if optFilter && (m.optAt == 0 || m.optAt <= optSince || m.optAt >= optBefore) {
			continue
		}
		if unsubFrom != 0 && (m.unsubAt < unsubFrom || (unsubStrict && m.unsubAt == unsubFrom)) {
			continue
		}
		matched = append(matched, e.idx)
	}
	// UNCONFIRMED: the default order; we use last_changed ascending, ties in
	// the order the changes happened. Sorted by timestamp_opt or
	// timestamp_signup, "" (0) comes first (UNCONFIRMED).
	key := func(i int32) int64 { return l.members[i].lastChanged }
	switch sortField {
	case "timestamp_opt":
		key = func(i int32) int64 { return l.members[i].optAt }
		sort.SliceStable(matched, func(a, b int) bool { return key(matched[a]) < key(matched[b]) })
	case "timestamp_signup":
		key = func(i int32) int64 { return l.members[i].signupAt }
		sort.SliceStable(matched, func(a, b int) bool { return key(matched[a]) < key(matched[b]) })
	}
	if s.shuffle != nil {
		// The API promises no order among equal sort values: each request
		// gets a new one (Options.ShuffleEqualTimes).
		for a := 0; a < len(matched); {
			b := a + 1
			for b < len(matched) && key(matched[b]) == key(matched[a]) {
				b++
			}
			run := matched[a:b]
			s.shuffle.Shuffle(len(run), func(x, y int) { run[x], run[y] = run[y], run[x] })
			a = b
		}
	}
	if desc {
		for a, b := 0, len(matched)-1; a < b; a, b = a+1, b-1 {
			matched[a], matched[b] = matched[b], matched[a]
		}
	}
	total := len(matched)
	page := matched[min(offset, total):min(offset+count, total)]
	members := make([]any, 0, len(page))
	if want, ok := wanted(r, "members"); ok {
		for _, i := range page {
			members = append(members, l.memberJSON(i, r, want))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"members":     members,
		"list_id":     l.id,
		"total_items": total,
		"_links": []any{
			map[string]any{"rel": "self", "href": base(r) + "/lists/" + l.id + "/members", "method": "GET"},
			map[string]any{"rel": "parent", "href": base(r) + "/lists/" + l.id, "method": "GET"},
			map[string]any{"rel": "create", "href": base(r) + "/lists/" + l.id + "/members", "method": "POST"},
		},
	}, r)
}

// memberBody is the writable part of a member in POST, PUT, PATCH and the
// batch call.
type memberBody struct {
	EmailAddress *string        `json:"email_address"`
	Status       *string        `json:"status"`
	StatusIfNew  *string        `json:"status_if_new"`
	MergeFields  map[string]any `json:"merge_fields"`
}

func readJSON(r *http.Request, v any) *problem {
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return badRequest("JSON Parse Exception", "We encountered an unspecified JSON parsing error.")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return badRequest("JSON Parse Exception", "We encountered an unspecified JSON parsing error.")
	}
	return nil
}

// writableStatus parses a status a write may set (the enum of POST/PUT).
func writableStatus(field, v string, patch bool) (status, *problem) {
	st := parseStatus(v)
	if st == stNone || st == stArchived || (patch && st == stTransactional) {
		enum := "subscribed, unsubscribed, cleaned, pending, transactional"
		if patch {
			enum = "subscribed, unsubscribed, cleaned, pending"
		}
		return stNone, invalidResource(fieldError{Field: field, Message: "Value must be one of: " + enum})
	}
	return st, nil
}

// transition moves an existing member to status to, under the rules the
// sync depends on, and reports whether anything changed.
//
//   - unsubscribed or cleaned -> subscribed: 400 Member In Compliance State.
//     pending is allowed (it sends a confirmation email).
//   - cleaned -> unsubscribed: our choice (UNCONFIRMED): refused the same
//     way, the member stays cleaned. A bounce is final and already stops
//     all mail; the batch call reports it in errors[].
//   - archived -> anything: allowed, the member is re-added.
func (l *list) transition(i int32, to status, now int64) (bool, *problem) {
	m := &l.members[i]
	if m.status == to {
		return false, nil
	}
	if (m.status == stUnsubscribed || m.status == stCleaned) && to == stSubscribed ||
		m.status == stCleaned && to == stUnsubscribed {
		return false, complianceProblem(l.email(m))
	}
	m.status = to
	if l.notify != nil {
		switch to {
		case stSubscribed:
			l.notify("subscribe", i, "")
		case stUnsubscribed:
			l.notify("unsubscribe", i, "")
		case stCleaned:
			l.notify("cleaned", i, "")
		}
	}
	switch to {
	case stSubscribed:
		m.optAt = now
	case stUnsubscribed:
		m.unsubAt = now
		if m.extra != 0 {
			l.extras[m.extra-1].reason = ""
		}
	case stPending:
		m.signupAt = now
	}
	return true, nil
}

// create adds a new member under status st.
func (l *list) create(email string, st status, now int64) int32 {
	i := l.add(email, st, now)
	m := &l.members[i]
	switch st {
	case stPending:
		m.signupAt = now
	case stUnsubscribed:
		m.unsubAt, m.optAt = now, now
	default:
		// A recorded API add shows timestamp_opt equal to last_changed and
		// timestamp_signup "".
		m.optAt = now
	}
	if st == stSubscribed && l.notify != nil {
		l.notify("subscribe", i, "")
	}
	return i
}

func (s *Server) getMember(w http.ResponseWriter, r *http.Request, l *list, key string) {
	i, ok := l.find(key)
	if !ok || l.members[i].status == stForgotten {
		notFound(w)
		return
	}
	want, _ := wanted(r)
	writeJSON(w, http.StatusOK, l.memberJSON(i, r, want), r)
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request, l *list) {
	var b memberBody
	if p := readJSON(r, &b); p != nil {
		p.write(w)
		return
	}
	email := ""
	if b.EmailAddress != nil {
		email = strings.TrimSpace(*b.EmailAddress)
	}
	if !validEmail(email) {
		fakeEmailProblem(email).write(w)
		return
	}
	if b.Status == nil {
		invalidResource(fieldError{Field: "status", Message: "This value should not be blank."}).write(w)
		return
	}
	st, p := writableStatus("status", *b.Status, false)
	if p != nil {
		p.write(w)
		return
	}
	now := s.nowUnix()
	i, exists := l.byHash[hashOf(email)]
	if exists {
		switch l.members[i].status {
		case stForgotten:
			forgottenProblem(email).write(w)
			return
		case stArchived:
			// Re-adding an archived contact works (recorded capture).
			if _, p := l.transition(i, st, now); p != nil {
				p.write(w)
				return
			}
			l.setMerge(i, b.MergeFields)
			l.touch(i, now)
		default:
			badRequest("Member Exists", l.email(&l.members[i])+" is already a list member. Use PUT to insert or update list members.").write(w)
			return
		}
	} else {
		i = l.create(email, st, now)
		l.setMerge(i, b.MergeFields)
	}
	writeJSON(w, http.StatusOK, l.memberJSON(i, r, nil), r)
}

func (s *Server) putMember(w http.ResponseWriter, r *http.Request, l *list, key string) {
	var b memberBody
	if p := readJSON(r, &b); p != nil {
		p.write(w)
		return
	}
	now := s.nowUnix()
	i, exists := l.find(key)
	if !exists && b.EmailAddress != nil {
		email := strings.TrimSpace(*b.EmailAddress)
		if !strings.EqualFold(key, email) && !strings.EqualFold(key, hexHash(email)) {
			// UNCONFIRMED: the answer for a body address that does not
			// match the path's hash.
			badRequest("Invalid Resource", "The email address in the request body does not match the subscriber hash.").write(w)
			return
		}
	}
	if exists && l.members[i].status == stForgotten {
		forgottenProblem(l.email(&l.members[i])).write(w)
		return
	}
	if exists {
		changed := false
		// UNCONFIRMED: that PUT changes an existing member's address like
		// PATCH does; the spec lists email_address in both bodies.
		newEmail := b.EmailAddress != nil && !strings.EqualFold(strings.TrimSpace(*b.EmailAddress), l.email(&l.members[i]))
		if newEmail {
			if p := l.emailChangeProblem(i, *b.EmailAddress); p != nil {
				p.write(w)
				return
			}
		}
		var target *string
		switch {
		case b.Status != nil:
			target = b.Status
		case l.members[i].status == stArchived && b.StatusIfNew != nil:
			// UNCONFIRMED: an archived contact is re-added with status_if_new.
			target = b.StatusIfNew
		}
		if target != nil {
			st, p := writableStatus("status", *target, false)
			if p != nil {
				p.write(w)
				return
			}
			c, p := l.transition(i, st, now)
			if p != nil {
				p.write(w)
				return
			}
			changed = c
		}
		if newEmail {
			l.changeEmail(i, *b.EmailAddress, s.contactFollows)
			changed = true
		}
		if l.setMerge(i, b.MergeFields) {
			changed = true
		}
		if changed {
			l.touch(i, now)
		}
		writeJSON(w, http.StatusOK, l.memberJSON(i, r, nil), r)
		return
	}
	email := ""
	if b.EmailAddress != nil {
		email = strings.TrimSpace(*b.EmailAddress)
	} else if strings.Contains(key, "@") {
		email = key
	}
	if !validEmail(email) {
		fakeEmailProblem(email).write(w)
		return
	}
	target := b.StatusIfNew
	if target == nil {
		target = b.Status
	}
	if target == nil {
		invalidResource(fieldError{Field: "status_if_new", Message: "This value should not be blank."}).write(w)
		return
	}
	st, p := writableStatus("status_if_new", *target, false)
	if p != nil {
		p.write(w)
		return
	}
	i = l.create(email, st, now)
	l.setMerge(i, b.MergeFields)
	writeJSON(w, http.StatusOK, l.memberJSON(i, r, nil), r)
}

func hexHash(email string) string {
	h := hashOf(email)
	return hex.EncodeToString(h[:])
}

func (s *Server) patchMember(w http.ResponseWriter, r *http.Request, l *list, key string) {
	i, ok := l.find(key)
	if !ok || l.members[i].status == stForgotten {
		notFound(w)
		return
	}
	var b memberBody
	if p := readJSON(r, &b); p != nil {
		p.write(w)
		return
	}
	now := s.nowUnix()
	changed := false
	// Every check comes before any change, so a refused PATCH changes
	// nothing.
	newEmail := b.EmailAddress != nil && !strings.EqualFold(strings.TrimSpace(*b.EmailAddress), l.email(&l.members[i]))
	if newEmail {
		if p := l.emailChangeProblem(i, *b.EmailAddress); p != nil {
			p.write(w)
			return
		}
	}
	if b.Status != nil {
		st, p := writableStatus("status", *b.Status, true)
		if p != nil {
			p.write(w)
			return
		}
		c, p := l.transition(i, st, now)
		if p != nil {
			p.write(w)
			return
		}
		changed = c
	}
	if newEmail {
		l.changeEmail(i, *b.EmailAddress, s.contactFollows)
		changed = true
	}
	if l.setMerge(i, b.MergeFields) {
		changed = true
	}
	if changed {
		l.touch(i, now)
	}
	writeJSON(w, http.StatusOK, l.memberJSON(i, r, nil), r)
}

func (s *Server) archiveMember(w http.ResponseWriter, r *http.Request, l *list, key string) {
	i, ok := l.find(key)
	if !ok || l.members[i].status == stForgotten {
		notFound(w)
		return
	}
	switch l.members[i].status {
	case stCleaned, stPending, stArchived:
		// Recorded answer, header included.
		w.Header().Set("Allow", "GET, PUT")
		writeProblem(w, http.StatusMethodNotAllowed, "Method Not Allowed", "This list member cannot be removed. Can not archive a contact that is bounced, pending or archived", nil)
		return
	}
	l.members[i].status = stArchived
	l.touch(i, s.nowUnix())
	if l.notify != nil {
		// An archive is delivered as an unsubscribe with action "delete"
		// (UNCONFIRMED, api-wire-facts §5.3).
		l.notify("delete", i, "")
	}
	noContent(w)
}

func (s *Server) deletePermanent(w http.ResponseWriter, r *http.Request, l *list, key string) {
	// The spec says this path takes the MD5 hash only.
	if len(key) != 32 || strings.Contains(key, "@") {
		notFound(w)
		return
	}
	i, ok := l.find(key)
	if !ok || l.members[i].status == stForgotten {
		notFound(w)
		return
	}
	m := &l.members[i]
	m.status = stForgotten
	if m.extra != 0 {
		l.extras[m.extra-1] = extra{}
	}
	l.touch(i, s.nowUnix())
	noContent(w)
}

// batchBody is POST /lists/{list_id}.
type batchBody struct {
	Members        []memberBody `json:"members"`
	UpdateExisting bool         `json:"update_existing"`
	SyncTags       bool         `json:"sync_tags"`
}

// batchError is one entry of the batch answer's errors array.
type batchError struct {
	EmailAddress string `json:"email_address"`
	Error        string `json:"error"`
	ErrorCode    string `json:"error_code"`
	Field        string `json:"field"`
	FieldMessage string `json:"field_message"`
}

// batch is the batch subscribe/unsubscribe call: per-member failures are
// reported in errors[] with HTTP 200 and the rest of the batch stands.
func (s *Server) batch(w http.ResponseWriter, r *http.Request, l *list) {
	var b batchBody
	if p := readJSON(r, &b); p != nil {
		p.write(w)
		return
	}
	if b.Members == nil {
		invalidResource(fieldError{Field: "members", Message: "This value should not be blank."}).write(w)
		return
	}
	if len(b.Members) > 500 {
		// UNCONFIRMED: the exact answer over the documented 500.
		badRequest("Invalid Resource", "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
			fieldError{Field: "members", Message: "This collection should contain 500 elements or less."}).write(w)
		return
	}
	skipDup := r.URL.Query().Get("skip_duplicate_check") == "true"
	now := s.nowUnix()
	newMembers, updated, errs := []any{}, []any{}, []batchError{}
	seen := map[[16]byte]bool{}
	fail := func(email, code, msg, field string) {
		errs = append(errs, batchError{EmailAddress: email, Error: msg, ErrorCode: code, Field: field, FieldMessage: msg})
	}
	for _, mb := range b.Members {
		email := ""
		if mb.EmailAddress != nil {
			email = strings.TrimSpace(*mb.EmailAddress)
		}
		if !validEmail(email) {
			fail(email, "ERROR_GENERIC", email+" looks fake or invalid, please enter a real email address.", "email_address")
			continue
		}
		h := hashOf(email)
		if seen[h] {
			if !skipDup {
				// UNCONFIRMED: the text for a duplicate inside one request.
				fail(email, "ERROR_GENERIC", email+" appears more than once in this request.", "email_address")
			}
			continue
		}
		seen[h] = true
		i, exists := l.byHash[h]
		if exists && l.members[i].status == stForgotten {
			p := forgottenProblem(email)
			fail(email, "ERROR_GENERIC", p.detail, "")
			continue
		}
		if !exists {
			target := mb.StatusIfNew
			if target == nil {
				target = mb.Status
			}
			if target == nil {
				fail(email, "ERROR_GENERIC", "Status is required.", "status")
				continue
			}
			st, p := writableStatus("status", *target, false)
			if p != nil {
				fail(email, "ERROR_GENERIC", p.errs[0].Message, "status")
				continue
			}
			i = l.create(email, st, now)
			l.setMerge(i, mb.MergeFields)
			newMembers = append(newMembers, l.memberJSON(i, r, nil))
			continue
		}
		if !b.UpdateExisting && l.members[i].status != stArchived {
			// UNCONFIRMED (inferred from the error_code enum): without
			// update_existing an existing member is reported, not changed.
			fail(email, "ERROR_CONTACT_EXISTS", email+" is already a list member.", "email_address")
			continue
		}
		changed := false
		if mb.Status != nil {
			st, p := writableStatus("status", *mb.Status, false)
			if p != nil {
				fail(email, "ERROR_GENERIC", p.errs[0].Message, "status")
				continue
			}
			c, p := l.transition(i, st, now)
			if p != nil {
				fail(email, "ERROR_GENERIC", p.detail, "")
				continue
			}
			changed = c
		}
		if l.setMerge(i, mb.MergeFields) {
			changed = true
		}
		if changed {
			l.touch(i, now)
		}
		updated = append(updated, l.memberJSON(i, r, nil))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"new_members": newMembers, "updated_members": updated, "errors": errs,
		"total_created": len(newMembers), "total_updated": len(updated), "error_count": len(errs),
		"_links": []any{map[string]any{"rel": "self", "href": base(r) + "/lists/" + l.id, "method": "GET"}},
	}, r)
}

package mailchimp

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// isoSecond is how Mailchimp writes timestamps in queries and answers.
const isoSecond = "2006-01-02T15:04:05+00:00"

// cursor is the state between ChangedMembers pages, stored opaquely.
//
// Members are returned in the order of the key (last_changed second,
// timestamp_opt second, id), and the cursor is a position in that order:
// every member changed at or before second S has been returned, and of
// those changed in second S+1, every one up to (T, I). Neither offsets nor
// an anchor are kept, because neither survives the two things Mailchimp
// allows: members changing while we page (a change moves a member to the
// present second and shifts everyone behind it one place), and members
// with the same last_changed coming back in a different order on every
// request (the API documents no order among equal values, and a bulk
// unsubscribe puts thousands of members in one second).
//
// A position is safe because each piece of the key comes from an order the
// API does promise or from a read that is complete:
//
//   - Across seconds, the answer is sorted by last_changed, so in a page
//     read with since_last_changed=S, every second before the page's last
//     one is complete in it, whatever the order inside each second.
//   - Inside one second L, a read with since_last_changed=L-1 and
//     before_last_changed=L+1 (both strict, at second granularity) and
//     count 1000 returns the whole second when it holds at most 1000
//     members; it is sorted locally, so the order of the answer does not
//     matter.
//   - A second of more than 1000 members is split by opt-in time: read with
//     sort_field=timestamp_opt and since_timestamp_opt, every opt-in second
//     before the answer's last one is complete in it. Members without an
//     opt-in time ("", which the filters cannot select) are counted first
//     (the second's total_items against its total with
//     since_timestamp_opt=1970-01-01) and read as described below.
//   - When even that cannot split (1000 or more members sharing both
//     seconds, members without an opt-in time, or an answer not in the
//     promised order), the group is read whole by offset, pass after pass,
//     until the ids gathered reach its total_items: completeness is then
//     proved by the count, not assumed from an order. This costs one pass
//     per page (several when the order changes between requests), and
//     gives up with an error after maxPasses.
//
// A member that changes while we page moves to the present second, which
// is never before the second being read, so it moves ahead of the cursor
// and is returned (perhaps twice), never skipped. The one exception is a
// change made while the second being read is itself the present one: the
// member stays in that second with the same opt-in time and id (an edit),
// which cannot move it behind the cursor, or with a new id (an address
// change) or as a member new to the status, which can. Such a change
// happened after this poll began, so the next poll, whose watermark is no
// later than this poll's start, reads it. Duplicates are possible and
// harmless (an opt-out written twice is written once); skips are not.
type cursor struct {
	// W is the caller's watermark (unix seconds), kept so that
	// unsubscribed_since stays the same on every page of one poll.
	W int64 `json:"w"`
	// S is the second up to which everything was returned (the
	// since_last_changed of the next read); 0 means none.
	S int64 `json:"s"`
	// T and I are the position inside second S+1: the timestamp_opt (unix
	// seconds, 0 for "") and id of the last member returned from it. I ""
	// means none yet; I groupDone means all of opt-in second T.
	T int64  `json:"t,omitempty"`
	I string `json:"i,omitempty"`
	// B records that second S+1 held more than one read's worth, so the
	// next page skips the whole-second read.
	B bool `json:"b,omitempty"`
	// U, when set, ends the read before second U (before_last_changed):
	// the cursor is one part of a split read (see SplitChanges).
	U int64 `json:"u,omitempty"`
	// N is about how many members the read has left, as the page's read
	// counted them (total_items): a hint for SplitChanges, 0 when unknown.
	N int `json:"n,omitempty"`
}

// groupDone as a cursor's I sorts after every id (ids are lower-case hex).
const groupDone = "~"

// maxPasses bounds the offset passes over one group that cannot be split.
const maxPasses = 40

// The members Mailchimp returns in one read, at most.
const maxCount = 1000

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor reads a cursor. One issued before cursors held a position
// (it held an offset "o" and an anchor "a") decodes to the start of its
// boundary second: that second is read again, which can only repeat.
func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.S < 0 || c.T < 0 {
		return cursor{}, fmt.Errorf("mailchimp: ChangesRequest.Cursor is not a cursor this connector issued")
	}
	return c, nil
}

type memberDoc struct {
	ID           string `json:"id"`
	EmailAddress string `json:"email_address"`
	Status       string `json:"status"`
	LastChanged  string `json:"last_changed"`
	TimestampOpt string `json:"timestamp_opt"`
	TimestampSig string `json:"timestamp_signup"`
	ContactID    string `json:"contact_id"`
	// MergeFields is read only when ChangesRequest.MergeFields asks.
	MergeFields map[string]any `json:"merge_fields"`
}

type membersDoc struct {
	Members    []memberDoc `json:"members"`
	TotalItems int         `json:"total_items"`
}

func parseTS(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// keyed is a member with its position key.
type keyed struct {
	doc      memberDoc
	sec, opt int64 // last_changed and timestamp_opt, unix seconds (opt 0 for "")
}

func (k keyed) after(t int64, id string) bool {
	return k.opt > t || k.opt == t && k.doc.ID > id
}

func cmpKeyed(a, b keyed) int {
	if a.sec != b.sec {
		return cmp.Compare(a.sec, b.sec)
	}
	if a.opt != b.opt {
		return cmp.Compare(a.opt, b.opt)
	}
	return strings.Compare(a.doc.ID, b.doc.ID)
}

func keyOf(m memberDoc) (keyed, error) {
	lc, ok := parseTS(m.LastChanged)
	if !ok || m.ID == "" {
		return keyed{}, fmt.Errorf("mailchimp: member %s has last_changed %q, not an ISO 8601 time", m.ID, m.LastChanged)
	}
	k := keyed{doc: m, sec: lc.Unix()}
	if m.TimestampOpt != "" {
		opt, ok := parseTS(m.TimestampOpt)
		if !ok {
			return keyed{}, fmt.Errorf("mailchimp: member %s has timestamp_opt %q, not an ISO 8601 time", m.ID, m.TimestampOpt)
		}
		// One at or before 1970-01-01T00:00:00 is no opt-in time for the
		// since_timestamp_opt filter either.
		k.opt = max(opt.Unix(), 0)
	}
	return k, nil
}

func (k keyed) member() connectors.Member {
	m := connectors.Member{
		Email: k.doc.EmailAddress, Status: connectors.MemberStatus(k.doc.Status),
		LastChanged: time.Unix(k.sec, 0).UTC(), ContactID: k.doc.ContactID,
	}
	if k.doc.MergeFields != nil {
		m.Fields = make(map[string]string, len(k.doc.MergeFields))
		for tag, v := range k.doc.MergeFields {
			m.Fields[tag] = mergeText(v)
		}
	}
	return m
}

// mergeText is a merge field's value as text: a string as it is, an
// address or another structure as its JSON, nothing as "".
func mergeText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// changes reads one ChangedMembers poll.
type changes struct {
	c      *Client
	path   string
	base   url.Values // status and unsubscribed_since, on every read
	fields string     // the fields asked of every read of members
}

const memberFields = "members.id,members.email_address,members.status,members.last_changed,members.timestamp_opt,members.contact_id,total_items"

// withMergeFields adds the merge fields to memberFields.
const withMergeFields = memberFields + ",members.merge_fields"

// read sends one GET of the members with base, extra, count and offset.
func (ch *changes) read(ctx context.Context, extra url.Values, count, offset int, fields string) (membersDoc, []keyed, error) {
	q := url.Values{}
	for k, v := range ch.base {
		q[k] = v
	}
	for k, v := range extra {
		q[k] = v
	}
	q.Set("count", strconv.Itoa(count))
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	q.Set("fields", fields)
	var ans struct {
		membersDoc
		TotalItems *int `json:"total_items"`
	}
	if _, err := ch.c.do(ctx, http.MethodGet, ch.path, q, nil, &ans); err != nil {
		return membersDoc{}, nil, err
	}
	// A members answer always has total_items, and "members" ([] when
	// empty) when asked for it. One without them (null, {}, an error
	// answered 2xx) must never read as "no members" or as a total of 0,
	// which would end a read as if none were left (or take a second as
	// read whole) and lose the unsubscribes it did not return.
	switch {
	case ans.TotalItems == nil:
		return membersDoc{}, nil, fmt.Errorf("mailchimp: GET %s: a members answer without total_items", redactPath(ch.path))
	case ans.Members == nil && strings.Contains(fields, "members."):
		return membersDoc{}, nil, fmt.Errorf("mailchimp: GET %s: a members answer without a members array", redactPath(ch.path))
	}
	doc := ans.membersDoc
	doc.TotalItems = *ans.TotalItems
	if len(doc.Members) > count {
		// More than asked for: a page the cursor cannot account for.
		return membersDoc{}, nil, fmt.Errorf("mailchimp: GET %s: %d members answered where at most %d were asked", redactPath(ch.path), len(doc.Members), count)
	}
	ks := make([]keyed, len(doc.Members))
	for i, m := range doc.Members {
		k, err := keyOf(m)
		if err != nil {
			return membersDoc{}, nil, err
		}
		ks[i] = k
	}
	return doc, ks, nil
}

// total is the total_items of base plus extra.
func (ch *changes) total(ctx context.Context, extra url.Values) (int, error) {
	doc, _, err := ch.read(ctx, extra, 1, 0, "total_items")
	return doc.TotalItems, err
}

func ts(sec int64) string { return time.Unix(sec, 0).UTC().Format(isoSecond) }

// second selects the members changed in second l.
func second(l int64) url.Values {
	return url.Values{"since_last_changed": {ts(l - 1)}, "before_last_changed": {ts(l + 1)}}
}

// readAll reads every member of second l matching extra, by offset, pass
// after pass until the distinct ids reach total_items, so that the result
// is complete whatever order the reads come in.
func (ch *changes) readAll(ctx context.Context, l int64, extra url.Values) ([]keyed, error) {
	q := second(l)
	for k, v := range extra {
		q[k] = v
	}
	seen := map[string]keyed{}
	total := 0
	for range maxPasses {
		for off := 0; ; off += maxCount {
			doc, ks, err := ch.read(ctx, q, maxCount, off, ch.fields)
			if err != nil {
				return nil, err
			}
			for _, k := range ks {
				if k.sec != l {
					return nil, fmt.Errorf("mailchimp: a read of the members changed at %s answered one changed at %s", ts(l), ts(k.sec))
				}
				seen[k.doc.ID] = k
			}
			total = doc.TotalItems
			if len(seen) >= total || len(ks) < maxCount || off+maxCount >= total {
				break
			}
		}
		if len(seen) >= total {
			out := slices.Collect(maps.Values(seen))
			slices.SortFunc(out, cmpKeyed)
			return out, nil
		}
		ch.c.log.DebugContext(ctx, "mailchimp: members changed in one second came back in a new order; reading them again", "second", ts(l), "have", len(seen), "total", total)
	}
	return nil, fmt.Errorf("mailchimp: could not read all %d members changed at %s in %d passes (have %d)", total, ts(l), maxPasses, len(seen))
}

// take appends to page the members of sorted (ascending keys) after the
// cursor's position in second cur.S+1, up to need, and moves the position.
// It reports whether none is left after those taken.
func take(page *[]connectors.Member, cur *cursor, sorted []keyed, need int) (rest bool) {
	for _, k := range sorted {
		if !k.after(cur.T, cur.I) {
			continue
		}
		if need == 0 {
			return true
		}
		*page = append(*page, k.member())
		cur.T, cur.I = k.opt, k.doc.ID
		need--
	}
	return false
}

// ChangedMembers pages through the members in req.Status whose
// last_changed is after req.Since, oldest change first. See cursor for how
// paging stays complete while the audience changes and whatever order
// Mailchimp gives members changed in the same second.
//
// The first query starts one second before the watermark: Mailchimp keeps
// whole seconds and since_last_changed is strictly after, so a member that
// changed in the watermark's own second, after the previous poll read it,
// would otherwise be missed. Members changed in that second come back once
// more instead.
//
// last_changed also moves when only a field changes, so a poll by
// last_changed would report an already-known unsubscribe again. For
// status=unsubscribed the query also sends unsubscribed_since, which
// filters on when the member unsubscribed rather than on when anything
// changed. UNCONFIRMED: the reference gives its format only as "a specific
// date"; a real client passes "YYYY-MM-DD" and others an ISO 8601 time. We
// send a date, one day before the watermark's UTC day, so that neither
// date-only parsing nor an account time zone behind UTC can drop an
// unsubscribe made after the watermark. The residual case: a member who
// unsubscribed up to two days before the watermark and then had a field
// edited is reported again (a harmless duplicate). Cleaned members have no
// such filter in the API: a cleaned member whose fields are edited is
// reported again on every poll that sees the edit.
//
// A page may hold fewer than req.PageSize members without being the last:
// only an empty Next ends the poll.
func (c *Client) ChangedMembers(ctx context.Context, req connectors.ChangesRequest) (connectors.MemberPage, error) {
	if req.Audience == "" {
		return connectors.MemberPage{}, errors.New("mailchimp: ChangesRequest.Audience is required")
	}
	switch req.Status {
	case connectors.StatusUnsubscribed, connectors.StatusCleaned, connectors.StatusSubscribed,
		connectors.StatusPending, connectors.StatusTransactional, connectors.StatusArchived:
	default:
		return connectors.MemberPage{}, fmt.Errorf("mailchimp: ChangesRequest.Status %q is not a Mailchimp status", req.Status)
	}
	size := req.PageSize
	if size < 0 || size > connectors.MaxPageSize {
		return connectors.MemberPage{}, fmt.Errorf("mailchimp: ChangesRequest.PageSize %d is outside 0..%d", size, connectors.MaxPageSize)
	}
	if size == 0 {
		size = connectors.MaxPageSize
	}
	cur, err := startCursor(req)
	if err != nil {
		return connectors.MemberPage{}, err
	}
	ch := c.changesOf(req, cur)

	page := connectors.MemberPage{Members: make([]connectors.Member, 0, min(size, 64))}
	left := 0 // what the read between seconds counted from the page's start
	next := func() (connectors.MemberPage, error) {
		cur.N = max(left-len(page.Members), 0)
		page.Next = cur.encode()
		return page, nil
	}
	if cur.I != "" || cur.B {
		// Inside a second: finish it (or fill the page from it) first.
		rest, err := ch.inSecond(ctx, &page.Members, &cur, size)
		switch {
		case err != nil:
			return connectors.MemberPage{}, err
		case rest:
			return next()
		}
		cur = cursor{W: cur.W, U: cur.U, S: cur.S + 1}
		if len(page.Members) > 0 {
			return next()
		}
	}
	// Between seconds: everything up to S was returned.
	q := after(cur)
	count := min(size+1, maxCount)
	doc, ks, err := ch.read(ctx, q, count, 0, ch.fields)
	if err != nil {
		return connectors.MemberPage{}, err
	}
	left = doc.TotalItems
	for i, k := range ks {
		if cur.S != 0 && k.sec <= cur.S || i > 0 && k.sec < ks[i-1].sec {
			return connectors.MemberPage{}, fmt.Errorf("mailchimp: the members answer is not in last_changed order after %s", ts(cur.S))
		}
	}
	full := len(ks) == count
	complete := ks
	if full {
		// The members of the last second may go on past this read.
		last := ks[len(ks)-1].sec
		complete = ks[:slices.IndexFunc(ks, func(k keyed) bool { return k.sec == last })]
	}
	slices.SortFunc(complete, cmpKeyed)
	for _, k := range complete {
		if len(page.Members) == size {
			return next()
		}
		page.Members = append(page.Members, k.member())
		cur = cursor{W: cur.W, U: cur.U, S: k.sec - 1, T: k.opt, I: k.doc.ID}
	}
	switch {
	case !full:
		return page, nil // all read
	case len(page.Members) > 0:
		// The seconds read are done; the next page starts at the first
		// second not complete in this read.
		cur = cursor{W: cur.W, U: cur.U, S: ks[len(ks)-1].sec - 1}
		return next()
	}
	// One second filled the whole read: read inside it.
	cur = cursor{W: cur.W, U: cur.U, S: ks[0].sec - 1}
	rest, err := ch.inSecond(ctx, &page.Members, &cur, size)
	if err != nil {
		return connectors.MemberPage{}, err
	}
	if !rest {
		cur = cursor{W: cur.W, U: cur.U, S: cur.S + 1}
	}
	return next()
}

// changesOf is the reads of one ChangedMembers poll of req from cur.
func (c *Client) changesOf(req connectors.ChangesRequest, cur cursor) *changes {
	ch := &changes{c: c, path: "/lists/" + url.PathEscape(req.Audience) + "/members", base: url.Values{"status": {string(req.Status)}}, fields: memberFields}
	if req.MergeFields {
		ch.fields = withMergeFields
	}
	if req.Status == connectors.StatusUnsubscribed && cur.W != 0 {
		day := time.Unix(cur.W, 0).UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
		ch.base.Set("unsubscribed_since", day.Format("2006-01-02"))
	}
	return ch
}

// after selects, in last_changed order, the members of the seconds after
// cur.S (and before cur.U, when set).
func after(cur cursor) url.Values {
	q := url.Values{"sort_field": {"last_changed"}, "sort_dir": {"ASC"}}
	if cur.S != 0 {
		q.Set("since_last_changed", ts(cur.S))
	}
	if cur.U != 0 {
		q.Set("before_last_changed", ts(cur.U))
	}
	return q
}

// startCursor is where req reads from: its cursor, or for a read from
// the start the second before the watermark's (see ChangedMembers).
func startCursor(req connectors.ChangesRequest) (cursor, error) {
	if req.Cursor != "" {
		return decodeCursor(req.Cursor)
	}
	var cur cursor
	if !req.Since.IsZero() {
		cur.W = req.Since.Unix()
		cur.S = cur.W - 1
	}
	return cur, nil
}

// SplitChanges splits the rest of a ChangedMembers read into at most
// parts reads of about as many members each, read at once: req.Cursor
// must be a page's Next between two seconds, or empty for the whole read
// (nil otherwise, or when the split's two round trips would not shorten
// the read). Every part but the last ends before the second the next one
// starts at; the last goes on to the present, as the read would have. A
// whole read that finds no member is split into no part (an empty,
// non-nil answer).
//
// The bounds are the last_changed seconds of the members at even offsets
// of the rest (one count=1 read each, at once, after a read of its total
// when the cursor does not hold the count its page read). Offsets move
// while members change, which only makes the parts less even: each part
// is a keyset read of its seconds, safe as ChangedMembers is (see
// cursor), and a member that changes while the parts are read moves to
// the present second, which the last part reads or, once it has ended,
// the next poll does.
func (c *Client) SplitChanges(ctx context.Context, req connectors.ChangesRequest, parts int) ([]string, error) {
	if parts < 2 {
		return nil, nil
	}
	cur, err := startCursor(req)
	if err != nil {
		return nil, err
	}
	if cur.I != "" || cur.B || cur.U != 0 {
		return nil, nil // inside a second, or a part already
	}
	size := req.PageSize
	if size <= 0 || size > connectors.MaxPageSize {
		size = connectors.MaxPageSize
	}
	ch := c.changesOf(req, cur)
	q := after(cur)
	n := cur.N // as the page's read counted it, or read here
	if n == 0 {
		if n, err = ch.total(ctx, q); err != nil {
			return nil, err
		}
	}
	// The split costs a round trip for the bounds (and one for the total
	// when the cursor holds none): worth it only when the parts' chains
	// are shorter by more.
	trips := 1
	if cur.N == 0 {
		trips = 2
	}
	if n == 0 && req.Cursor == "" {
		return []string{}, nil
	}
	pages := (n + size - 1) / size
	parts = min(parts, n/size)
	if parts < 2 || trips+(pages+parts-1)/parts >= pages {
		return nil, nil
	}
	bounds := make([]int64, parts-1)
	err = connectors.ForEach(ctx, c.workers, len(bounds), func(ctx context.Context, i int) error {
		_, ks, err := ch.read(ctx, q, 1, n*(i+1)/parts, memberFields)
		if err == nil && len(ks) == 1 {
			bounds[i] = ks[0].sec
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []string
	from := cur.S // the part reads the seconds after from
	for _, b := range bounds {
		if b <= from+1 {
			continue // an empty part (a second shared with the last bound, or none read)
		}
		out = append(out, cursor{W: cur.W, S: from, U: b}.encode())
		from = b - 1
	}
	if len(out) == 0 {
		return nil, nil
	}
	return append(out, cursor{W: cur.W, S: from}.encode()), nil
}

// inSecond appends up to need members of second cur.S+1 after the
// cursor's position, in position order, and moves the position. It
// reports whether members of that second are left after those taken; when
// it returns false the second is done.
func (ch *changes) inSecond(ctx context.Context, page *[]connectors.Member, cur *cursor, need int) (rest bool, err error) {
	l := cur.S + 1
	total := -1
	if !cur.B {
		doc, ks, err := ch.read(ctx, second(l), maxCount, 0, ch.fields)
		if err != nil {
			return false, err
		}
		if len(ks) >= doc.TotalItems {
			// The whole second in one answer: its order does not matter.
			for _, k := range ks {
				if k.sec != l {
					return false, fmt.Errorf("mailchimp: a read of the members changed at %s answered one changed at %s", ts(l), ts(k.sec))
				}
			}
			slices.SortFunc(ks, cmpKeyed)
			return take(page, cur, ks, need), nil
		}
		cur.B, total = true, doc.TotalItems
	}
	return ch.bigSecond(ctx, page, cur, need, total)
}

// bigSecond is inSecond for a second of more than maxCount members: it
// walks the second by opt-in time (see cursor). total is the second's
// total_items when known, else -1.
func (ch *changes) bigSecond(ctx context.Context, page *[]connectors.Member, cur *cursor, need, total int) (bool, error) {
	l := cur.S + 1
	start := len(*page)
	took := func() bool { return len(*page) > start }
	whole := func() (bool, error) {
		// The order promised did not hold: read the rest of the second
		// whole, completeness proved by the count.
		all, err := ch.readAll(ctx, l, nil)
		if err != nil {
			return false, err
		}
		return take(page, cur, all, need-(len(*page)-start)), nil
	}
	if cur.T == 0 && cur.I != groupDone {
		// Members without an opt-in time come first and no opt-in filter
		// selects them: are there any?
		if total < 0 {
			n, err := ch.total(ctx, second(l))
			if err != nil {
				return false, err
			}
			total = n
		}
		q := second(l)
		q.Set("since_timestamp_opt", ts(0))
		withOpt, err := ch.total(ctx, q)
		if err != nil {
			return false, err
		}
		if total > withOpt {
			all, err := ch.readAll(ctx, l, nil)
			if err != nil {
				return false, err
			}
			n := 0
			for n < len(all) && all[n].opt == 0 {
				n++
			}
			if take(page, cur, all[:n], need) {
				return true, nil
			}
		}
		cur.T, cur.I = 0, groupDone
		if took() {
			return true, nil // the caller comes back for the rest
		}
	}
	count := min(need+1, maxCount)
	for {
		q := second(l)
		q.Set("sort_field", "timestamp_opt")
		q.Set("sort_dir", "ASC")
		if cur.I == groupDone {
			q.Set("since_timestamp_opt", ts(cur.T))
		} else {
			q.Set("since_timestamp_opt", ts(cur.T-1))
		}
		_, ks, err := ch.read(ctx, q, count, 0, ch.fields)
		if err != nil {
			return false, err
		}
		for i, k := range ks {
			if k.sec != l || k.opt == 0 || i > 0 && k.opt < ks[i-1].opt {
				return whole()
			}
		}
		full := len(ks) == count
		complete := ks
		if full {
			last := ks[len(ks)-1].opt
			complete = ks[:slices.IndexFunc(ks, func(k keyed) bool { return k.opt == last })]
		}
		slices.SortFunc(complete, cmpKeyed)
		rest := take(page, cur, complete, need)
		switch {
		case rest:
			return true, nil
		case !full:
			return false, nil // the second is done
		case took():
			// The opt-in seconds read are done; come back for the rest.
			cur.I = groupDone
			return true, nil
		case count < maxCount:
			count = maxCount // one opt-in second filled a small read
			continue
		}
		// One opt-in second g holds too many to be complete in a read:
		// read it whole by offset.
		g := ks[len(ks)-1].opt
		gq := url.Values{"since_timestamp_opt": {ts(g - 1)}, "before_timestamp_opt": {ts(g + 1)}}
		group, err := ch.readAll(ctx, l, gq)
		if err != nil {
			return false, err
		}
		if g > cur.T {
			cur.T, cur.I = g, ""
		}
		if take(page, cur, group, need) {
			return true, nil
		}
		cur.T, cur.I = g, groupDone
		if took() {
			return true, nil
		}
	}
}

// batchDoc is the answer of POST /lists/{list_id}.
// batchMember is what a batch answer's member objects are read for: each
// carries the whole member, merge fields and links included, and
// decoding only these two fields spares the client an allocation per
// field of 500 members a call.
type batchMember struct {
	EmailAddress string `json:"email_address"`
	Status       string `json:"status"`
}

type batchDoc struct {
	NewMembers     []batchMember `json:"new_members"`
	UpdatedMembers []batchMember `json:"updated_members"`
	Errors         []struct {
		EmailAddress string `json:"email_address"`
		Error        string `json:"error"`
		ErrorCode    string `json:"error_code"`
		Field        string `json:"field"`
		FieldMessage string `json:"field_message"`
	} `json:"errors"`
}

// Unsubscribe sets each address to unsubscribed with one batch call
// (POST /lists/{list_id}, update_existing true); addresses not in the
// audience are added as unsubscribed, and Added counts those the answer
// lists in new_members. Per-member refusals come back in the
// answer's errors[] and become Failures; a refusal because the member is
// cleaned or permanently deleted is a compliance answer. An address the
// answer does not mention at all is a retryable Failure, so an opt-out is
// never taken as written without Mailchimp saying so.
func (c *Client) Unsubscribe(ctx context.Context, audience string, emails []string) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	given := make([]string, len(emails))
	for i, e := range emails {
		given[i] = strings.TrimSpace(e)
	}
	err := c.batchSubscribe(ctx, "Unsubscribe", audience, given, true, func(int, string) map[string]any {
		return map[string]any{"status": "unsubscribed"}
	}, &res, func(e string, m batchMember, isNew bool) {
		if isNew {
			res.Added++
		}
		if m.Status == string(connectors.StatusUnsubscribed) {
			res.Written++
			return
		}
		// Listed as updated but not unsubscribed (a cleaned member
		// stays cleaned): final, nothing to retry.
		res.Failed = append(res.Failed, connectors.Failure{
			Email: e, Code: "status " + m.Status, Compliance: connectors.MemberStatus(m.Status).Blocked(),
			Message: "member is " + m.Status + " after the unsubscribe",
		})
	}, func(e, code, msg string) {
		res.Failed = append(res.Failed, batchFailure(e, code, msg))
	})
	return res, err
}

// batchSubscribe sends one batch subscribe call (POST /lists/{list_id})
// for the addresses given, each once, its member item made by item (the
// address is added to it); an address that is none is a Failure and not
// sent. Each address the answer lists as a new or updated member goes to
// took, each in its errors[] to refused, and one it does not mention at
// all is a retryable Failure: nothing is taken as written without
// Mailchimp saying so.
func (c *Client) batchSubscribe(ctx context.Context, op, audience string, given []string, update bool, item func(i int, email string) map[string]any,
	res *connectors.BatchResult, took func(given string, m batchMember, isNew bool), refused func(given, code, msg string)) error {
	if audience == "" {
		return fmt.Errorf("mailchimp: %s: audience is required", op)
	}
	if len(given) > maxBatch {
		return fmt.Errorf("mailchimp: %s: %d addresses, more than MaxBatch %d", op, len(given), maxBatch)
	}
	body := struct {
		Members []map[string]any `json:"members"`
		Update  bool             `json:"update_existing"`
	}{Update: update}
	pending := map[string]string{} // lower-cased address -> address as given
	for i, g := range given {
		e := strings.TrimSpace(g)
		if !plausibleEmail(e) {
			res.Failed = append(res.Failed, invalidAddress(g))
			continue
		}
		k := strings.ToLower(e)
		if _, dup := pending[k]; dup {
			continue
		}
		pending[k] = g
		m := item(i, e)
		m["email_address"] = e
		body.Members = append(body.Members, m)
	}
	if len(body.Members) == 0 {
		return nil
	}
	var doc batchDoc
	if _, err := c.do(ctx, http.MethodPost, "/lists/"+url.PathEscape(audience), nil, body, &doc); err != nil {
		return err
	}
	for n, m := range append(doc.NewMembers, doc.UpdatedMembers...) {
		k := strings.ToLower(m.EmailAddress)
		if g, ok := pending[k]; ok {
			delete(pending, k)
			took(g, m, n < len(doc.NewMembers))
		}
	}
	for _, be := range doc.Errors {
		k := strings.ToLower(strings.TrimSpace(be.EmailAddress))
		if g, ok := pending[k]; ok {
			delete(pending, k)
			refused(g, be.ErrorCode, be.Error)
		}
	}
	for _, g := range pending {
		res.Failed = append(res.Failed, connectors.Failure{
			Email: g, Code: "missing_from_answer", Retryable: true,
			Message: "the batch answer did not mention this address",
		})
	}
	return nil
}

// checkStatusIfNew refuses a status a new member cannot be given.
func checkStatusIfNew(op, name string, st connectors.MemberStatus) error {
	switch st {
	case connectors.StatusSubscribed, connectors.StatusUnsubscribed, connectors.StatusPending, connectors.StatusTransactional:
		return nil
	}
	return fmt.Errorf("mailchimp: %s: %s %q is not one of subscribed, unsubscribed, pending, transactional", op, name, st)
}

// batchFailure turns an errors[] entry of the batch answer into a Failure.
// The entry carries only a generic error_code, so the compliance refusals
// are recognized by their message, which is the detail of the single-member
// answers "Member In Compliance State" and "Forgotten Email Not Subscribed";
// Code is then that title.
func batchFailure(email, code, msg string) connectors.Failure {
	f := connectors.Failure{Email: email, Code: code, Message: httpx.Redact(msg)}
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "compliance state"):
		f.Code, f.Compliance = titleCompliance, true
	case strings.Contains(low, "permanently deleted"), strings.Contains(low, "forgotten"):
		f.Code, f.Compliance = titleForgotten, true
	case strings.Contains(low, "signed up to a lot of lists very recently"):
		// A per-address throttle (wire reference 1.8): it clears with time.
		f.Retryable = true
	}
	return f
}

func plausibleEmail(e string) bool {
	at := strings.IndexByte(e, '@')
	return at > 0 && at < len(e)-1 && !strings.ContainsAny(e, " \t\r\n")
}

func invalidAddress(e string) connectors.Failure {
	return connectors.Failure{Email: e, Code: "invalid_email", Message: "not an email address; not sent"}
}

// failureFrom turns a per-member API error into a Failure when it concerns
// that member only (a compliance refusal, an invalid member); other errors
// (credentials, audience missing, throttling, outage) concern the whole
// call and are returned instead.
func failureFrom(email string, err error) (connectors.Failure, bool) {
	var ae *connectors.APIError
	if !errors.As(err, &ae) {
		return connectors.Failure{}, false
	}
	switch {
	case errors.Is(ae, connectors.ErrCompliance):
		return connectors.Failure{Email: email, Code: ae.Code, Message: ae.Detail, Compliance: true}, true
	case errors.Is(ae, connectors.ErrInvalid):
		return connectors.Failure{Email: email, Code: ae.Code, Message: ae.Detail}, true
	}
	return connectors.Failure{}, false
}

// UpsertMembers writes each member's fields with PUT
// /lists/{list_id}/members/{subscriber_hash}, sending status_if_new and
// never status: Mailchimp applies status_if_new only when it creates the
// member, so an existing member's subscription is never touched.
//
// Mailchimp's answer does not say whether the PUT created the member.
// Added counts the members whose answer shows a creation by this call:
// their opt-in (or, for pending, sign-up) time equals last_changed and is
// no older than a few seconds before the answer's Date. An existing member
// that was itself created in those seconds and is written again unchanged
// would be counted too; Added is a report figure, nothing depends on it.
//
// A refusal of one member (compliance state, invalid address) is a Failure
// and the rest stand. An error that concerns the whole call (credentials,
// audience missing, throttling left after the retries, an outage) stops it
// and is returned; the writes already made stand, and calling again is
// safe because each PUT is idempotent.
func (c *Client) UpsertMembers(ctx context.Context, audience string, members []connectors.MemberFields, statusIfNew connectors.MemberStatus) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if audience == "" {
		return res, errors.New("mailchimp: UpsertMembers: audience is required")
	}
	if len(members) > maxBatch {
		return res, fmt.Errorf("mailchimp: UpsertMembers: %d members, more than MaxBatch %d", len(members), maxBatch)
	}
	if err := checkStatusIfNew("UpsertMembers", "statusIfNew", statusIfNew); err != nil {
		return res, err
	}
	type outcome struct {
		written, added bool
		failure        *connectors.Failure
	}
	outs := make([]outcome, len(members))
	err := connectors.ForEach(ctx, c.workers, len(members), func(ctx context.Context, i int) error {
		m := members[i]
		email := strings.TrimSpace(m.Email)
		if !plausibleEmail(email) {
			f := invalidAddress(m.Email)
			outs[i].failure = &f
			return nil
		}
		merge := make(map[string]string, len(m.Fields))
		for k, v := range m.Fields {
			merge[k] = v
		}
		body := map[string]any{"email_address": email, "status_if_new": string(statusIfNew), "merge_fields": merge}
		var doc memberDoc
		hdr, err := c.do(ctx, http.MethodPut, "/lists/"+url.PathEscape(audience)+"/members/"+connectors.AddressHash(email), nil, body, &doc)
		if err != nil {
			if f, ok := failureFrom(m.Email, err); ok {
				outs[i].failure = &f
				return nil
			}
			return err
		}
		outs[i].written = true
		outs[i].added = created(doc, hdr)
		return nil
	})
	if err != nil {
		return connectors.BatchResult{}, err
	}
	for _, o := range outs {
		switch {
		case o.failure != nil:
			res.Failed = append(res.Failed, *o.failure)
		case o.written:
			res.Written++
			if o.added {
				res.Added++
			}
		}
	}
	return res, nil
}

// AddMembers adds new members with one batch call (POST /lists/{list_id}
// with update_existing false), each with status and its merge fields.
//
// The batch keeps field sync's rules only for members not in the
// audience: with update_existing false, Mailchimp reports an existing
// member in errors[] as ERROR_CONTACT_EXISTS and leaves it unchanged, and
// those come back in Existing. With update_existing true the batch would
// set each existing member's status (the call has no status_if_new the
// reference confirms), which could re-subscribe someone who unsubscribed,
// so existing members are written one by one (UpsertMembers,
// UpdateMembers) and never here. Whether the batch counts an archived
// contact as existing is not documented: the caller sends only addresses
// it has just looked up and found absent.
//
// Refusals of one member (compliance state, an invalid or forgotten
// address) are Failures; an address the answer does not mention is a
// retryable Failure. Errors of the whole call are returned.
func (c *Client) AddMembers(ctx context.Context, audience string, members []connectors.MemberFields, status connectors.MemberStatus) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if err := checkStatusIfNew("AddMembers", "status", status); err != nil {
		return res, err
	}
	given := make([]string, len(members))
	for i, m := range members {
		given[i] = m.Email
	}
	err := c.batchSubscribe(ctx, "AddMembers", audience, given, false, func(i int, _ string) map[string]any {
		merge := make(map[string]string, len(members[i].Fields)) // an object, never null
		maps.Copy(merge, members[i].Fields)
		return map[string]any{"status": string(status), "merge_fields": merge}
	}, &res, func(_ string, _ batchMember, isNew bool) {
		res.Written++
		if isNew {
			res.Added++
		}
	}, func(e, code, msg string) {
		if code == "ERROR_CONTACT_EXISTS" {
			res.Existing = append(res.Existing, e)
			return
		}
		res.Failed = append(res.Failed, batchFailure(e, code, msg))
	})
	return res, err
}

// UpdateMembers writes each existing member's fields with PATCH
// /lists/{list_id}/members/{subscriber_hash}, which never creates a member
// and never sends a status: a member that is no longer in the audience
// (its address changed, it was deleted) answers 404 and is reported as a
// final Failure ("not_found"), not added back. Refusals and whole-call
// errors are as for UpsertMembers.
func (c *Client) UpdateMembers(ctx context.Context, audience string, members []connectors.MemberFields) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if audience == "" {
		return res, errors.New("mailchimp: UpdateMembers: audience is required")
	}
	if len(members) > maxBatch {
		return res, fmt.Errorf("mailchimp: UpdateMembers: %d members, more than MaxBatch %d", len(members), maxBatch)
	}
	failures := make([]*connectors.Failure, len(members))
	written := make([]bool, len(members))
	err := connectors.ForEach(ctx, c.workers, len(members), func(ctx context.Context, i int) error {
		m := members[i]
		email := strings.TrimSpace(m.Email)
		if !plausibleEmail(email) {
			f := invalidAddress(m.Email)
			failures[i] = &f
			return nil
		}
		body := map[string]any{"merge_fields": maps.Clone(m.Fields)}
		_, err := c.do(ctx, http.MethodPatch, "/lists/"+url.PathEscape(audience)+"/members/"+connectors.AddressHash(email), nil, body, nil)
		switch {
		case errors.Is(err, connectors.ErrNotFound):
			failures[i] = &connectors.Failure{Email: m.Email, Code: "not_found", Message: "no longer in the audience; not added back"}
		case err != nil:
			f, ok := failureFrom(m.Email, err)
			if !ok {
				return err
			}
			failures[i] = &f
		default:
			written[i] = true
		}
		return nil
	})
	if err != nil {
		return connectors.BatchResult{}, err
	}
	for i := range members {
		switch {
		case failures[i] != nil:
			res.Failed = append(res.Failed, *failures[i])
		case written[i]:
			res.Written++
		}
	}
	return res, nil
}

// created reports whether a PUT answer shows a member created by it.
func created(m memberDoc, hdr http.Header) bool {
	lc, ok := parseTS(m.LastChanged)
	if !ok {
		return false
	}
	opt, okOpt := parseTS(m.TimestampOpt)
	sig, okSig := parseTS(m.TimestampSig)
	if !(okOpt && opt.Equal(lc)) && !(okSig && sig.Equal(lc)) {
		return false
	}
	now := time.Now()
	if d, err := http.ParseTime(hdr.Get("Date")); err == nil {
		now = d
	}
	return !lc.Before(now.Add(-5 * time.Second))
}

// Members looks up each address with GET
// /lists/{list_id}/members/{subscriber_hash}; a 404 means the address is
// not in the audience (a permanently deleted one included) and maps to the
// zero Member. Any other error fails the whole call. The map is keyed by
// the addresses as given.
func (c *Client) Members(ctx context.Context, audience string, emails []string) (map[string]connectors.Member, error) {
	if audience == "" {
		return nil, errors.New("mailchimp: Members: audience is required")
	}
	if len(emails) > maxBatch {
		return nil, fmt.Errorf("mailchimp: Members: %d addresses, more than MaxBatch %d", len(emails), maxBatch)
	}
	out := make([]connectors.Member, len(emails))
	q := url.Values{"fields": {"email_address,status,last_changed,contact_id"}}
	err := connectors.ForEach(ctx, c.workers, len(emails), func(ctx context.Context, i int) error {
		email := strings.TrimSpace(emails[i])
		if !plausibleEmail(email) {
			return fmt.Errorf("mailchimp: Members: entry %d is not an email address", i)
		}
		var doc memberDoc
		_, err := c.do(ctx, http.MethodGet, "/lists/"+url.PathEscape(audience)+"/members/"+connectors.AddressHash(email), q, nil, &doc)
		switch {
		case errors.Is(err, connectors.ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		m := connectors.Member{Email: doc.EmailAddress, Status: connectors.MemberStatus(doc.Status), ContactID: doc.ContactID}
		if m.Status == connectors.StatusNotFound {
			return fmt.Errorf("mailchimp: Members: entry %d answered without a status", i)
		}
		if doc.LastChanged != "" {
			t, ok := parseTS(doc.LastChanged)
			if !ok {
				return fmt.Errorf("mailchimp: Members: entry %d has last_changed %q, not an ISO 8601 time", i, doc.LastChanged)
			}
			m.LastChanged = t.UTC()
		}
		out[i] = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(out, func(m connectors.Member) bool { return m.Status == connectors.StatusNotFound }) {
		// A missing audience answers 404 "Resource Not Found" too; make
		// sure "not in the audience" is not really "no such audience".
		if _, err := c.do(ctx, http.MethodGet, "/lists/"+url.PathEscape(audience), url.Values{"fields": {"id"}}, nil, nil); err != nil {
			return nil, err
		}
	}
	res := make(map[string]connectors.Member, len(emails))
	for i, e := range emails {
		res[e] = out[i]
	}
	return res, nil
}

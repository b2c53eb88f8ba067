package mailchimp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
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
// Offset paging alone is unsafe on a live audience: a member that changes
// while we page moves to the end of the last_changed order and shifts
// everyone after it one place forward, so the member at the page boundary
// would be skipped. So the cursor moves the since_last_changed boundary
// along with the pages: after a page whose last member changed at second
// L, the next query asks for members changed after L-1s (since_last_changed
// is strictly after, at one-second granularity), skipping only those
// already seen at second L. A member that changes moves behind the
// boundary and is read again later, never skipped.
//
// That leaves one gap: a member already seen at second L itself changing
// between two pages shifts the others at L. So the next page starts one
// member early, on the last member seen (the anchor); if the anchor is not
// where it was, second L is read again from its start. Duplicates are
// possible and harmless (an opt-out written twice is written once); skips
// are not.
type cursor struct {
	// W is the caller's watermark (unix seconds), kept so that
	// unsubscribed_since stays the same on every page of one poll.
	W int64 `json:"w"`
	// S is since_last_changed in unix seconds; 0 means none.
	S int64 `json:"s"`
	// O is the offset into the members changed after S.
	O int `json:"o"`
	// A is the id of the anchor member expected at offset O; "" for none.
	A string `json:"a,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.O < 0 {
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

// ChangedMembers pages through the members in req.Status whose
// last_changed is after req.Since, oldest change first. See cursor for how
// paging stays safe while the audience changes.
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
	var cur cursor
	if req.Cursor == "" {
		if !req.Since.IsZero() {
			cur.W = req.Since.Unix()
			cur.S = cur.W - 1
		}
	} else {
		var err error
		if cur, err = decodeCursor(req.Cursor); err != nil {
			return connectors.MemberPage{}, err
		}
	}
	path := "/lists/" + url.PathEscape(req.Audience) + "/members"
	for {
		count := size
		if cur.A != "" {
			count = min(size+1, connectors.MaxPageSize)
		}
		q := url.Values{}
		q.Set("status", string(req.Status))
		q.Set("sort_field", "last_changed")
		q.Set("sort_dir", "ASC")
		q.Set("count", strconv.Itoa(count))
		q.Set("offset", strconv.Itoa(cur.O))
		q.Set("fields", "members.id,members.email_address,members.status,members.last_changed,total_items")
		if cur.S != 0 {
			q.Set("since_last_changed", time.Unix(cur.S, 0).UTC().Format(isoSecond))
		}
		if req.Status == connectors.StatusUnsubscribed && cur.W != 0 {
			day := time.Unix(cur.W, 0).UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
			q.Set("unsubscribed_since", day.Format("2006-01-02"))
		}
		var doc membersDoc
		if _, err := c.do(ctx, http.MethodGet, path, q, nil, &doc); err != nil {
			return connectors.MemberPage{}, err
		}
		raw := doc.Members
		times := make([]int64, len(raw))
		for i, m := range raw {
			t, ok := parseTS(m.LastChanged)
			if !ok {
				return connectors.MemberPage{}, fmt.Errorf("mailchimp: member %s has last_changed %q, not an ISO 8601 time", m.ID, m.LastChanged)
			}
			times[i] = t.Unix()
		}
		out := raw
		if cur.A != "" {
			if len(raw) == 0 || raw[0].ID != cur.A || times[0] != cur.S+1 {
				// The members at the boundary second moved under us:
				// read that second again from its start.
				c.log.DebugContext(ctx, "mailchimp: page boundary moved, rereading its second", "since", cur.S)
				cur.O, cur.A = 0, ""
				continue
			}
			out = raw[1:]
		}
		page := connectors.MemberPage{Members: make([]connectors.Member, 0, len(out))}
		for i, m := range out {
			page.Members = append(page.Members, connectors.Member{
				Email:       m.EmailAddress,
				Status:      connectors.MemberStatus(m.Status),
				LastChanged: time.Unix(times[len(raw)-len(out)+i], 0).UTC(),
			})
		}
		if len(raw) < count {
			return page, nil // a short page is the last one
		}
		last := times[len(raw)-1]
		seen := 0
		for i := len(raw) - 1; i >= 0 && times[i] == last; i-- {
			seen++
		}
		if cur.S != 0 && last == cur.S+1 {
			// The boundary did not move: everything from the first
			// member after S up to here is at second last.
			seen += cur.O
		}
		next := cursor{W: cur.W, S: last - 1, O: seen - 1, A: raw[len(raw)-1].ID}
		page.Next = next.encode()
		return page, nil
	}
}

// batchDoc is the answer of POST /lists/{list_id}.
type batchDoc struct {
	NewMembers     []memberDoc `json:"new_members"`
	UpdatedMembers []memberDoc `json:"updated_members"`
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
// audience are added as unsubscribed. Per-member refusals come back in the
// answer's errors[] and become Failures; a refusal because the member is
// cleaned or permanently deleted is a compliance answer. An address the
// answer does not mention at all is a retryable Failure, so an opt-out is
// never taken as written without Mailchimp saying so.
func (c *Client) Unsubscribe(ctx context.Context, audience string, emails []string) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if audience == "" {
		return res, errors.New("mailchimp: Unsubscribe: audience is required")
	}
	if len(emails) > maxBatch {
		return res, fmt.Errorf("mailchimp: Unsubscribe: %d addresses, more than MaxBatch %d", len(emails), maxBatch)
	}
	body := struct {
		Members []map[string]any `json:"members"`
		Update  bool             `json:"update_existing"`
	}{Update: true}
	pending := map[string]string{} // lower-cased address -> address as given
	for _, e := range emails {
		e = strings.TrimSpace(e)
		if !plausibleEmail(e) {
			res.Failed = append(res.Failed, invalidAddress(e))
			continue
		}
		k := strings.ToLower(e)
		if _, dup := pending[k]; dup {
			continue
		}
		pending[k] = e
		body.Members = append(body.Members, map[string]any{"email_address": e, "status": "unsubscribed"})
	}
	if len(body.Members) == 0 {
		return res, nil
	}
	var doc batchDoc
	if _, err := c.do(ctx, http.MethodPost, "/lists/"+url.PathEscape(audience), nil, body, &doc); err != nil {
		return res, err
	}
	for _, m := range append(doc.NewMembers, doc.UpdatedMembers...) {
		k := strings.ToLower(m.EmailAddress)
		e, ok := pending[k]
		if !ok {
			continue
		}
		delete(pending, k)
		if m.Status == string(connectors.StatusUnsubscribed) {
			res.Written++
			continue
		}
		// Listed as updated but not unsubscribed (a cleaned member
		// stays cleaned): final, nothing to retry.
		res.Failed = append(res.Failed, connectors.Failure{
			Key: e, Code: "status " + m.Status, Compliance: connectors.MemberStatus(m.Status).Blocked(),
			Message: "member is " + m.Status + " after the unsubscribe",
		})
	}
	for _, be := range doc.Errors {
		k := strings.ToLower(strings.TrimSpace(be.EmailAddress))
		e, ok := pending[k]
		if !ok {
			continue
		}
		delete(pending, k)
		res.Failed = append(res.Failed, batchFailure(e, be.ErrorCode, be.Error))
	}
	for _, e := range pending {
		res.Failed = append(res.Failed, connectors.Failure{
			Key: e, Code: "missing_from_answer", Retryable: true,
			Message: "the batch answer did not mention this address",
		})
	}
	return res, nil
}

// batchFailure turns an errors[] entry of the batch answer into a Failure.
// The entry carries only a generic error_code, so the compliance refusals
// are recognized by their message, which is the detail of the single-member
// answers "Member In Compliance State" and "Forgotten Email Not Subscribed";
// Code is then that title.
func batchFailure(email, code, msg string) connectors.Failure {
	f := connectors.Failure{Key: email, Code: code, Message: httpx.Redact(msg)}
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "compliance state"):
		f.Code, f.Compliance = titleCompliance, true
	case strings.Contains(low, "permanently deleted"), strings.Contains(low, "forgotten"):
		f.Code, f.Compliance = titleForgotten, true
	}
	return f
}

func plausibleEmail(e string) bool {
	at := strings.IndexByte(e, '@')
	return at > 0 && at < len(e)-1 && !strings.ContainsAny(e, " \t\r\n")
}

func invalidAddress(e string) connectors.Failure {
	return connectors.Failure{Key: e, Code: "invalid_email", Message: "not an email address; not sent"}
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
		return connectors.Failure{Key: email, Code: ae.Code, Message: ae.Detail, Compliance: true}, true
	case errors.Is(ae, connectors.ErrInvalid):
		return connectors.Failure{Key: email, Code: ae.Code, Message: ae.Detail}, true
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
	switch statusIfNew {
	case connectors.StatusSubscribed, connectors.StatusUnsubscribed, connectors.StatusPending, connectors.StatusTransactional:
	default:
		return res, fmt.Errorf("mailchimp: UpsertMembers: statusIfNew %q is not one of subscribed, unsubscribed, pending, transactional", statusIfNew)
	}
	type outcome struct {
		written, added bool
		failure        *connectors.Failure
	}
	outs := make([]outcome, len(members))
	err := c.forEach(ctx, len(members), func(ctx context.Context, i int) error {
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

// MemberStatuses looks up each address with GET
// /lists/{list_id}/members/{subscriber_hash}; a 404 means the address is
// not in the audience (a permanently deleted one included). Any other
// error fails the whole call. The map is keyed by the addresses as given.
func (c *Client) MemberStatuses(ctx context.Context, audience string, emails []string) (map[string]connectors.MemberStatus, error) {
	if audience == "" {
		return nil, errors.New("mailchimp: MemberStatuses: audience is required")
	}
	if len(emails) > maxBatch {
		return nil, fmt.Errorf("mailchimp: MemberStatuses: %d addresses, more than MaxBatch %d", len(emails), maxBatch)
	}
	out := make([]connectors.MemberStatus, len(emails))
	q := url.Values{"fields": {"email_address,status"}}
	err := c.forEach(ctx, len(emails), func(ctx context.Context, i int) error {
		email := strings.TrimSpace(emails[i])
		if !plausibleEmail(email) {
			return fmt.Errorf("mailchimp: MemberStatuses: entry %d is not an email address", i)
		}
		var doc memberDoc
		_, err := c.do(ctx, http.MethodGet, "/lists/"+url.PathEscape(audience)+"/members/"+connectors.AddressHash(email), q, nil, &doc)
		switch {
		case errors.Is(err, connectors.ErrNotFound):
			out[i] = connectors.StatusNotFound
		case err != nil:
			return err
		default:
			out[i] = connectors.MemberStatus(doc.Status)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if slices.Contains(out, connectors.StatusNotFound) {
		// A missing audience answers 404 "Resource Not Found" too; make
		// sure "not in the audience" is not really "no such audience".
		if _, err := c.do(ctx, http.MethodGet, "/lists/"+url.PathEscape(audience), url.Values{"fields": {"id"}}, nil, nil); err != nil {
			return nil, err
		}
	}
	res := make(map[string]connectors.MemberStatus, len(emails))
	for i, e := range emails {
		res[e] = out[i]
	}
	return res, nil
}

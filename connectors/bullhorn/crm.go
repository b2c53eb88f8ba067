package bullhorn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// RecordTypes are the entities this connector reads and writes.
var RecordTypes = []string{"Candidate", "ClientContact", "Lead"}

// tearsheetAssoc is the Tearsheet association holding each entity's
// records (B4): candidates and clientContacts. Leads are in none.
var tearsheetAssoc = map[string]string{"Candidate": "candidates", "ClientContact": "clientContacts"}

// pageCount is the rows asked per call: the SDK's pull size and the
// largest a third party reports working (B3). The server's maximum is
// UNCONFIRMED; a page answered shorter than asked is read as the end only
// when the envelope's total agrees.
const pageCount = 500

// maxCallsPerPage bounds the calls one page of a read may make, so that a
// long stretch of records that are not opted out cannot hold an activity.
const maxCallsPerPage = 20

var (
	fieldPattern  = regexp.MustCompile(`^[a-z][A-Za-z0-9]{0,63}$`)
	customPattern = regexp.MustCompile(`^custom(Text|TextBlock|Int|Float)[1-9][0-9]?$`)
)

// CheckField says why name cannot be read as a field (a field-sync source).
func CheckField(name string) error {
	if !fieldPattern.MatchString(name) {
		return fmt.Errorf("%q is not a Bullhorn field name (a camelCase name such as firstName or customText3)", name)
	}
	return nil
}

// CheckCustomField says why name cannot hold a custom opt-out, opt-in or
// cleaned mark: it must be a customText, customTextBlock, customInt or
// customFloat field (Bullhorn has no custom booleans).
func CheckCustomField(name string) error {
	if !customPattern.MatchString(name) {
		return fmt.Errorf("%q must be a custom field (customText1…, customInt1…, customFloat1…, customTextBlock1…)", name)
	}
	return nil
}

// CheckTearsheet says why id is not a Tearsheet id.
func CheckTearsheet(id string) error {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != id {
		return fmt.Errorf("%q is not a Tearsheet id (a positive whole number)", id)
	}
	return nil
}

func checkTypes(types []string) ([]string, error) {
	if len(types) == 0 {
		return nil, fmt.Errorf("bullhorn: Types: none given (known: %s)", strings.Join(RecordTypes, ", "))
	}
	for _, t := range types {
		if !slices.Contains(RecordTypes, t) {
			return nil, fmt.Errorf("bullhorn: Types: %q is not %s", t, strings.Join(RecordTypes, ", "))
		}
	}
	return types, nil
}

func checkPageSize(n int) (int, error) {
	if n < 0 || n > connectors.MaxPageSize {
		return 0, fmt.Errorf("bullhorn: PageSize %d is outside 0..%d", n, connectors.MaxPageSize)
	}
	if n == 0 {
		return connectors.MaxPageSize, nil
	}
	return n, nil
}

// ---- the opt-out field ----

type optOut struct {
	kind        connectors.OptOutKind
	field       string // massMailOptOut for the standard kind
	true, false any    // what the field holds for yes and no
}

func (c *Client) optOut(f connectors.OptOutField) (optOut, error) {
	switch f.Kind {
	case "", connectors.OptOutStandard:
		return optOut{kind: connectors.OptOutStandard, field: "massMailOptOut", true: true, false: false}, nil
	case connectors.OptOutCustom, connectors.OptOutInverted:
		if err := CheckCustomField(f.Field); err != nil {
			return optOut{}, fmt.Errorf("bullhorn: opt-out field: %w", err)
		}
		o := optOut{kind: f.Kind, field: f.Field, true: c.cfg.TrueText, false: c.cfg.FalseText}
		if strings.HasPrefix(f.Field, "customInt") || strings.HasPrefix(f.Field, "customFloat") {
			o.true, o.false = 1, 0
		}
		return o, nil
	}
	return optOut{}, fmt.Errorf("bullhorn: opt-out kind %q is not standard, custom or inverted", f.Kind)
}

// truthy reads a yes from a boolean, a number or text.
func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "yes", "y", "true", "1", "on", "x":
			return true
		}
	}
	return false
}

func (o optOut) optedOut(row map[string]any) bool {
	v := truthy(row[o.field])
	if o.kind == connectors.OptOutInverted {
		return !v
	}
	return v
}

// value is what a write sets: the opt-out, or the opt-in cleared.
func (o optOut) value() any {
	if o.kind == connectors.OptOutInverted {
		return o.false
	}
	return o.true
}

// ---- reading ----

// plan is one read: its record types, what is fetched and how a row
// becomes records.
type plan struct {
	types  []string
	fields []string // asked of Bullhorn
	opt    optOut
	std    bool // ListMembers: the standard opt-out also counts
	extra  []string
	// onlyOptedOut keeps only opted-out rows (OptedOut).
	onlyOptedOut bool
	lists        []string
	since        time.Time
}

func (c *Client) newPlan(types []string, o optOut, extra []string) plan {
	p := plan{types: types, opt: o, extra: extra}
	want := append([]string{"id", "isDeleted", "dateLastModified", "massMailOptOut", o.field}, c.cfg.EmailFields...)
	for _, f := range append(want, extra...) {
		if !slices.Contains(p.fields, f) {
			p.fields = append(p.fields, f)
		}
	}
	return p
}

// records turns one row into a record per configured address (a person
// with email and email2 is two addresses to sync), skipping soft-deleted
// rows; inLists is the scope answer.
func (c *Client) records(p plan, t string, row map[string]any, inLists bool) ([]connectors.Record, int64, error) {
	id, ok := row["id"].(float64)
	if !ok || id <= 0 {
		return nil, 0, fmt.Errorf("bullhorn: %s row without an id", t)
	}
	ref := connectors.RecordRef{Type: t, ID: strconv.FormatInt(int64(id), 10)}
	if truthy(row["isDeleted"]) {
		return nil, int64(id), nil
	}
	opted := p.opt.optedOut(row)
	if p.std {
		opted = opted || truthy(row["massMailOptOut"])
	}
	if p.onlyOptedOut && !opted {
		return nil, int64(id), nil
	}
	var fields map[string]string
	if len(p.extra) > 0 {
		fields = make(map[string]string, len(p.extra))
		for _, f := range p.extra {
			fields[f] = fieldString(row[f])
		}
	}
	var out []connectors.Record
	seen := map[string]bool{}
	for _, ef := range c.cfg.EmailFields {
		e, _ := row[ef].(string)
		k := connectors.EmailKey(e)
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, connectors.Record{Ref: ref, Email: e, OptedOut: opted, InLists: inLists, Fields: fields})
	}
	if len(out) == 0 {
		// No address: reported once, so the run can say it was skipped.
		out = append(out, connectors.Record{Ref: ref, OptedOut: opted, InLists: inLists, Fields: fields})
	}
	return out, int64(id), nil
}

func fieldString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// cursor is the opaque cursor of a read.
type cursor struct {
	V int    `json:"v"`
	F string `json:"f"`           // fingerprint of the read
	P int    `json:"p,omitempty"` // 0: tearsheet members, 1: changed records
	T int    `json:"t,omitempty"` // index in the read's types
	L int64  `json:"l,omitempty"` // keyset: dateLastModified (ms) of the last row
	I int64  `json:"i,omitempty"` // keyset: id of the last row (phase 0: last member id)
	K int    `json:"k,omitempty"` // rows at L already seen, to skip a run of equal stamps
	// H ends a part of a split read (SplitCursor): the part reads the
	// rows of its type modified before H (ms), and then the read ends.
	H int64 `json:"h,omitempty"`
	// E is the entity of T, and N about how many of its rows are left
	// after the keyset: kept for SplitCursor, which has no query.
	E string `json:"e,omitempty"`
	N int    `json:"n,omitempty"`
}

func fingerprint(parts ...string) string {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func (k cursor) encode() string {
	b, _ := json.Marshal(k)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(raw, fp string) (cursor, error) {
	k := cursor{V: 1, F: fp}
	if raw == "" {
		return k, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err == nil {
		err = json.Unmarshal(b, &k)
	}
	if err != nil || k.V != 1 || k.P < 0 || k.P > 1 || k.T < 0 || k.K < 0 || k.H < 0 || k.H != 0 && k.P != 1 {
		return k, fmt.Errorf("bullhorn: Cursor: %w: not a cursor of this connector", connectors.ErrInvalid)
	}
	if k.F != fp {
		return k, fmt.Errorf("bullhorn: Cursor: %w: the cursor belongs to a different query", connectors.ErrInvalid)
	}
	return k, nil
}

func (p plan) fingerprint(kind string) string {
	return fingerprint(kind, strings.Join(p.types, ","), strings.Join(p.fields, ","), string(p.opt.kind), p.opt.field,
		strings.Join(p.lists, ","), p.since.UTC().Format(time.RFC3339Nano))
}

// OptedOut pages through opted-out records of q.Types.
//
// Without q.Lists it returns the opted-out records whose dateLastModified
// is at or after q.Since, all with InLists true.
//
// With q.Lists (Tearsheet ids) it returns, first, EVERY opted-out member of
// the tearsheets (their candidates and client contacts) with InLists true,
// whatever its modification date, then the opted-out records modified
// since q.Since that are in none of them, with InLists false (Leads are in
// no tearsheet). Adding a record to a tearsheet does not touch its
// dateLastModified, and the time it was added is not readable through
// documented calls, so a watermark alone would never find a record opted
// out long ago and added today: the membership is read each run.
//
// Changes are read through /search, which every one of the three entities
// supports (/query refuses Candidate), in (dateLastModified, id) order
// with a keyset, not an offset, so that a record modified mid-read cannot
// make another one skip. The opt-out and soft deletion are filtered here,
// not in the search: how Bullhorn's index holds booleans is not confirmed,
// and a filter written in the wrong form would silently match nothing.
func (c *Client) OptedOut(ctx context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	types, err := checkTypes(q.Types)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	o, err := c.optOut(q.Field)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	size, err := checkPageSize(q.PageSize)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	for _, l := range q.Lists {
		if err := CheckTearsheet(l); err != nil {
			return connectors.RecordPage{}, fmt.Errorf("bullhorn: Lists: %w", err)
		}
	}
	p := c.newPlan(types, o, nil)
	p.onlyOptedOut, p.lists, p.since = true, q.Lists, q.Since
	return c.read(ctx, p, "optedout", q.Cursor, size, q.ListsAsOf)
}

// ListMembers pages through the members of q.Lists (or, without lists,
// the records of q.Types modified since q.Since, all when it is zero) with
// the fields q.Fields. With lists every member is returned each run,
// whatever q.Since: a member's joining carries no date (see OptedOut).
// OptedOut is true when the standard massMailOptOut or q.Field says so:
// the caller must not subscribe such a record.
func (c *Client) ListMembers(ctx context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	types, err := checkTypes(q.Types)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	o, err := c.optOut(q.Field)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	size, err := checkPageSize(q.PageSize)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	for _, f := range q.Fields {
		if err := CheckField(f); err != nil {
			return connectors.RecordPage{}, fmt.Errorf("bullhorn: Fields: %w", err)
		}
	}
	for _, l := range q.Lists {
		if err := CheckTearsheet(l); err != nil {
			return connectors.RecordPage{}, fmt.Errorf("bullhorn: Lists: %w", err)
		}
	}
	p := c.newPlan(types, o, q.Fields)
	p.std, p.lists = true, q.Lists
	if len(q.Lists) == 0 {
		p.since = q.Since
	}
	return c.read(ctx, p, "members", q.Cursor, size, q.ListsAsOf)
}

// read runs a plan: phase 0 the tearsheets' members, phase 1 the records
// changed since p.since (for ListMembers with lists, phase 1 is skipped).
func (c *Client) read(ctx context.Context, p plan, kind, raw string, size int, asOf time.Time) (connectors.RecordPage, error) {
	fp := p.fingerprint(kind)
	k, err := decodeCursor(raw, fp)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	var m *membership
	if len(p.lists) > 0 {
		if m, err = c.members(ctx, p.lists, p.types, raw == "", asOf); err != nil {
			return connectors.RecordPage{}, err
		}
	} else if k.P == 0 {
		k.P = 1
	}
	lastPhase := 1
	if kind == "members" && len(p.lists) > 0 {
		lastPhase = 0
	}
	if k.E != "" && (k.T >= len(p.types) || k.E != p.types[k.T]) {
		return connectors.RecordPage{}, fmt.Errorf("bullhorn: Cursor: %w: the cursor belongs to a different query", connectors.ErrInvalid)
	}
	var out []connectors.Record
	for calls := 0; len(out) < size && calls < maxCallsPerPage; calls++ {
		if k.T >= len(p.types) {
			if k.P >= lastPhase {
				return connectors.RecordPage{Records: out}, nil
			}
			k = cursor{V: 1, F: fp, P: k.P + 1}
			continue
		}
		t := p.types[k.T]
		if k.P == 0 {
			ids := m.after(t, k.I, min(100, size-len(out)+20))
			if len(ids) == 0 {
				k = cursor{V: 1, F: fp, P: 0, T: k.T + 1}
				continue
			}
			rows, err := c.getByIDs(ctx, t, ids, p.fields)
			if err != nil {
				return connectors.RecordPage{}, err
			}
			for _, row := range rows {
				recs, _, err := c.records(p, t, row, true)
				if err != nil {
					return connectors.RecordPage{}, err
				}
				out = append(out, recs...)
			}
			k.I = ids[len(ids)-1]
			continue
		}
		done, err := c.changed(ctx, p, t, &k, m, size, &out)
		if err != nil {
			return connectors.RecordPage{}, err
		}
		switch {
		case done && k.H != 0:
			return connectors.RecordPage{Records: out}, nil // a part ends with its range
		case done:
			k = cursor{V: 1, F: fp, P: 1, T: k.T + 1}
		}
	}
	if k.T >= len(p.types) && k.P >= lastPhase {
		return connectors.RecordPage{Records: out}, nil
	}
	k.E = ""
	if k.P == 1 && k.T < len(p.types) {
		k.E = p.types[k.T]
	}
	return connectors.RecordPage{Records: out, Next: k.encode()}, nil
}

// listAnswer is the answer of a search, a to-many association or an
// entity GET: its rows are in data.
type listAnswer struct {
	Total *int             `json:"total"`
	Start int              `json:"start"`
	Count int              `json:"count"`
	Data  []map[string]any `json:"data"`
}

// UnmarshalJSON refuses an answer without "data": every answer read here
// has it ([] when empty; one object for an entity GET of one id), and an
// answer without it (null, {}, an error answered 2xx, "data": null) must
// never read as "no rows", which would end a read or a lookup as if
// nothing were left (or skip the records asked by id) and lose the
// opt-outs it did not return.
func (a *listAnswer) UnmarshalJSON(b []byte) error {
	var p struct {
		Total *int            `json:"total"`
		Start int             `json:"start"`
		Count int             `json:"count"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*a = listAnswer{Total: p.Total, Start: p.Start, Count: p.Count}
	switch d := strings.TrimSpace(string(p.Data)); {
	case d == "" || d == "null":
		return errors.New("an answer without data")
	case d[0] == '{':
		var one map[string]any
		if err := json.Unmarshal(p.Data, &one); err != nil {
			return err
		}
		a.Data = []map[string]any{one}
		return nil
	}
	return json.Unmarshal(p.Data, &a.Data)
}

// rangeValue writes a dateLastModified bound for a search range: epoch
// milliseconds, or (compact) yyyyMMddHHmmss (UTC, floored to the second),
// which the client uses once the search has refused milliseconds.
// UNCONFIRMED which Bullhorn takes (B3):
// milliseconds go first because a service expecting the other form fails
// loudly on a 13-digit value, while a compact value read as milliseconds
// would silently match nothing.
func rangeValue(ms int64, compact bool) string {
	if compact {
		return time.UnixMilli(ms).UTC().Format("20060102150405")
	}
	return strconv.FormatInt(ms, 10)
}

// changed reads one call of records of type t changed at or after the
// cursor's keyset (and p.since), appending what the plan keeps; done
// reports the end of t.
func (c *Client) changed(ctx context.Context, p plan, t string, k *cursor, m *membership, size int, out *[]connectors.Record) (bool, error) {
	from := k.L
	if s := p.since.UnixMilli(); !p.since.IsZero() && s > from {
		from = s
	}
	// A part's end (k.H) is not written into the search: the rows come in
	// stamp order and the part stops at the first at or past it, which
	// no reading of the range's time zone or precision can move.
	ans, err := c.searchChanged(ctx, t, p.fields, from, k.K, pageCount)
	if err != nil {
		return false, err
	}
	// left is what the answer's total says is left after row j: a hint
	// for SplitCursor.
	left := func(j int) int {
		if ans.Total == nil {
			return 0
		}
		return max(*ans.Total-ans.Start-j, 0)
	}
	fresh := 0
	for j, row := range ans.Data {
		id, _ := row["id"].(float64)
		stamp, _ := row["dateLastModified"].(float64)
		if int64(stamp) < from || int64(stamp) == k.L && int64(id) <= k.I {
			// Before the watermark (a range written to the second
			// reaches back into it), or read before: at or before the keyset.
			continue
		}
		if k.H != 0 && int64(stamp) >= k.H {
			return true, nil // the next part's (rows come in stamp order)
		}
		if len(*out) >= size {
			k.K, k.N = 0, left(j)
			return false, nil
		}
		fresh++
		recs, rid, err := c.records(p, t, row, m == nil)
		if err != nil {
			return false, err
		}
		if m == nil || !m.has(t, rid) {
			*out = append(*out, recs...)
		}
		k.L, k.I, k.K = int64(stamp), rid, 0
	}
	if fresh == 0 && len(ans.Data) > 0 {
		k.K += len(ans.Data) // a run of stamps at the keyset longer than a call
	}
	k.N = left(len(ans.Data))
	// The search answers total (B3); without it, a page shorter than
	// asked ends the read.
	end := len(ans.Data) == 0 || ans.Total != nil && ans.Start+len(ans.Data) >= *ans.Total ||
		ans.Total == nil && len(ans.Data) < pageCount
	return end, nil
}

// searchChanged searches the rows of entity t modified at or after from
// (ms), in (dateLastModified, id) order: count rows from start, with
// fields.
func (c *Client) searchChanged(ctx context.Context, t string, fields []string, from int64, start, count int) (listAnswer, error) {
	search := func(compact bool) (listAnswer, error) {
		v := url.Values{
			"query":  {"dateLastModified:[" + rangeValue(from, compact) + " TO *]"},
			"fields": {strings.Join(fields, ",")},
			"sort":   {"dateLastModified,id"},
			"start":  {strconv.Itoa(start)},
			"count":  {strconv.Itoa(count)},
		}
		var ans listAnswer
		err := c.call(ctx, http.MethodGet, "search/"+t, v, nil, &ans)
		return ans, err
	}
	// The format this search is written in: searches run at once (the
	// parts of a split read, on a client that has made none yet) each
	// fall back on their own, and the client switches only once the
	// compact form was answered, never while another search is on its way.
	//
	// A refusal of milliseconds is taken for the format only when the
	// same search is refused again: a compact range that a search reading
	// milliseconds takes as a date in the 27th century matches nothing,
	// silently, so one stray 400 must not switch the client.
	compact := c.compactDates.Load()
	ans, err := search(compact)
	refused := func(err error) (*connectors.APIError, bool) {
		var apiErr *connectors.APIError
		return apiErr, err != nil && errors.As(err, &apiErr) && apiErr.Status == http.StatusBadRequest
	}
	if _, ok := refused(err); ok && !compact {
		ans, err = search(false)
		if apiErr, ok := refused(err); ok {
			if ans, err = search(true); err == nil && c.compactDates.CompareAndSwap(false, true) {
				c.logger().Warn("search refused a dateLastModified range in epoch milliseconds twice; writing yyyyMMddHHmmss", "entity", t, "error", apiErr.Detail)
			}
		}
	}
	return ans, err
}

// SplitCursor splits the rest of a read of changed records (an OptedOut
// or ListMembers cursor between two calls of its changed-records phase)
// into at most parts reads of about as many rows each, read at once: a
// keyset read is otherwise a chain of round trips. nil when the cursor is
// elsewhere, a part already, or the split's round trip would not shorten
// the read.
//
// The bounds are the dateLastModified of the rows at even offsets of the
// rest (the left rows the cursor's last answer counted; one count=1
// search each, at once). Offsets move while records change, which only
// makes the parts less even: each part is the same keyset read, ended
// before the next part's first stamp, and a record modified while the
// parts are read moves to the present, which the last part reads, as the
// whole read would, or the next run does. The last part goes on to the
// present and into the read's next types.
func (c *Client) SplitCursor(ctx context.Context, raw string, parts int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(raw)
	var k cursor
	if raw == "" || err != nil || json.Unmarshal(b, &k) != nil || k.V != 1 || k.P != 1 || k.H != 0 || k.E == "" || k.L <= 0 {
		return nil, nil
	}
	// The split costs a round trip (the bounds): worth it only when the
	// parts' chains are shorter by more.
	calls := (k.N + pageCount - 1) / pageCount
	parts = min(parts, k.N/pageCount)
	if parts < 2 || 1+(calls+parts-1)/parts >= calls {
		return nil, nil
	}
	bounds := make([]int64, parts-1)
	err = connectors.ForEach(ctx, 0, len(bounds), func(ctx context.Context, i int) error {
		ans, err := c.searchChanged(ctx, k.E, []string{"id", "dateLastModified"}, k.L, k.N*(i+1)/parts, 1)
		if err == nil && len(ans.Data) == 1 {
			stamp, _ := ans.Data[0]["dateLastModified"].(float64)
			bounds[i] = int64(stamp)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []string
	part := k
	part.N = 0
	for _, b := range bounds {
		if b <= part.L {
			continue // an empty part (a stamp shared with the last bound, or none read)
		}
		part.H = b
		out = append(out, part.encode())
		part = cursor{V: 1, F: k.F, P: 1, T: k.T, E: k.E, L: b}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return append(out, part.encode()), nil
}

// getByIDs reads records by id (entity/{type}/{ids}), in id order.
func (c *Client) getByIDs(ctx context.Context, t string, ids []int64, fields []string) ([]map[string]any, error) {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	var ans listAnswer
	err := c.call(ctx, http.MethodGet, "entity/"+t+"/"+strings.Join(parts, ","), url.Values{"fields": {strings.Join(fields, ",")}}, nil, &ans)
	var apiErr *connectors.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return nil, nil // none of them exists any more
	}
	if err != nil {
		return nil, err
	}
	rows := ans.Data
	slices.SortFunc(rows, func(a, b map[string]any) int {
		x, _ := a["id"].(float64)
		y, _ := b["id"].(float64)
		return int(x - y)
	})
	return rows, nil
}

// ---- tearsheets ----

// membership is the union of the tearsheets' members, by type.
type membership struct {
	byType map[string][]int64 // ascending
	set    map[string]map[int64]bool
}

func (m *membership) has(t string, id int64) bool { return m != nil && m.set[t][id] }

func (m *membership) after(t string, id int64, n int) []int64 {
	ids := m.byType[t]
	i, found := slices.BinarySearch(ids, id)
	if found {
		i++
	}
	return ids[i:min(i+n, len(ids))]
}

type listCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*listEntry
}

type listEntry struct {
	loaded time.Time
	m      *membership
}

func newListCache(ttl time.Duration, now func() time.Time) *listCache {
	return &listCache{ttl: ttl, now: now, entries: map[string]*listEntry{}}
}

// members returns the tearsheets' members. The first page of a read
// reads them afresh unless the cached copy was loaded at or after asOf
// (the run's start: one run reads each tearsheet once); later pages reuse
// a copy younger than the TTL.
func (c *Client) members(ctx context.Context, lists, types []string, first bool, asOf time.Time) (*membership, error) {
	key := strings.Join(slices.Sorted(slices.Values(lists)), ",") + "|" + strings.Join(types, ",")
	lc := c.lists
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if e, ok := lc.entries[key]; ok {
		current := !asOf.IsZero() && !e.loaded.Before(asOf)
		if first && current || !first && lc.now().Sub(e.loaded) < lc.ttl {
			return e.m, nil
		}
	}
	loaded := lc.now()
	m := &membership{byType: map[string][]int64{}, set: map[string]map[int64]bool{}}
	for _, t := range types {
		assoc := tearsheetAssoc[t]
		if assoc == "" {
			continue
		}
		m.set[t] = map[int64]bool{}
		for _, l := range lists {
			if err := c.readTearsheet(ctx, l, assoc, func(id int64) {
				if !m.set[t][id] {
					m.set[t][id] = true
					m.byType[t] = append(m.byType[t], id)
				}
			}); err != nil {
				return nil, err
			}
		}
		slices.Sort(m.byType[t])
	}
	lc.entries[key] = &listEntry{loaded: loaded, m: m}
	return m, nil
}

// readTearsheet pages through one association of a tearsheet (B4).
func (c *Client) readTearsheet(ctx context.Context, id, assoc string, add func(int64)) error {
	for start := 0; ; {
		v := url.Values{"fields": {"id"}, "start": {strconv.Itoa(start)}, "count": {strconv.Itoa(pageCount)}, "showTotalMatched": {"true"}}
		var ans listAnswer
		if err := c.call(ctx, http.MethodGet, "entity/Tearsheet/"+id+"/"+assoc, v, nil, &ans); err != nil {
			return fmt.Errorf("bullhorn: reading tearsheet %s %s: %w", id, assoc, err)
		}
		for _, row := range ans.Data {
			n, ok := row["id"].(float64)
			if !ok {
				return fmt.Errorf("bullhorn: tearsheet %s %s: a member without an id", id, assoc)
			}
			add(int64(n))
		}
		start += len(ans.Data)
		// UNCONFIRMED whether total is answered (B4): without it, a short
		// or empty page ends the read.
		if len(ans.Data) == 0 || ans.Total != nil && start >= *ans.Total || ans.Total == nil && len(ans.Data) < pageCount {
			return nil
		}
	}
}

// ---- finding ----

// lucenePhrase quotes a value for a Lucene phrase: backslash and quote
// escaped, as the classic query parser reads them.
func lucenePhrase(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// maxTerms bounds the terms of one FindByEmail search, well under
// Lucene's default of 1,024 clauses.
const maxTerms = 300

// FindByEmail returns every record of the types holding one of the
// addresses in one of the configured email fields, with one search per
// type (more when the terms exceed maxTerms).
//
// An address matches whatever its case, Unicode form or domain spelling:
// the search asks for every spelling (connectors.EmailSpellings) as a
// quoted phrase, and the rows are matched back by connectors.EmailKey, so
// an index that tokenises addresses (UNCONFIRMED, B3), whose phrase also
// matches longer addresses, returns no false match. Each record's Email is
// the address as the caller gave it; a record holding two of the asked
// addresses is returned once for each.
func (c *Client) FindByEmail(ctx context.Context, types []string, field connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	types, err := checkTypes(types)
	if err != nil {
		return nil, err
	}
	o, err := c.optOut(field)
	if err != nil {
		return nil, err
	}
	if len(emails) > c.MaxBatch() {
		return nil, fmt.Errorf("bullhorn: emails: %d addresses given, at most %d a call", len(emails), c.MaxBatch())
	}
	asked := map[string]string{}
	var terms []string
	for _, e := range emails {
		k := connectors.EmailKey(e)
		if k == "" {
			continue
		}
		if _, dup := asked[k]; dup {
			continue
		}
		asked[k] = e
		for _, sp := range connectors.EmailSpellings(e) {
			for _, f := range c.cfg.EmailFields {
				terms = append(terms, f+":"+lucenePhrase(sp))
			}
		}
	}
	if len(terms) == 0 {
		return nil, nil
	}
	p := c.newPlan(types, o, nil)
	var queries []string
	for len(terms) > 0 {
		n := min(len(terms), maxTerms)
		queries = append(queries, strings.Join(terms[:n], " OR "))
		terms = terms[n:]
	}
	type job struct{ t, q string }
	var jobs []job
	for _, t := range types {
		for _, q := range queries {
			jobs = append(jobs, job{t, q})
		}
	}
	recs := make([][]connectors.Record, len(jobs))
	err = connectors.ForEach(ctx, 0, len(jobs), func(ctx context.Context, i int) (err error) {
		recs[i], err = c.findAll(ctx, p, jobs[i].t, jobs[i].q, asked)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []connectors.Record
	seen := map[string]bool{}
	for _, rs := range recs {
		for _, r := range rs {
			key := r.Ref.String() + "\x00" + r.Email
			if !seen[key] {
				seen[key] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// findAll reads every row of one search, keeping the records whose
// addresses were asked for, once per asked address.
func (c *Client) findAll(ctx context.Context, p plan, t, query string, asked map[string]string) ([]connectors.Record, error) {
	var out []connectors.Record
	for start := 0; ; {
		v := url.Values{"fields": {strings.Join(p.fields, ",")}, "sort": {"id"}, "start": {strconv.Itoa(start)}, "count": {strconv.Itoa(pageCount)}}
		var ans listAnswer
		var err error
		if len(query) > 7000 {
			// The POST form, which Bullhorn recommends past 7,500
			// characters (B3).
			err = c.call(ctx, http.MethodPost, "search/"+t, v, map[string]string{"query": query}, &ans)
		} else {
			v.Set("query", query)
			err = c.call(ctx, http.MethodGet, "search/"+t, v, nil, &ans)
		}
		if err != nil {
			return nil, err
		}
		for _, row := range ans.Data {
			recs, _, err := c.records(p, t, row, true)
			if err != nil {
				return nil, err
			}
			for _, r := range recs {
				if e, ok := asked[connectors.EmailKey(r.Email)]; ok {
					r.Email = e
					out = append(out, r)
				}
			}
		}
		start += len(ans.Data)
		if len(ans.Data) == 0 || ans.Total != nil && start >= *ans.Total || ans.Total == nil && len(ans.Data) < pageCount {
			return out, nil
		}
	}
}

// ---- writing ----

// SetOptOut writes the opt-out on each record with one entity update each
// (POST entity/{type}/{id}), at most MaxInFlight at a time. Setting an
// opt-out already set succeeds, so the write is idempotent, and it only
// ever sets the opt-out (or clears an opt-in): it never clears one. The
// mass update is not used: it answers a count, not per-record results,
// and whether massMailOptOut is mass-updatable is not confirmed (B5).
//
// A record that cannot be written (not found, refused, rate limited past
// the retries) is a Failure naming its Record; the others stand. Rejected
// credentials abort the call with an error.
func (c *Client) SetOptOut(ctx context.Context, field connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	o, err := c.optOut(field)
	if err != nil {
		return res, err
	}
	return c.write(ctx, map[string]any{o.field: o.value()}, refs)
}

// SetFlag sets the custom field (the cleaned mark) to yes on each record,
// as SetOptOut writes.
func (c *Client) SetFlag(ctx context.Context, field string, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	o, err := c.optOut(connectors.OptOutField{Kind: connectors.OptOutCustom, Field: field})
	if err != nil {
		return connectors.BatchResult{}, err
	}
	return c.write(ctx, map[string]any{o.field: o.true}, refs)
}

func (c *Client) write(ctx context.Context, body map[string]any, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if len(refs) > c.MaxBatch() {
		return res, fmt.Errorf("bullhorn: refs: %d records given, at most %d a call", len(refs), c.MaxBatch())
	}
	var todo []connectors.RecordRef
	seen := map[connectors.RecordRef]bool{}
	for _, ref := range refs {
		id, err := strconv.ParseInt(ref.ID, 10, 64)
		if !slices.Contains(RecordTypes, ref.Type) || err != nil || id <= 0 {
			res.Failed = append(res.Failed, connectors.Failure{Record: ref, Code: "INVALID_REFERENCE",
				Message: "not a Candidate, ClientContact or Lead with a numeric id"})
			continue
		}
		if !seen[ref] {
			seen[ref] = true
			todo = append(todo, ref)
		}
	}
	sent, err := connectors.WriteEach(ctx, c.inFlight, todo, func(ctx context.Context, ref connectors.RecordRef) error {
		var ans struct {
			ChangedEntityID int64  `json:"changedEntityId"`
			ChangeType      string `json:"changeType"`
			ErrorMessage    string `json:"errorMessage"`
		}
		if err := c.call(ctx, http.MethodPost, "entity/"+ref.Type+"/"+ref.ID, nil, body, &ans); err != nil {
			return err
		}
		// Written only when the answer says this record was changed
		// (reference B5: changedEntityId, changeType UPDATE); an error
		// document or an empty body answered 2xx is retried, never
		// counted as an opt-out written.
		if id, _ := strconv.ParseInt(ref.ID, 10, 64); ans.ChangedEntityID != id || ans.ErrorMessage != "" {
			return fmt.Errorf("bullhorn: POST entity/%s/%s: the answer does not confirm the update (changedEntityId %d, changeType %q)",
				ref.Type, ref.ID, ans.ChangedEntityID, ans.ChangeType)
		}
		return nil
	})
	res.Written += sent.Written
	res.Failed = append(res.Failed, sent.Failed...)
	if err != nil {
		return res, err
	}
	slices.SortFunc(res.Failed, func(a, b connectors.Failure) int { return strings.Compare(a.Record.String(), b.Record.String()) })
	return res, nil
}

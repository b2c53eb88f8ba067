package dynamics

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// batchRows is the rows asked of each query of a read of changed records:
// the most Dataverse answers at once (reference A4). A page takes at most
// connectors.MaxPageSize records of a batch; the rest is kept for the
// next pages (connectors.Leftovers), so that the chain of nextLink calls
// a read is (each needs the link the one before answered) is up to five
// times shorter.
const batchRows = 5000

// batch is the query answer a cursor resumes in: the answer, the URL it
// came from and the rows of it already taken.
type batch struct {
	res  collection
	url  string
	skip int
}

// resumeAt is the index of the first row of a batch read again that the
// read has not returned: the one after the row whose modifiedon and id are
// t and id. Rows come in (modifiedon, id) order, but Dataverse orders ids
// as SQL Server does, not as text: when that row is no longer in the
// batch (modified since, it moved to the end of the read), every row at t
// is returned again, a repeat and never a loss.
func resumeAt(rows []map[string]any, tab table, t, id string) int {
	at, err := time.Parse(time.RFC3339Nano, t)
	if t == "" || err != nil {
		return 0
	}
	firstAt := -1
	for i, row := range rows {
		s, _ := row["modifiedon"].(string)
		m, err := time.Parse(time.RFC3339Nano, s)
		switch {
		case err != nil:
			return 0 // unreadable: read the batch whole again
		case m.Before(at):
			continue
		case m.Equal(at):
			if firstAt < 0 {
				firstAt = i
			}
			if k, _ := row[tab.key].(string); strings.EqualFold(k, id) {
				return i + 1
			}
			continue
		}
		if firstAt >= 0 {
			return firstAt
		}
		return i
	}
	if firstAt >= 0 {
		return firstAt
	}
	return len(rows)
}

// maxQueriesPerPage bounds the queries one page of a read makes, so that
// an activity's call stays short; a page may then come back empty with a
// Next.
const maxQueriesPerPage = 20

// rowRecords converts one row: one Record per distinct address in the
// configured columns (all of them when every is set, else the first), or
// none when the row has no address.
func (c *Client) rowRecords(tab table, row map[string]any, optedOut, inLists, every bool) ([]connectors.Record, error) {
	id, _ := row[tab.key].(string)
	if !guidPattern.MatchString(id) {
		return nil, fmt.Errorf("dynamics: a %s row without a valid %s", tab.logical, tab.key)
	}
	ref := connectors.RecordRef{Type: tab.logical, ID: strings.ToLower(id)}
	var out []connectors.Record
	seen := map[string]bool{}
	for _, col := range c.emails {
		e, _ := row[col].(string)
		k := connectors.EmailKey(e)
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, connectors.Record{Ref: ref, Email: strings.TrimSpace(e), OptedOut: optedOut, InLists: inLists})
		if !every {
			break
		}
	}
	return out, nil
}

// OptedOut pages through the records of q.Types opted out through q.Field.
//
// Without q.Lists it returns the opted-out records whose modifiedon is at
// or after q.Since (to the second), oldest first, per table.
//
// With q.Lists (marketing list ids) it returns, first, EVERY opted-out
// member of the lists with InLists true, whatever its modifiedon, and then
// the opted-out records modified since q.Since that are in none of them,
// with InLists false. Joining a list does not touch a record's modifiedon,
// so a watermark read alone would never find a record opted out long ago
// and added to a list today; reading the lists' opted-out members each run
// costs one query per list and 5,000 such members (the lists' opt-out
// condition is applied by Dataverse), and makes list changes safe.
//
// A record with several configured addresses (emailaddress1..3) is
// returned once per distinct address: the opt-out covers all of them.
func (c *Client) OptedOut(ctx context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	tabs, err := resolveTypes(q.Types)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	o, err := newOptOut("OptOutQuery.Field", q.Field)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	size, err := checkPageSize(q.PageSize)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	if len(q.Lists) > MaxLists {
		return connectors.RecordPage{}, fmt.Errorf("dynamics: Lists: %d marketing lists given, at most %d", len(q.Lists), MaxLists)
	}
	for _, l := range q.Lists {
		if err := checkList(l); err != nil {
			return connectors.RecordPage{}, fmt.Errorf("dynamics: Lists: %w", err)
		}
	}
	since := ""
	if !q.Since.IsZero() {
		since = datetime(q.Since)
	}
	fp := fingerprint("optedout", strings.Join(q.Types, ","), o.filter(), since, strings.Join(q.Lists, ","), strings.Join(c.emails, ","))
	st, err := c.decodeCursor(q.Cursor, fp)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	var m *membership
	off := 0
	if len(q.Lists) > 0 {
		off = 1
		if m, err = c.optedOutMembers(ctx, q.Lists, tabs, o, q.Cursor == "", q.ListsAsOf); err != nil {
			return connectors.RecordPage{}, err
		}
	}
	var out []connectors.Record
	first := true
	for queries := 0; st.P < off+len(tabs) && len(out) < size && queries < maxQueriesPerPage; first = false {
		if st.P < off {
			i := m.after(st.K)
			for ; i < len(m.rows) && (len(out) == 0 || len(out)+len(c.emails) <= size); i++ {
				r := m.rows[i]
				recs, err := c.rowRecords(tables[r.ref.Type], r.row, true, true, true)
				if err != nil {
					return connectors.RecordPage{}, err
				}
				out = append(out, recs...)
				st.K = r.ref.String()
			}
			if i < len(m.rows) {
				break // the page is full
			}
			st = cursorState{V: 1, F: fp, P: st.P + 1}
			continue
		}
		tab := tabs[st.P-off]
		var res collection
		batchURL, skip := "", 0
		kept, ok := batch{}, false
		if first && q.Cursor != "" {
			kept, ok = c.rest.Take(q.Cursor)
		}
		if ok {
			res, batchURL, skip = kept.res, kept.url, kept.skip
		} else {
			switch {
			case st.U != "":
				batchURL = st.U
			case st.N != "":
				batchURL = st.N
			default:
				filter := o.filter()
				if since != "" {
					filter += " and modifiedon ge " + since
				}
				sel := selectList(append(append([]string{tab.key}, c.emails...), o.col, "modifiedon")...)
				// A stable order: time, then id (reference A4).
				batchURL = c.queryURL(tab.set, sel, filter, "modifiedon asc,"+tab.key+" asc")
				st.Z = batchRows
			}
			// The chain's own page size (reference A4: resent unchanged); a
			// cursor from before batches asked a page's rows.
			asked := st.Z
			if asked == 0 {
				asked = max(1, size/len(c.emails))
			}
			queries++
			if _, err := c.getJSON(ctx, batchURL, http.Header{"Prefer": {"odata.maxpagesize=" + strconv.Itoa(asked)}}, &res); err != nil {
				return connectors.RecordPage{}, fmt.Errorf("dynamics: reading opted-out %ss: %w", tab.logical, err)
			}
			if st.U != "" {
				skip = resumeAt(res.Value, tab, st.T, st.K)
			}
		}
		rows := res.Value[min(skip, len(res.Value)):]
		took := 0
		for ; took < len(rows) && (len(out) == 0 || len(out)+len(c.emails) <= size); took++ {
			row := rows[took]
			recs, err := c.rowRecords(tab, row, o.optedOut(row), m == nil, true)
			if err != nil {
				return connectors.RecordPage{}, err
			}
			st.T, _ = row["modifiedon"].(string)
			st.K, _ = row[tab.key].(string)
			if len(recs) > 0 && m != nil && m.has(recs[0].Ref) {
				continue // returned with InLists in the first step
			}
			out = append(out, recs...)
		}
		if took < len(rows) {
			// The page is full inside this batch: the rest is kept for the
			// next page, which otherwise reads the batch again after the
			// last row returned (see resumeAt).
			st.U, st.N = batchURL, ""
			next := st.encode()
			c.rest.Put(next, batch{res: res, url: batchURL, skip: skip + took})
			return connectors.RecordPage{Records: out, Next: next}, nil
		}
		if res.NextLink != "" {
			next, err := c.follow(res.NextLink)
			if err != nil {
				return connectors.RecordPage{}, err
			}
			st.U, st.N = "", next
			continue
		}
		st = cursorState{V: 1, F: fp, P: st.P + 1}
	}
	page := connectors.RecordPage{Records: out}
	if st.P < off+len(tabs) {
		page.Next = st.encode()
	}
	return page, nil
}

// ListMembers pages through the members of q.Lists (or every record of
// q.Types when no list is given), modified at or after q.Since when it is
// set, with the columns q.Fields. OptedOut is true when the standard
// donotbulkemail (always read) or the integration's opt-out field says
// so: the caller must not subscribe such a record. Each record carries its
// first configured address; a record without one is left out. A record in
// two lists comes back twice.
func (c *Client) ListMembers(ctx context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	tabs, err := resolveTypes(q.Types)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	o, err := newOptOut("ListMembersQuery.Field", q.Field)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	std, _ := newOptOut("", connectors.OptOutField{Kind: connectors.OptOutStandard})
	size, err := checkPageSize(q.PageSize)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	for _, f := range q.Fields {
		if err := checkColumn(f); err != nil {
			return connectors.RecordPage{}, fmt.Errorf("dynamics: Fields: %w", err)
		}
	}
	for _, l := range q.Lists {
		if err := checkList(l); err != nil {
			return connectors.RecordPage{}, fmt.Errorf("dynamics: Lists: %w", err)
		}
	}
	since := ""
	if !q.Since.IsZero() {
		since = datetime(q.Since)
	}
	fp := fingerprint("members", strings.Join(q.Types, ","), strings.Join(q.Lists, ","), strings.Join(q.Fields, ","), o.filter(), since, strings.Join(c.emails, ","))
	st, err := c.decodeCursor(q.Cursor, fp)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	steps := len(tabs)
	if len(q.Lists) > 0 {
		steps = len(q.Lists)
	}
	var out []connectors.Record
	for queries := 0; st.P < steps && len(out) == 0 && queries < maxQueriesPerPage; queries++ {
		tab := table{}
		var meta listMeta
		if len(q.Lists) > 0 {
			if meta, err = c.listMeta(ctx, q.Lists[st.P]); err != nil {
				return connectors.RecordPage{}, err
			}
			if !meta.known || !slices.ContainsFunc(tabs, func(t table) bool { return t.logical == meta.tab.logical }) {
				st = cursorState{V: 1, F: fp, P: st.P + 1}
				continue
			}
			tab = meta.tab
		} else {
			tab = tabs[st.P]
		}
		sel := selectList(append(append(append([]string{tab.key}, c.emails...), std.col, o.col, "modifiedon"), q.Fields...)...)
		filter := ""
		var conds []fetchCond
		if since != "" {
			filter = "modifiedon ge " + since
			conds = []fetchCond{{attr: "modifiedon", op: "ge", value: since}}
		}
		var rows []map[string]any
		next, page := "", 0
		if len(q.Lists) > 0 {
			rows, next, page, err = c.listPage(ctx, meta, sel, filter, conds, size, st.N, st.G)
		} else {
			u := st.N
			if u == "" {
				u = c.queryURL(tab.set, sel, filter, "modifiedon asc,"+tab.key+" asc")
			}
			var res collection
			_, err = c.getJSON(ctx, u, http.Header{"Prefer": {"odata.maxpagesize=" + strconv.Itoa(size)}}, &res)
			if err == nil && res.NextLink != "" {
				next, err = c.follow(res.NextLink)
			}
			rows = res.Value
		}
		if err != nil {
			return connectors.RecordPage{}, err
		}
		for _, row := range rows {
			recs, err := c.rowRecords(tab, row, std.optedOut(row) || o.optedOut(row), true, false)
			if err != nil {
				return connectors.RecordPage{}, err
			}
			for i := range recs {
				recs[i].Fields = make(map[string]string, len(q.Fields))
				for _, f := range q.Fields {
					recs[i].Fields[f] = fieldString(lookup(row, f))
				}
			}
			out = append(out, recs...)
		}
		if next != "" || page > 0 {
			st.N, st.G = next, page
			continue
		}
		st = cursorState{V: 1, F: fp, P: st.P + 1}
	}
	res := connectors.RecordPage{Records: out}
	if st.P < steps {
		res.Next = st.encode()
	}
	return res, nil
}

// maxFilter bounds the URL-encoded length of one FindByEmail filter: the
// query goes in the URL of a GET inside a $batch, which may be up to 64 KB
// (reference A6). 200 addresses in one column fit one filter; a nextLink
// repeating it stays well inside the limit too.
const maxFilter = 16_000

// FindByEmail returns every record of the types holding one of the
// addresses in one of the configured columns, with one query per type
// (more when the addresses do not fit one filter), all of them GET parts
// of one $batch: one call a lookup (lookupBatch). Dataverse compares strings case-insensitively (reference
// A4); every spelling of an address (connectors.EmailSpellings) is asked
// for and the rows are matched back by connectors.EmailKey. Each record's
// Email is the address as the caller gave it; a record holding two asked
// addresses comes back once for each.
func (c *Client) FindByEmail(ctx context.Context, types []string, field connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	tabs, err := resolveTypes(types)
	if err != nil {
		return nil, err
	}
	o, err := newOptOut("field", field)
	if err != nil {
		return nil, err
	}
	if len(emails) > c.MaxBatch() {
		return nil, fmt.Errorf("dynamics: emails: %d addresses given, at most %d a call", len(emails), c.MaxBatch())
	}
	asked := map[string]string{}
	var spellings []string
	for _, e := range emails {
		k := connectors.EmailKey(e)
		if k == "" {
			continue
		}
		if _, dup := asked[k]; dup {
			continue
		}
		asked[k] = e
		spellings = append(spellings, connectors.EmailSpellings(e)...)
	}
	if len(spellings) == 0 {
		return nil, nil
	}
	var chunks []string
	var b strings.Builder
	for _, sp := range spellings {
		for _, col := range c.emails {
			cond := col + " eq " + quote(sp)
			if b.Len() > 0 && len(escape(b.String()))+len(escape(cond))+8 > maxFilter {
				chunks = append(chunks, b.String())
				b.Reset()
			}
			if b.Len() > 0 {
				b.WriteString(" or ")
			}
			b.WriteString(cond)
		}
	}
	chunks = append(chunks, b.String())
	type job struct {
		tab    table
		filter string
	}
	var jobs []job
	for _, t := range tabs {
		for _, ch := range chunks {
			jobs = append(jobs, job{tab: t, filter: ch})
		}
	}
	type query struct {
		tab table
		url string
	}
	qs := make([]query, len(jobs))
	for i, j := range jobs {
		sel := selectList(append(append([]string{j.tab.key}, c.emails...), o.col, "modifiedon")...)
		qs[i] = query{j.tab, c.queryURL(j.tab.set, sel, j.filter, "")}
	}
	var found []connectors.Record
	for len(qs) > 0 {
		urls := make([]string, len(qs))
		for i, q := range qs {
			urls[i] = q.url
		}
		cols, err := c.lookupBatch(ctx, urls)
		if err != nil {
			return nil, fmt.Errorf("dynamics: finding records by address: %w", err)
		}
		// A query with more rows than one answer holds goes on from its
		// nextLink, in the next $batch with the others'.
		var more []query
		for i, col := range cols {
			rs, err := matchRows(qs[i].tab, col.Value, c.emails, o, asked)
			if err != nil {
				return nil, err
			}
			found = append(found, rs...)
			if col.NextLink != "" {
				u, err := c.follow(col.NextLink)
				if err != nil {
					return nil, err
				}
				more = append(more, query{qs[i].tab, u})
			}
		}
		qs = more
	}
	var out []connectors.Record
	seen := map[string]bool{}
	for _, r := range found {
		k := r.Ref.String() + "\x00" + connectors.EmailKey(r.Email)
		if !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// matchRows keeps the rows of tab holding an asked address in one of
// the columns, once per asked address they hold.
func matchRows(tab table, rows []map[string]any, columns []string, o optOut, asked map[string]string) ([]connectors.Record, error) {
	var out []connectors.Record
	for _, row := range rows {
		id, _ := row[tab.key].(string)
		if !guidPattern.MatchString(id) {
			return nil, fmt.Errorf("dynamics: a %s row without a valid %s", tab.logical, tab.key)
		}
		for _, col := range columns {
			v, _ := row[col].(string)
			if e, ok := asked[connectors.EmailKey(v)]; ok && v != "" {
				out = append(out, connectors.Record{Ref: connectors.RecordRef{Type: tab.logical, ID: strings.ToLower(id)}, Email: e, OptedOut: o.optedOut(row), InLists: true})
			}
		}
	}
	return out, nil
}

// lookupBatch reads the queries (Web API URLs on the environment) as GET
// parts of one $batch, each asking up to 1,000 rows (the rest follows from
// its nextLink: an address held by thousands of records keeps a batch's
// answer to a few megabytes), and returns their
// answers in order. The batch stops at the first query that fails (no
// continue-on-error: a lookup is whole or retried), and that query's
// answer is the error.
func (c *Client) lookupBatch(ctx context.Context, urls []string) ([]collection, error) {
	parts := make([]string, len(urls))
	for i, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("dynamics: a query URL: %w", err)
		}
		// If-None-Match: null, as on every read: never a cached answer (reference A2).
		parts[i] = "GET " + u.RequestURI() + " HTTP/1.1\r\nAccept: application/json\r\nPrefer: odata.maxpagesize=1000\r\nIf-None-Match: null\r\n\r\n"
	}
	answers, err := c.batch(ctx, parts, false)
	if err != nil {
		return nil, err
	}
	out := make([]collection, len(answers))
	for i, a := range answers {
		if a.status < 200 || a.status > 299 {
			return nil, c.classify(a)
		}
		if err := json.Unmarshal(a.body, &out[i]); err != nil {
			return nil, fmt.Errorf("dynamics: $batch part %d: %w", i+1, err)
		}
	}
	if len(answers) < len(urls) {
		return nil, fmt.Errorf("dynamics: $batch answered %d parts for %d queries", len(answers), len(urls))
	}
	return out, nil
}

// MaxBatch is the records a write or the addresses a lookup takes: a
// $batch may hold 1,000 requests (reference A6); 200 keep a batch's
// execution time, which service protection counts, short.
func (c *Client) MaxBatch() int { return 200 }

// SetOptOut writes the opt-out on each record: one $batch with
// continue-on-error, one PATCH with If-Match: * per record (so a deleted
// record is a 404, never re-created), one result per record. Setting the
// opt-out again is harmless, so the write is idempotent; it never writes
// the value that clears an opt-out. Note that Dataverse still moves the
// record's modifiedon.
func (c *Client) SetOptOut(ctx context.Context, field connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	o, err := newOptOut("field", field)
	if err != nil {
		return connectors.BatchResult{}, err
	}
	return c.writeFlag(ctx, o.col, o.val, refs)
}

// SetFlag sets the custom boolean column (the cleaned field) to true on
// each record, with the same $batch SetOptOut uses.
func (c *Client) SetFlag(ctx context.Context, field string, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	if err := checkCustomOptOut(field); err != nil {
		return connectors.BatchResult{}, fmt.Errorf("dynamics: field: %w", err)
	}
	return c.writeFlag(ctx, field, true, refs)
}

package netsuite

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// maxBatch bounds FindByEmail and SetOptOut: 200 quoted addresses keep a
// SuiteQL statement around 10 KB.
const maxBatch = 200

// idChunk is how many internal ids go in one "id IN (...)" list.
const idChunk = 500

// maxQueriesPerPage bounds the requests one page call makes when its rows
// are filtered away, so that a call returns (possibly short, even empty,
// with a Next) in bounded time and the caller can heartbeat.
const maxQueriesPerPage = 8

// MaxBatch is the largest batch FindByEmail and SetOptOut take.
func (c *Client) MaxBatch() int { return maxBatch }

// SplitCursor splits the rest of an OptedOut or ListMembers read into as
// many parts as the account's concurrency (Options.Concurrency; at most
// parts), by internal id modulo that number (SuiteQL's MOD, which Oracle
// lists among SuiteQL's functions), so that they are read at once: a
// keyset read is otherwise a chain of round trips. Each part keeps the
// keyset order and its guarantee (a record modified mid-read moves later
// in its own part, to be read again, never skipped). A part is not split
// again. It makes no call.
func (c *Client) SplitCursor(_ context.Context, s string, parts int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var k cursor
	n := min(parts, c.concurrency)
	if s == "" || err != nil || json.Unmarshal(b, &k) != nil || k.Mod != 0 || n < 2 {
		return nil, nil
	}
	out := make([]string, n)
	for i := range out {
		p := k
		p.Mod, p.Rem = int64(n), int64(i)
		out[i] = p.encode()
	}
	return out, nil
}

// recordTypes are the entity types this connector reads and writes; their
// REST path names and SuiteQL table names coincide.
var recordTypes = []string{"customer", "contact"}

func checkTypes(types []string) ([]string, error) {
	if len(types) == 0 {
		return nil, errors.New("netsuite: Types is empty; give customer and/or contact")
	}
	out := make([]string, 0, len(types))
	for _, t := range types {
		lt := strings.ToLower(t)
		if !slices.Contains(recordTypes, lt) {
			return nil, fmt.Errorf("netsuite: Types: %q is not customer or contact", t)
		}
		if !slices.Contains(out, lt) {
			out = append(out, lt)
		}
	}
	return out, nil
}

func checkPageSize(n int) (int, error) {
	switch {
	case n == 0:
		return connectors.MaxPageSize, nil
	case n < 0 || n > connectors.MaxPageSize:
		return 0, fmt.Errorf("netsuite: PageSize %d is not in 1..%d", n, connectors.MaxPageSize)
	}
	return n, nil
}

// optOut is how one OptOutField reads and writes in NetSuite.
type optOut struct {
	kind connectors.OptOutKind
	// column is the SuiteQL column (lower case).
	column string
	// property is the REST record property.
	property string
	// where is the SuiteQL condition "this record is opted out".
	where string
}

func newOptOut(f connectors.OptOutField) (optOut, error) {
	switch f.Kind {
	case connectors.OptOutStandard:
		return optOut{kind: f.Kind, column: "globalsubscriptionstatus", property: "globalSubscriptionStatus",
			// 2 = Soft Opt-Out, 4 = Confirmed Opt-Out.
			where: "globalsubscriptionstatus IN ('2', '4')"}, nil
	case connectors.OptOutCustom, connectors.OptOutInverted:
		if !identPattern.MatchString(f.Field) {
			return optOut{}, fmt.Errorf("netsuite: Field.Field %q is not a custom field id such as custentity_optout", f.Field)
		}
		col := strings.ToLower(f.Field)
		o := optOut{kind: f.Kind, column: col, property: f.Field, where: col + " = 'T'"}
		if f.Kind == connectors.OptOutInverted {
			// An opt-in checkbox never set is as good as cleared.
			o.where = "(" + col + " = 'F' OR " + col + " IS NULL)"
		}
		return o, nil
	}
	return optOut{}, fmt.Errorf("netsuite: Field.Kind %q is not standard, custom or inverted", f.Kind)
}

// optedOut reads the opt-out from a row holding o.column.
func (o optOut) optedOut(r row) bool {
	v := r[o.column]
	switch o.kind {
	case connectors.OptOutStandard:
		return v == "2" || v == "4"
	case connectors.OptOutCustom:
		return v == "T"
	}
	return v != "T"
}

// patch is the body that opts a record out.
func (o optOut) patch() map[string]any {
	switch o.kind {
	case connectors.OptOutStandard:
		// Soft Opt-Out: only the recipient may set the Confirmed statuses.
		return map[string]any{o.property: map[string]string{"id": "2"}}
	case connectors.OptOutCustom:
		return map[string]any{o.property: true}
	}
	return map[string]any{o.property: false}
}

func (c *Client) toRecord(t string, r row, o optOut, inLists bool) connectors.Record {
	return connectors.Record{
		Ref:      connectors.RecordRef{Type: t, ID: r["id"]},
		Email:    r["email"],
		OptedOut: o.optedOut(r),
		InLists:  inLists,
	}
}

// OptedOut pages through the records of q.Types opted out through q.Field.
//
// Without q.Lists it returns the opted-out records whose lastmodifieddate
// is at or after q.Since (to the second, in Options.TimeZone; near an
// autumn change of clocks, from an hour or two before q.Since: see
// sinceWallClock), all with InLists true. The caller's watermark carries
// the margin for clock skew.
//
// With q.Lists (saved search ids) it returns, first, EVERY opted-out member
// of the saved searches with InLists true, whatever its modification date,
// and then the opted-out records modified since q.Since that are in none of
// them, with InLists false. A saved search has no "added at" time: a record
// opted out long ago and added to a search today has an old
// lastmodifieddate, so a watermark read alone would never find it. Reading
// all opted-out members each run costs one SuiteQL query per 500 members
// and makes list changes safe. A record that joins a search while a run is
// between the two phases may be left out of both; the next run finds it in
// the first.
//
// Paging is keyset (by member id, then by lastmodifieddate and id), not by
// offset, because a record modified mid-read would otherwise move and make
// another one skip. A page can come back short or empty with a Next.
func (c *Client) OptedOut(ctx context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	types, err := checkTypes(q.Types)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	o, err := newOptOut(q.Field)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	size, err := checkPageSize(q.PageSize)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	fp := fingerprint("optedout", strings.Join(types, ","), string(o.kind), o.column, q.Since.UTC().Format(time.RFC3339Nano), strings.Join(q.Lists, ","))
	k, err := decodeCursor(q.Cursor, fp)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	var m *membership
	if len(q.Lists) > 0 {
		if m, err = c.members(ctx, q.Lists, types, q.Cursor == "", q.ListsAsOf); err != nil {
			return connectors.RecordPage{}, err
		}
	} else {
		k.Phase = 1
	}
	cols := "id, email"
	if o.column != "email" {
		cols += ", " + o.column
	}
	var out []connectors.Record
	for queries := 0; len(out) < size && queries < maxQueriesPerPage; queries++ {
		if k.Phase == 1 && k.Type >= len(types) {
			return connectors.RecordPage{Records: out}, nil
		}
		if k.Phase == 0 && k.Type >= len(types) {
			k = cursor{Query: fp, Phase: 1, Mod: k.Mod, Rem: k.Rem}
			continue
		}
		t := types[k.Type]
		if k.Phase == 0 {
			ids := m.after(t, k.ID, min(idChunk, size-len(out)), k)
			if len(ids) == 0 {
				k = cursor{Query: fp, Phase: 0, Type: k.Type + 1, Mod: k.Mod, Rem: k.Rem}
				continue
			}
			rows, err := c.suiteQLAll(ctx, "SELECT "+cols+" FROM "+t+" WHERE id IN ("+idList(ids)+") AND "+o.where+" ORDER BY id")
			if err != nil {
				return connectors.RecordPage{}, err
			}
			for _, r := range rows {
				out = append(out, c.toRecord(t, r, o, true))
			}
			k.ID = ids[len(ids)-1]
			continue
		}
		where := o.where + k.part()
		if !q.Since.IsZero() {
			where += " AND lastmodifieddate >= " + c.sinceDate(q.Since)
		}
		lm := "TO_CHAR(lastmodifieddate, " + quote(dateFormat) + ")"
		if k.LastModified != "" {
			last, err := time.ParseInLocation(goDateFormat, k.LastModified, c.loc)
			if err != nil {
				return connectors.RecordPage{}, fmt.Errorf("netsuite: Cursor: %w", err)
			}
			// Rows are ordered by their modification second as a local
			// wall-clock string, then id: the rest are those of a later
			// string, or of the same one with a greater id. The keyset
			// compares those same strings, not dates, so that it agrees
			// with the order even in a fold, where wall-clock order is
			// not time order and a TO_DATE literal is ambiguous; and it
			// holds whether NetSuite keeps fractions of a second or not.
			// The date bound before it is only there to let NetSuite use
			// its index; sinceDate moves it back across a fold, so it
			// keeps every row the keyset wants whichever pass of an
			// ambiguous time the parse above or NetSuite picks.
			where += " AND lastmodifieddate >= " + c.sinceDate(last) +
				" AND (" + lm + " > " + quote(k.LastModified) + " OR (" + lm + " = " + quote(k.LastModified) + " AND id > " + strconv.FormatInt(k.ID, 10) + "))"
		}
		page, err := c.suiteQL(ctx, "SELECT "+cols+", "+lm+" AS lastmodified FROM "+t+" WHERE "+where+" ORDER BY "+lm+", id", size-len(out), 0)
		if err != nil {
			return connectors.RecordPage{}, err
		}
		for _, r := range page.Items {
			ref := connectors.RecordRef{Type: t, ID: r["id"]}
			if m != nil && m.has(ref) {
				continue // returned with InLists in the first phase
			}
			out = append(out, c.toRecord(t, r, o, m == nil))
		}
		if n := len(page.Items); n > 0 {
			last := page.Items[n-1]
			id, err := strconv.ParseInt(last["id"], 10, 64)
			if err != nil || last["lastmodified"] == "" {
				return connectors.RecordPage{}, fmt.Errorf("netsuite: SuiteQL row without id or lastmodified")
			}
			k.LastModified, k.ID = last["lastmodified"], id
		}
		if !page.HasMore {
			k = cursor{Query: fp, Phase: 1, Type: k.Type + 1, Mod: k.Mod, Rem: k.Rem}
		}
	}
	if k.Phase == 1 && k.Type >= len(types) {
		return connectors.RecordPage{Records: out}, nil
	}
	return connectors.RecordPage{Records: out, Next: k.encode()}, nil
}

// FindByEmail returns every customer and/or contact whose email is one of
// emails. Duplicates are the rule in NetSuite (a person as a customer and as
// a contact of a company, or entered twice), and all of them are returned.
// InLists is true: no lists were asked for.
//
// An address matches whatever its case, surrounding blanks, Unicode form or
// domain spelling (U-label or punycode) on either side: two addresses match
// when their connectors.EmailKey is the same. SuiteQL compares strings
// case-sensitively, as Oracle does, so the query lower-cases and trims the
// column (LTRIM and RTRIM, which SuiteQL lists; they trim blanks, not tabs)
// and asks for every lower-cased spelling of each address
// (connectors.EmailSpellings); the rows are then matched back by key.
//
// Each record's Email is the address as the caller gave it, the first one
// that matched, not the record's own spelling ("ANN@Example.com "), so
// that the caller can key the results by what it asked for.
func (c *Client) FindByEmail(ctx context.Context, types []string, field connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	types, err := checkTypes(types)
	if err != nil {
		return nil, err
	}
	o, err := newOptOut(field)
	if err != nil {
		return nil, err
	}
	if len(emails) > maxBatch {
		return nil, fmt.Errorf("netsuite: %d emails is over the batch of %d", len(emails), maxBatch)
	}
	asked := map[string]string{} // key -> the caller's spelling
	var lits []string
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
			lits = append(lits, quote(sp))
		}
	}
	if len(lits) == 0 {
		return nil, nil
	}
	// Oracle takes at most 1000 expressions in one IN list; 200 addresses
	// have at most 1,200 spellings, but nothing here should depend on that.
	var in []string
	for len(lits) > 0 {
		n := min(len(lits), 1000)
		in = append(in, "LOWER(LTRIM(RTRIM(email))) IN ("+strings.Join(lits[:n], ", ")+")")
		lits = lits[n:]
	}
	var out []connectors.Record
	for _, t := range types {
		rows, err := c.suiteQLAll(ctx, "SELECT id, email, "+o.column+" FROM "+t+" WHERE "+strings.Join(in, " OR ")+" ORDER BY id")
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			e, ok := asked[connectors.EmailKey(r["email"])]
			if !ok {
				continue
			}
			rec := c.toRecord(t, r, o, true)
			rec.Email = e
			out = append(out, rec)
		}
	}
	return out, nil
}

// SetOptOut opts each record out through field, with one PATCH per record
// (NetSuite's collection PATCH is async only), at most Options.Concurrency
// at a time.
//
// It first reads the records' current value with SuiteQL and writes only
// those not already opted out; those are counted as Written. This is what
// keeps a Confirmed Opt-Out ("4", set by the person) from being downgraded
// to the Soft Opt-Out ("2") an integration may write, and it spares a
// pointless lastmodifieddate bump that would echo the record into the next
// watermark read. A record that turns "4" between the read and the write
// (a window of a second) would be written "2"; it stays opted out.
//
// The PATCH asks for X-NetSuite-PropertyNameValidation: error, so a custom
// field id that does not exist fails loudly instead of being ignored with a
// warning (NetSuite's default).
//
// A record that cannot be written (not found, invalid, rate limited after
// retries) is a Failure naming its Record; the others stand. Rejected
// credentials abort the whole call with an error.
func (c *Client) SetOptOut(ctx context.Context, field connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	o, err := newOptOut(field)
	if err != nil {
		return res, err
	}
	if len(refs) > maxBatch {
		return res, fmt.Errorf("netsuite: %d records is over the batch of %d", len(refs), maxBatch)
	}
	byType := map[string][]int64{}
	var todo []connectors.RecordRef
	seen := map[connectors.RecordRef]bool{}
	for _, ref := range refs {
		id, err := strconv.ParseInt(ref.ID, 10, 64)
		if !slices.Contains(recordTypes, ref.Type) || err != nil || id <= 0 {
			res.Failed = append(res.Failed, connectors.Failure{Record: ref, Code: "INVALID_REFERENCE",
				Message: "not a customer or contact with a numeric internal id"})
			continue
		}
		if seen[ref] {
			continue
		}
		seen[ref] = true
		byType[ref.Type] = append(byType[ref.Type], id)
		todo = append(todo, ref)
	}
	already := map[connectors.RecordRef]bool{}
	for _, t := range recordTypes {
		ids := byType[t]
		for len(ids) > 0 {
			n := min(len(ids), idChunk)
			rows, err := c.suiteQLAll(ctx, "SELECT id, "+o.column+" FROM "+t+" WHERE id IN ("+idList(ids[:n])+")")
			if err != nil {
				return res, fmt.Errorf("netsuite: reading the current opt-out before writing: %w", err)
			}
			for _, r := range rows {
				if o.optedOut(r) {
					already[connectors.RecordRef{Type: t, ID: r["id"]}] = true
				}
			}
			ids = ids[n:]
		}
	}

	var send []connectors.RecordRef
	for _, ref := range todo {
		if already[ref] {
			res.Written++
		} else {
			send = append(send, ref)
		}
	}
	body := o.patch()
	header := http.Header{"X-Netsuite-Propertynamevalidation": {"error"}}
	sent, err := connectors.WriteEach(ctx, c.concurrency, send, func(ctx context.Context, ref connectors.RecordRef) error {
		_, _, err := c.request(ctx, http.MethodPatch, "/services/rest/record/v1/"+ref.Type+"/"+ref.ID, nil, body, header)
		return err
	})
	res.Written += sent.Written
	res.Failed = append(res.Failed, sent.Failed...)
	if err != nil {
		return res, err
	}
	slices.SortFunc(res.Failed, func(a, b connectors.Failure) int { return strings.Compare(a.Record.String(), b.Record.String()) })
	return res, nil
}

// SetFlag sets the custom boolean field on each record (the cleaned
// field), as SetOptOut writes a custom opt-out: read first, then one PATCH
// per record not already set.
func (c *Client) SetFlag(ctx context.Context, field string, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	return c.SetOptOut(ctx, connectors.OptOutField{Kind: connectors.OptOutCustom, Field: field}, refs)
}

// ListMembers pages through the members of q.Lists (or all records of
// q.Types when no list is given), modified at or after q.Since when it is
// set (read as OptedOut reads it, widened across an autumn change of
// clocks), with the SuiteQL columns q.Fields (keyed as given). OptedOut is true
// when the standard globalSubscriptionStatus (always read) or the
// integration's opt-out field q.Field says so: the caller must not
// subscribe such a record.
func (c *Client) ListMembers(ctx context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	types, err := checkTypes(q.Types)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	size, err := checkPageSize(q.PageSize)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	cols := []string{"id", "email", "globalsubscriptionstatus"}
	std, _ := newOptOut(connectors.OptOutField{Kind: connectors.OptOutStandard})
	mapped := std
	if q.Field.Kind != "" {
		if mapped, err = newOptOut(q.Field); err != nil {
			return connectors.RecordPage{}, err
		}
		if !slices.Contains(cols, mapped.column) {
			cols = append(cols, mapped.column)
		}
	}
	for _, f := range q.Fields {
		if !identPattern.MatchString(f) {
			return connectors.RecordPage{}, fmt.Errorf("netsuite: Fields: %q is not a SuiteQL column name", f)
		}
		if !slices.Contains(cols, strings.ToLower(f)) {
			cols = append(cols, strings.ToLower(f))
		}
	}
	fp := fingerprint("members", strings.Join(types, ","), strings.Join(q.Lists, ","), strings.Join(cols, ","), q.Since.UTC().Format(time.RFC3339Nano))
	k, err := decodeCursor(q.Cursor, fp)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	var m *membership
	if len(q.Lists) > 0 {
		if m, err = c.members(ctx, q.Lists, types, q.Cursor == "", q.ListsAsOf); err != nil {
			return connectors.RecordPage{}, err
		}
	}
	since := ""
	if !q.Since.IsZero() {
		since = " AND lastmodifieddate >= " + c.sinceDate(q.Since)
	}
	var out []connectors.Record
	for queries := 0; len(out) < size && queries < maxQueriesPerPage && k.Type < len(types); queries++ {
		t := types[k.Type]
		var rows []row
		done := false
		if m != nil {
			ids := m.after(t, k.ID, min(idChunk, size-len(out)), k)
			if len(ids) > 0 {
				if rows, err = c.suiteQLAll(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+t+" WHERE id IN ("+idList(ids)+")"+since+" ORDER BY id"); err != nil {
					return connectors.RecordPage{}, err
				}
				k.ID = ids[len(ids)-1]
			}
			done = len(ids) == 0
		} else {
			page, err := c.suiteQL(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+t+" WHERE id > "+strconv.FormatInt(k.ID, 10)+k.part()+since+" ORDER BY id", size-len(out), 0)
			if err != nil {
				return connectors.RecordPage{}, err
			}
			rows, done = page.Items, !page.HasMore
			if n := len(rows); n > 0 {
				if k.ID, err = strconv.ParseInt(rows[n-1]["id"], 10, 64); err != nil {
					return connectors.RecordPage{}, fmt.Errorf("netsuite: SuiteQL row without id")
				}
			}
		}
		for _, r := range rows {
			rec := c.toRecord(t, r, std, true)
			rec.OptedOut = rec.OptedOut || mapped.optedOut(r)
			rec.Fields = make(map[string]string, len(q.Fields))
			for _, f := range q.Fields {
				if v, ok := r[strings.ToLower(f)]; ok {
					rec.Fields[f] = v
				}
			}
			out = append(out, rec)
		}
		if done {
			k = cursor{Query: fp, Type: k.Type + 1, Mod: k.Mod, Rem: k.Rem}
		}
	}
	if k.Type >= len(types) {
		return connectors.RecordPage{Records: out}, nil
	}
	return connectors.RecordPage{Records: out, Next: k.encode()}, nil
}

package salesforce

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// phase is one SOQL query of a paged read. A read is a fixed list of
// phases (one or more per record type), each read to its end in
// SystemModstamp, Id order before the next begins.
type phase struct {
	obj     object
	conds   []string // ANDed
	fields  []string // selected; Id, the address, the opt-out and SystemModstamp first
	optCol  string
	optVal  bool // the optCol value that means "opted out"
	inLists bool
	extra   []string // mapped fields returned in Record.Fields
}

// soql writes the phase's query; after is the keyset of the last record
// returned, to resume without a query locator.
func (p phase) soql(afterStamp, afterID string) string {
	conds := slices.Clone(p.conds)
	if afterStamp != "" {
		conds = append(conds, fmt.Sprintf("(SystemModstamp > %s OR (SystemModstamp = %s AND Id > %s))", afterStamp, afterStamp, quote(afterID)))
	}
	q := "SELECT " + strings.Join(p.fields, ", ") + " FROM " + p.obj.name
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	return q + " ORDER BY SystemModstamp, Id"
}

func selectList(fields ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range fields {
		if k := strings.ToLower(f); !seen[k] {
			seen[k] = true
			out = append(out, f)
		}
	}
	return out
}

// membership is the semi-join that finds o's records in the campaigns:
// CampaignMember.ContactId or LeadId against o's Id (a person account's
// PersonContactId). Null member fields are excluded so that the anti-join
// form is not at the mercy of NULL semantics.
func membership(o object, lists, extra string, not bool) string {
	op := " IN "
	if not {
		op = " NOT IN "
	}
	return o.memberKey + op + "(SELECT " + o.memberField + " FROM CampaignMember WHERE CampaignId IN " + lists + " AND " + o.memberField + " != null" + extra + ")"
}

// optOutPhases plans OptedOut.
//
// Campaign scoping uses semi-joins rather than reading CampaignMember:
// every opted-out record must come back anyway (those outside the
// campaigns with InLists false), so a semi-join ("in") and its anti-join
// ("out") split that one read in two and cost at most one more call than
// an unscoped read, however large the campaigns are. Reading members would
// add a pass over every member of the campaigns, which are usually far
// larger than the set of recent opt-outs, and would need the membership
// held between pages. Only a campaign list too long for one URL would tip
// the balance; campaignIDs caps it.
//
// A record that opted out long ago and joined a campaign since q.Since is
// not picked up by SystemModstamp: adding a CampaignMember does not touch
// the Contact or Lead. CampaignMember keeps its own CreatedDate, so a third
// phase ("joined") returns opted-out records last modified before q.Since
// whose membership was created at or after it; the SystemModstamp bound
// keeps it disjoint from "in".
func (c *Client) optOutPhases(q connectors.OptOutQuery) ([]phase, error) {
	objs, err := resolveTypes(q.Types)
	if err != nil {
		return nil, err
	}
	if err := validOptOutField("OptOutQuery.Field", q.Field); err != nil {
		return nil, err
	}
	var lists string
	if len(q.Lists) > 0 {
		if lists, err = campaignIDs(q.Lists); err != nil {
			return nil, err
		}
	}
	var out []phase
	for _, o := range objs {
		col, val := optOutColumn(o, q.Field)
		base := phase{obj: o, fields: selectList("Id", o.email, col, "SystemModstamp"), optCol: col, optVal: val, inLists: true}
		base.conds = []string{col + " = " + strconv.FormatBool(val)}
		if o.filter != "" {
			base.conds = append(base.conds, o.filter)
		}
		// ">=": a record stamped in the watermark's own second is read
		// twice rather than missed.
		since := ""
		if !q.Since.IsZero() {
			since = datetime(q.Since)
		}
		with := func(p phase, conds ...string) phase {
			p.conds = append(slices.Clone(p.conds), conds...)
			return p
		}
		sinceCond := []string{}
		if since != "" {
			sinceCond = append(sinceCond, "SystemModstamp >= "+since)
		}
		if lists == "" {
			out = append(out, with(base, sinceCond...))
			continue
		}
		out = append(out, with(base, append(sinceCond, membership(o, lists, "", false))...))
		if since != "" {
			out = append(out, with(base, "SystemModstamp < "+since, membership(o, lists, " AND CreatedDate >= "+since, false)))
		}
		outside := with(base, append(sinceCond, membership(o, lists, "", true))...)
		outside.inLists = false
		out = append(out, outside)
	}
	return out, nil
}

// listPhases plans ListMembers: the campaigns' members (or every record of
// the types), with the same "joined" phase so that a member added since
// q.Since gets its fields pushed.
func (c *Client) listPhases(q connectors.ListMembersQuery) ([]phase, error) {
	objs, err := resolveTypes(q.Types)
	if err != nil {
		return nil, err
	}
	for _, f := range q.Fields {
		if err := validFieldName(f); err != nil {
			return nil, fmt.Errorf("salesforce: Fields: %w", err)
		}
	}
	optOut := q.Field
	if optOut.Kind == "" {
		optOut.Kind = connectors.OptOutStandard
	}
	if err := validOptOutField("ListMembersQuery.Field", optOut); err != nil {
		return nil, err
	}
	var lists string
	if len(q.Lists) > 0 {
		if lists, err = campaignIDs(q.Lists); err != nil {
			return nil, err
		}
	}
	since := ""
	if !q.Since.IsZero() {
		since = datetime(q.Since)
	}
	var out []phase
	for _, o := range objs {
		col, val := optOutColumn(o, optOut)
		p := phase{obj: o, fields: selectList(append([]string{"Id", o.email, col, "SystemModstamp"}, q.Fields...)...), optCol: col, optVal: val, inLists: true, extra: q.Fields}
		if o.filter != "" {
			p.conds = []string{o.filter}
		}
		sinceCond := []string{}
		if since != "" {
			sinceCond = []string{"SystemModstamp >= " + since}
		}
		if lists == "" {
			p.conds = append(p.conds, sinceCond...)
			out = append(out, p)
			continue
		}
		in := p
		in.conds = append(slices.Clone(p.conds), append(sinceCond, membership(o, lists, "", false))...)
		out = append(out, in)
		if since != "" {
			joined := p
			joined.conds = append(slices.Clone(p.conds), "SystemModstamp < "+since, membership(o, lists, " AND CreatedDate >= "+since, false))
			out = append(out, joined)
		}
	}
	return out, nil
}

// OptedOut pages through opted-out Contacts, Leads and person Accounts
// modified since q.Since (and, with q.Lists, those that joined one of the
// campaigns since), oldest change first within each type.
func (c *Client) OptedOut(ctx context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	phases, err := c.optOutPhases(q)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	return c.page(ctx, phases, q.Cursor, q.PageSize)
}

// ListMembers pages through the campaigns' members (or all records of the
// types) with the mapped fields. Record.OptedOut follows q.Field (the
// standard HasOptedOutOfEmail when unset).
func (c *Client) ListMembers(ctx context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	phases, err := c.listPhases(q)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	return c.page(ctx, phases, q.Cursor, q.PageSize)
}

// cursorState is the opaque cursor. It prefers the query locator
// (nextRecordsUrl) and keeps the keyset of the last record returned, so a
// locator that is gone (idle for 15 minutes, or opened by a session that
// has since been replaced) costs one fresh query instead of a restart.
type cursorState struct {
	V int    `json:"v"`
	F string `json:"f"`           // fingerprint of the planned queries
	P int    `json:"p"`           // phase
	U string `json:"u,omitempty"` // locator batch to read next (nextRecordsUrl)
	S int    `json:"s,omitempty"` // records of that batch already returned
	M string `json:"m,omitempty"` // SystemModstamp of the last record returned (SOQL literal)
	I string `json:"i,omitempty"` // Id of the last record returned
}

func fingerprint(phases []phase) string {
	h := fnv.New64a()
	for _, p := range phases {
		_, _ = h.Write([]byte(p.soql("", "") + "\x00"))
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func (s cursorState) encode() string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(raw, fp string) (cursorState, error) {
	st := cursorState{V: 1, F: fp}
	if raw == "" {
		return st, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil || st.V != 1 {
		return st, fmt.Errorf("salesforce: Cursor: %w: not a cursor of this connector", connectors.ErrInvalid)
	}
	if st.F != fp {
		return st, fmt.Errorf("salesforce: Cursor: %w: the cursor belongs to a different query", connectors.ErrInvalid)
	}
	// The locator is only ever a path on the instance; anything else would
	// send the bearer token elsewhere.
	if st.U != "" && (!strings.HasPrefix(st.U, "/services/data/") || !strings.Contains(st.U, "/query/") || strings.ContainsAny(st.U, "?#") || strings.Contains(st.U, "..")) {
		return st, fmt.Errorf("salesforce: Cursor: %w: bad locator", connectors.ErrInvalid)
	}
	if st.M != "" && !stampPattern(st.M) || st.I != "" && !idPattern.MatchString(st.I) || st.P < 0 || st.S < 0 {
		return st, fmt.Errorf("salesforce: Cursor: %w: bad keyset", connectors.ErrInvalid)
	}
	return st, nil
}

func stampPattern(s string) bool {
	_, err := parseStamp(s)
	return err == nil && strings.HasSuffix(s, "Z") && !strings.ContainsAny(s, " '")
}

type queryResult struct {
	TotalSize      int              `json:"totalSize"`
	Done           bool             `json:"done"`
	NextRecordsURL string           `json:"nextRecordsUrl"`
	Records        []map[string]any `json:"records"`
}

// UnmarshalJSON refuses an answer that is not a query result: one always
// has "records" ([] when empty) and "done", and a batch that is not the
// last names the next one. An answer without them (null, {}, an error
// answered 2xx) must never read as "no rows" or as the last batch, which
// would end a read or a lookup as if nothing were left and lose the
// opt-outs it did not return.
func (r *queryResult) UnmarshalJSON(b []byte) error {
	type plain queryResult
	var p struct {
		plain
		Done *bool `json:"done"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	switch {
	case p.Records == nil:
		return errors.New("a query answer without a records array")
	case p.Done == nil:
		return errors.New("a query answer without done")
	case !*p.Done && p.NextRecordsURL == "":
		return errors.New("a query answer that is not done and names no next batch")
	}
	p.plain.Done = *p.Done
	*r = queryResult(p.plain)
	return nil
}

func (c *Client) query(ctx context.Context, soql string, batch int) (queryResult, error) {
	var res queryResult
	h := http.Header{}
	if batch > 0 {
		h.Set("Sforce-Query-Options", "batchSize="+strconv.Itoa(min(max(batch, 200), 2000)))
	}
	err := c.do(ctx, http.MethodGet, c.dataPath("/query")+"?q="+url.QueryEscape(soql), h, nil, &res)
	return res, err
}

func (c *Client) more(ctx context.Context, next string) (queryResult, error) {
	var res queryResult
	err := c.do(ctx, http.MethodGet, next, nil, nil, &res)
	return res, err
}

// locatorLost reports an error that means the query locator can no longer
// be read, though the credentials are good.
func locatorLost(err error) bool {
	var e *connectors.APIError
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == "INVALID_QUERY_LOCATOR" || e.Code == "INVALID_SESSION_ID" || e.Status == http.StatusNotFound
}

// page reads up to pageSize records across the phases, resuming at cursor.
// A page ends at a phase boundary once it holds records, so that no batch
// is fetched only to be thrown away.
func (c *Client) page(ctx context.Context, phases []phase, cursor string, pageSize int) (connectors.RecordPage, error) {
	if pageSize < 0 || pageSize > connectors.MaxPageSize {
		return connectors.RecordPage{}, fmt.Errorf("salesforce: PageSize %d is outside 0..%d", pageSize, connectors.MaxPageSize)
	}
	if pageSize == 0 {
		pageSize = connectors.MaxPageSize
	}
	fp := fingerprint(phases)
	st, err := decodeCursor(cursor, fp)
	if err != nil {
		return connectors.RecordPage{}, err
	}
	var out []connectors.Record
	for first := true; st.P < len(phases); first = false {
		ph := phases[st.P]
		var res queryResult
		batchURL, skip := st.U, st.S
		b, kept := leftover{}, false
		if first && cursor != "" {
			b, kept = c.rest.Take(cursor)
		}
		if kept {
			res, batchURL, skip = b.res, b.url, b.skip
		} else if st.U != "" {
			res, err = c.more(ctx, st.U)
			if err != nil && locatorLost(err) {
				// Resume from the keyset with a fresh query.
				c.logger().Warn("query locator lost; resuming from the last record returned", "object", ph.obj.name, "error", err.Error())
				st.U, st.S = "", 0
				continue
			}
		} else {
			// The largest batch: what a page leaves of it is kept (see leftovers).
			res, err = c.query(ctx, ph.soql(st.M, st.I), 2000)
			skip = 0
		}
		if err != nil {
			return connectors.RecordPage{}, err
		}
		rows := res.Records[min(skip, len(res.Records)):]
		take := min(pageSize-len(out), len(rows))
		for _, row := range rows[:take] {
			rec, stamp, err := ph.record(row)
			if err != nil {
				return connectors.RecordPage{}, err
			}
			out = append(out, rec)
			st.M, st.I = stamp, rec.Ref.ID
		}
		switch {
		case take < len(rows):
			// The page is full inside this batch: re-read the batch from
			// its locator next time, or, for a first batch (which has no
			// locator of its own), resume from the keyset.
			if batchURL != "" {
				st.U, st.S = batchURL, skip+take
			} else {
				st.U, st.S = "", 0
			}
			next := st.encode()
			c.rest.Put(next, leftover{res: res, url: batchURL, skip: skip + take})
			return connectors.RecordPage{Records: out, Next: next}, nil
		case !res.Done && res.NextRecordsURL != "":
			st.U, st.S = res.NextRecordsURL, 0
		default:
			st = cursorState{V: 1, F: fp, P: st.P + 1}
			if len(out) > 0 && st.P < len(phases) {
				return connectors.RecordPage{Records: out, Next: st.encode()}, nil
			}
		}
		if len(out) >= pageSize {
			break
		}
	}
	page := connectors.RecordPage{Records: out}
	if st.P < len(phases) {
		page.Next = st.encode()
	}
	return page, nil
}

// record converts one query row; stamp is its SystemModstamp as a SOQL
// literal, for the keyset.
func (p phase) record(row map[string]any) (connectors.Record, string, error) {
	id, _ := row["Id"].(string)
	if !idPattern.MatchString(id) {
		return connectors.Record{}, "", fmt.Errorf("salesforce: %s row without a valid Id", p.obj.name)
	}
	raw, _ := row["SystemModstamp"].(string)
	t, err := parseStamp(raw)
	if err != nil {
		return connectors.Record{}, "", fmt.Errorf("salesforce: %s/%s: SystemModstamp: %w", p.obj.name, id, err)
	}
	email, _ := row[p.obj.email].(string)
	v, _ := row[p.optCol].(bool)
	rec := connectors.Record{
		Ref:      connectors.RecordRef{Type: p.obj.name, ID: id},
		Email:    email,
		OptedOut: v == p.optVal,
		InLists:  p.inLists,
	}
	if len(p.extra) > 0 {
		rec.Fields = make(map[string]string, len(p.extra))
		for _, f := range p.extra {
			rec.Fields[f] = fieldString(lookup(row, f))
		}
	}
	return rec, datetime(t), nil
}

// lookup finds a field in a row; the API answers with the field's own
// spelling, which may differ in case from the configured name.
func lookup(row map[string]any, name string) any {
	if v, ok := row[name]; ok {
		return v
	}
	for k, v := range row {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// fieldString writes a field value for a marketing merge field; null is "".
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

// FindByEmail returns every record of the types holding one of the
// addresses, with one query per type (more when the addresses do not fit
// one URL).
//
// An address matches whatever its case, Unicode form or domain spelling
// (U-label or punycode) on either side: two addresses match when their
// connectors.EmailKey is the same. SOQL compares text case-insensitively
// but has no TRIM and does not normalise Unicode, so the query asks for
// every spelling of each address (connectors.EmailSpellings) and the rows
// are matched back by key. Salesforce keeps no white space around an email
// field's value (its save validates the format), so there is none to trim.
//
// Each record's Email is the address as the caller gave it, the first one
// that matched, not the record's own spelling, so that the caller can key
// the results by what it asked for.
func (c *Client) FindByEmail(ctx context.Context, types []string, field connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	objs, err := resolveTypes(types)
	if err != nil {
		return nil, err
	}
	if err := validOptOutField("field", field); err != nil {
		return nil, err
	}
	if len(emails) > c.MaxBatch() {
		return nil, fmt.Errorf("salesforce: emails: %d addresses given, at most %d a call", len(emails), c.MaxBatch())
	}
	asked := map[string]string{} // key -> the caller's spelling
	var quoted []string
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
			quoted = append(quoted, quote(sp))
		}
	}
	if len(quoted) == 0 {
		return nil, nil
	}
	var phases []phase
	for _, o := range objs {
		col, val := optOutColumn(o, field)
		for _, in := range inLists(quoted) {
			p := phase{obj: o, fields: selectList("Id", o.email, col, "SystemModstamp"), optCol: col, optVal: val, inLists: true}
			p.conds = []string{o.email + " IN (" + in + ")"}
			if o.filter != "" {
				p.conds = append(p.conds, o.filter)
			}
			phases = append(phases, p)
		}
	}
	// One query per record type (and per IN list), all at once: the org's
	// in-flight cap, shared by every call of the client, bounds them.
	recs := make([][]connectors.Record, len(phases))
	err = connectors.ForEach(ctx, 0, len(phases), func(ctx context.Context, i int) (err error) {
		recs[i], err = c.findAll(ctx, phases[i], asked)
		if locatorLost(err) {
			// The session changed between batches and took the locator
			// with it: read this type again from the start.
			recs[i], err = c.findAll(ctx, phases[i], asked)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []connectors.Record
	for _, r := range recs {
		out = append(out, r...)
	}
	return out, nil
}

// maxInList bounds the URL-encoded length of one FindByEmail IN list. The
// query goes in the URL of a GET, inside the REST URI limit (16,384 bytes,
// as campaignIDs counts it) with room for the rest of the query: 200
// ordinary ASCII addresses fit in one list, while the extra spellings of
// internationalised ones may take a second query.
const maxInList = 12_000

// inLists joins quoted literals into comma-separated lists whose encoded
// length stays under maxInList.
func inLists(quoted []string) []string {
	var out []string
	var b strings.Builder
	size := 0
	for _, q := range quoted {
		n := len(url.QueryEscape(q)) + len("%2C+")
		if b.Len() > 0 && size+n > maxInList {
			out = append(out, b.String())
			b.Reset()
			size = 0
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q)
		size += n
	}
	return append(out, b.String())
}

// findAll reads every row of one FindByEmail query, keeping the rows whose
// address was asked for, with the address as asked.
func (c *Client) findAll(ctx context.Context, p phase, asked map[string]string) ([]connectors.Record, error) {
	var out []connectors.Record
	res, err := c.query(ctx, p.soql("", ""), 2000)
	for {
		if err != nil {
			return nil, err
		}
		for _, row := range res.Records {
			rec, _, err := p.record(row)
			if err != nil {
				return nil, err
			}
			if e, ok := asked[connectors.EmailKey(rec.Email)]; ok {
				rec.Email = e
				out = append(out, rec)
			}
		}
		if res.Done || res.NextRecordsURL == "" {
			return out, nil
		}
		res, err = c.more(ctx, res.NextRecordsURL)
	}
}

type saveResult struct {
	ID      string `json:"id"`
	Success bool   `json:"success"`
	Errors  []struct {
		StatusCode string   `json:"statusCode"`
		Message    string   `json:"message"`
		Fields     []string `json:"fields"`
	} `json:"errors"`
}

// retryableCodes are per-record failures that a later run can clear.
var retryableCodes = map[string]bool{
	"UNABLE_TO_LOCK_ROW":                true,
	"REQUEST_RUNNING_TOO_LONG":          true,
	"SERVER_UNAVAILABLE":                true,
	"ALL_OR_NONE_OPERATION_ROLLED_BACK": true,
}

// SetOptOut writes the opt-out on each record with one sObject Collections
// update (allOrNone false: a failed record leaves the others written).
// Setting an opt-out that is already set succeeds, so the write is
// idempotent; note that Salesforce still moves the record's SystemModstamp.
func (c *Client) SetOptOut(ctx context.Context, field connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if err := validOptOutField("field", field); err != nil {
		return res, err
	}
	if len(refs) > c.MaxBatch() {
		return res, fmt.Errorf("salesforce: refs: %d records given, at most %d a call", len(refs), c.MaxBatch())
	}
	type item struct {
		ref connectors.RecordRef
		obj object
	}
	var items []item
	seen := map[string]bool{}
	for _, r := range refs {
		o, ok := objects[r.Type]
		switch {
		case !ok:
			res.Failed = append(res.Failed, connectors.Failure{Record: r, Code: "INVALID_TYPE", Message: fmt.Sprintf("record type %q is not Contact, Lead or Account", r.Type)})
			continue
		case !idPattern.MatchString(r.ID):
			res.Failed = append(res.Failed, connectors.Failure{Record: r, Code: "MALFORMED_ID", Message: fmt.Sprintf("%q is not a Salesforce record id", r.ID)})
			continue
		case seen[r.String()]:
			continue
		}
		seen[r.String()] = true
		items = append(items, item{ref: r, obj: o})
	}
	if len(items) == 0 {
		return res, nil
	}
	// Salesforce processes a mixed-type collection in chunks, one per run
	// of the same type, and refuses more than ten: grouping makes at most three.
	slices.SortStableFunc(items, func(a, b item) int { return strings.Compare(a.ref.Type, b.ref.Type) })
	records := make([]map[string]any, len(items))
	for i, it := range items {
		col, optedOutValue := optOutColumn(it.obj, field)
		records[i] = map[string]any{"attributes": map[string]string{"type": it.ref.Type}, "id": it.ref.ID, col: optedOutValue}
	}
	body, err := json.Marshal(map[string]any{"allOrNone": false, "records": records})
	if err != nil {
		return res, err
	}
	var results []saveResult
	if err := c.do(ctx, http.MethodPatch, c.dataPath("/composite/sobjects"), nil, body, &results); err != nil {
		return res, err
	}
	if len(results) != len(items) {
		return res, fmt.Errorf("salesforce: composite update answered %d results for %d records", len(results), len(items))
	}
	for i, r := range results {
		if r.Success {
			res.Written++
			continue
		}
		f := connectors.Failure{Record: items[i].ref, Code: "UNKNOWN"}
		var msgs []string
		for j, e := range r.Errors {
			if j == 0 {
				f.Code = e.StatusCode
			}
			msgs = append(msgs, httpx.Redact(e.Message))
		}
		f.Message = strings.Join(msgs, "; ")
		// A failure that gives no reason (an item null, {} or without
		// errors) is retried: only a code Salesforce names can make it final.
		f.Retryable = retryableCodes[f.Code] || len(r.Errors) == 0
		if len(r.Errors) == 0 {
			f.Message = "the composite answer gives no result for this record"
		}
		res.Failed = append(res.Failed, f)
	}
	return res, nil
}

// SetFlag sets the custom boolean field on each record (the cleaned
// field), with the same collection update SetOptOut uses.
func (c *Client) SetFlag(ctx context.Context, field string, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	return c.SetOptOut(ctx, connectors.OptOutField{Kind: connectors.OptOutCustom, Field: field}, refs)
}

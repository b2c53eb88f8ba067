package netsuite

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// suiteQLPath is the SuiteQL endpoint.
const suiteQLPath = "/services/rest/query/v1/suiteql"

// maxLimit is SuiteQL's (and the saved-search result's) largest page.
const maxLimit = 1000

// row is one result row: lower-case column name to string value. SuiteQL
// sends every value as a string ("T"/"F" for booleans) and leaves NULL
// columns out, so a missing key is a NULL.
type row map[string]string

// collection is the envelope of SuiteQL and saved-search results.
type collection struct {
	Items        []row
	HasMore      bool
	TotalResults int
}

// suiteQL runs one page of a query. Offset must be a multiple of limit.
func (c *Client) suiteQL(ctx context.Context, q string, limit, offset int) (collection, error) {
	query := url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	// Prefer: transient is required: without it NetSuite refuses the query.
	h := http.Header{"Prefer": {"transient"}}
	_, body, err := c.request(ctx, http.MethodPost, suiteQLPath, query, map[string]any{"q": q}, h)
	if err != nil {
		return collection{}, err
	}
	return decodeCollection(suiteQLPath, body)
}

// suiteQLAll pages through a small query by offset. Only for result sets
// that are small and bounded by their WHERE (lookups by id or address):
// offset paging over a set that changes while it is read can skip rows, so
// the watermark reads use keyset paging instead.
func (c *Client) suiteQLAll(ctx context.Context, q string) ([]row, error) {
	var out []row
	for offset := 0; ; offset += maxLimit {
		page, err := c.suiteQL(ctx, q, maxLimit, offset)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if !page.HasMore || len(page.Items) == 0 {
			return out, nil
		}
	}
}

// decodeCollection decodes the answer of path (for errors) as a collection.
// It refuses an answer without "items" or "hasMore": a collection always
// has both (items [] when empty), and an answer without them (null, {}, an
// error document answered 2xx) must never read as "no rows" on the last
// page, which would end a read or a lookup as if nothing were left and lose
// the opt-outs it did not return.
func decodeCollection(path string, body []byte) (collection, error) {
	var env struct {
		Items        []map[string]any `json:"items"`
		HasMore      *bool            `json:"hasMore"`
		TotalResults int              `json:"totalResults"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		return collection{}, fmt.Errorf("netsuite: %s: decoding a collection: %w", path, err)
	}
	switch {
	case env.Items == nil:
		return collection{}, fmt.Errorf("netsuite: %s: a collection answer without an items array", path)
	case env.HasMore == nil:
		return collection{}, fmt.Errorf("netsuite: %s: a collection answer without hasMore", path)
	}
	out := collection{HasMore: *env.HasMore, TotalResults: env.TotalResults, Items: make([]row, 0, len(env.Items))}
	for _, it := range env.Items {
		r := make(row, len(it))
		for k, v := range it {
			k = strings.ToLower(k)
			switch x := v.(type) {
			case string:
				r[k] = x
			case json.Number:
				r[k] = x.String()
			case bool:
				r[k] = map[bool]string{true: "T", false: "F"}[x]
			case map[string]any:
				// A select column of a saved-search row may come as {id, refName}.
				if id, ok := x["id"].(string); ok {
					r[k] = id
				}
			}
		}
		out.Items = append(out.Items, r)
	}
	return out, nil
}

// quote makes s a SuiteQL string literal. SuiteQL follows Oracle SQL: a
// quote inside a literal is doubled and a backslash has no meaning.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// identPattern is what a column name may look like; anything else could
// change the query's meaning.
var identPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,99}$`)

// dateFormat is the Oracle format used both ways, so that no account date
// preference ever enters a comparison.
const (
	dateFormat   = "YYYY-MM-DD HH24:MI:SS"
	goDateFormat = "2006-01-02 15:04:05"
)

// sinceDate is the TO_DATE literal a watermark is compared with: since's
// local wall-clock time in the account's time zone, moved back across a
// fold by sinceWallClock. Formatting truncates to the second, which can
// only widen a ">=" watermark.
func (c *Client) sinceDate(since time.Time) string {
	return "TO_DATE(" + quote(sinceWallClock(since, c.loc).Format(goDateFormat)) + ", " + quote(dateFormat) + ")"
}

// sinceWallClock returns the local wall-clock time (its fields, in UTC)
// from which a "lastmodifieddate >= TO_DATE(...)" read misses no change
// made at or after the instant since, in loc.
//
// SuiteQL takes the literal as a wall-clock time in the integration user's
// time zone. When clocks go back (a fold: 02:00 EDT becomes 01:00 EST in
// New York), one local hour happens twice, and the wall-clock time of
// since stops being a safe bound:
//
//   - since in the first pass (01:50 EDT): if NetSuite compares wall-clock
//     times, a change at 01:20 EST, forty minutes later, reads 01:20 and
//     sorts before the bound "01:50"; if it turns the literal into an
//     instant and picks the second pass, changes from 01:50 EDT to 01:50
//     EST are below the bound;
//   - since in the second pass (01:10 EST): "01:10" is safe read as a
//     wall-clock time or as either instant, but only by luck of the order
//     in which the passes come.
//
// How NetSuite compares is not in our reference (java.time would take an
// ambiguous time as the first pass, an Oracle TIMESTAMP WITH TIME ZONE as
// the second), so the bound moves back by the size d of the transition
// whenever the wall-clock time of since is ambiguous (since within d
// before or after a backward transition) or the hour before since
// contains one: "01:50" becomes "00:50" and "01:10" becomes "00:10",
// before the repeated hour, where every reading agrees. The read then
// takes up to 2d of changes again; duplicates are harmless (writes are
// idempotent), a hidden change is not. A forward transition (spring's
// gap) needs nothing: wall-clock time only jumps ahead there, and since,
// a real instant, never falls in the gap.
func sinceWallClock(since time.Time, loc *time.Location) time.Time {
	l := since.In(loc)
	w := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
	// A day either side is wider than any change of offset since 1900.
	for t, stop := since.Add(-26*time.Hour), since.Add(26*time.Hour); ; {
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || end.After(stop) {
			return w
		}
		_, before := t.In(loc).Zone()
		_, after := end.In(loc).Zone()
		if d := time.Duration(before-after) * time.Second; d > 0 {
			ambiguous := !since.Before(end.Add(-d)) && since.Before(end.Add(d))
			justAfter := !since.Before(end) && since.Before(end.Add(time.Hour))
			if ambiguous || justAfter {
				w = w.Add(-d)
			}
		}
		t = end
	}
}

// idList is "1,2,3" for an IN list of internal ids.
func idList(ids []int64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

// cursor is the resume point of a paged read, opaque to callers.
type cursor struct {
	// Query fingerprints the query it belongs to, so a cursor is never
	// applied to another query.
	Query string `json:"q"`
	// Phase 0 reads the members of the saved searches, phase 1 the records
	// modified since the watermark.
	Phase int `json:"p,omitempty"`
	// Type indexes the query's types.
	Type int `json:"t,omitempty"`
	// LastModified and ID are the keyset of the last row read in this type.
	LastModified string `json:"lm,omitempty"`
	ID           int64  `json:"id,omitempty"`
	// Mod and Rem, when Mod is not 0, restrict the read to the records
	// whose internal id is Rem modulo Mod: one of the parts SplitCursor
	// makes, each read at once with the others.
	Mod int64 `json:"mod,omitempty"`
	Rem int64 `json:"rem,omitempty"`
}

// part is the SuiteQL condition of the cursor's part ("" for a whole read).
func (k cursor) part() string {
	if k.Mod == 0 {
		return ""
	}
	return " AND MOD(id, " + strconv.FormatInt(k.Mod, 10) + ") = " + strconv.FormatInt(k.Rem, 10)
}

// inPart reports whether an internal id is in the cursor's part.
func (k cursor) inPart(id int64) bool {
	return k.Mod == 0 || id%k.Mod == k.Rem
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

func decodeCursor(s, query string) (cursor, error) {
	if s == "" {
		return cursor{Query: query}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var k cursor
	if err == nil {
		err = json.Unmarshal(b, &k)
	}
	if err != nil {
		return cursor{}, fmt.Errorf("netsuite: Cursor %q is not a cursor of this connector", s)
	}
	if k.Query != query {
		return cursor{}, fmt.Errorf("netsuite: Cursor belongs to another query")
	}
	return k, nil
}

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
	return decodeCollection(body)
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

func decodeCollection(body []byte) (collection, error) {
	var env struct {
		Items        []map[string]any `json:"items"`
		HasMore      bool             `json:"hasMore"`
		TotalResults int              `json:"totalResults"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		return collection{}, fmt.Errorf("netsuite: decoding a collection: %w", err)
	}
	out := collection{HasMore: env.HasMore, TotalResults: env.TotalResults, Items: make([]row, 0, len(env.Items))}
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

// toDate is a TO_DATE literal for t in the account's time zone. Formatting
// truncates to the second, which can only widen a ">=" watermark.
func (c *Client) toDate(t time.Time) string {
	return "TO_DATE(" + quote(t.In(c.loc).Format(goDateFormat)) + ", " + quote(dateFormat) + ")"
}

// nextSecond returns the TO_CHAR value one second later, in the same
// wall-clock terms.
func nextSecond(lm string) (string, error) {
	t, err := time.Parse(goDateFormat, lm)
	if err != nil {
		return "", err
	}
	return t.Add(time.Second).Format(goDateFormat), nil
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

package dynamics

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// table is one record type: its logical name (the RecordRef type), entity
// set, primary key, and the marketing list's navigation property and
// createdfromcode for its members (reference A3, A5).
type table struct {
	logical, set, key, nav string
	listCode               int
}

var tables = map[string]table{
	"contact": {logical: "contact", set: "contacts", key: "contactid", nav: "listcontact_association", listCode: 2},
	"lead":    {logical: "lead", set: "leads", key: "leadid", nav: "listlead_association", listCode: 4},
	"account": {logical: "account", set: "accounts", key: "accountid", nav: "listaccount_association", listCode: 1},
}

// RecordTypes are the tables this connector reads and writes, by logical name.
var RecordTypes = []string{"contact", "lead", "account"}

func tableByCode(code int) (table, bool) {
	for _, t := range tables {
		if t.listCode == code {
			return t, true
		}
	}
	return table{}, false
}

func resolveTypes(types []string) ([]table, error) {
	if len(types) == 0 {
		return nil, errors.New("dynamics: no record types given (Types: contact, lead, account)")
	}
	seen := map[string]bool{}
	var out []table
	for _, t := range types {
		tb, ok := tables[t]
		if !ok {
			return nil, fmt.Errorf("dynamics: record type %q is not one of contact, lead, account", t)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, tb)
		}
	}
	return out, nil
}

var (
	// columnPattern is a logical name: lower case, as Dataverse spells them.
	columnPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)
	// customPattern is a custom column: a publisher prefix, "_", a name.
	customPattern = regexp.MustCompile(`^[a-z][a-z0-9]{1,7}_[a-z0-9_]*[a-z0-9]$`)
	guidPattern   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// tenantPattern is a tenant id (a GUID) or one of its domains.
	tenantPattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$`)
)

func checkColumn(name string) error {
	if !columnPattern.MatchString(name) {
		return fmt.Errorf("%q is not a Dataverse column logical name (lower case letters, digits and _)", name)
	}
	return nil
}

// checkCustomOptOut says why name cannot hold a custom opt-out, opt-in or
// cleaned flag. donotemail is accepted: it is a standard Boolean an
// organisation may choose to use, though never the default (it also blocks
// one-to-one mail; reference A3).
func checkCustomOptOut(name string) error {
	if err := checkColumn(name); err != nil {
		return err
	}
	if name == "donotemail" {
		return nil
	}
	if name == "donotbulkemail" {
		return fmt.Errorf("%q is the standard opt-out: use kind standard", name)
	}
	if !customPattern.MatchString(name) {
		return fmt.Errorf("%q is not a custom column (a publisher prefix and a name, such as new_optout)", name)
	}
	return nil
}

// optOut is where a record's opt-out lives on the wire.
type optOut struct {
	col string
	val bool // the value that means opted out
}

func newOptOut(name string, f connectors.OptOutField) (optOut, error) {
	switch f.Kind {
	case connectors.OptOutStandard, "":
		return optOut{col: "donotbulkemail", val: true}, nil
	case connectors.OptOutCustom, connectors.OptOutInverted:
		if err := checkCustomOptOut(f.Field); err != nil {
			return optOut{}, fmt.Errorf("dynamics: %s.Field: %w", name, err)
		}
		return optOut{col: f.Field, val: f.Kind == connectors.OptOutCustom}, nil
	}
	return optOut{}, fmt.Errorf("dynamics: %s.Kind %q is not standard, custom or inverted", name, f.Kind)
}

// filter is the condition that selects opted-out records. An inverted
// opt-in that is null (never set) is not an opt-out.
func (o optOut) filter() string { return o.col + " eq " + strconv.FormatBool(o.val) }

func (o optOut) optedOut(row map[string]any) bool {
	v, ok := lookup(row, o.col).(bool)
	return ok && v == o.val
}

// quote writes an OData string literal: a quote is doubled (reference A4).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// datetime writes a DateTimeOffset literal, unquoted, in UTC with Z.
// Truncating to the second widens a "ge" filter, never narrows it.
func datetime(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format("2006-01-02T15:04:05Z")
}

// escape percent-encodes a query option's value, a space as %20 and a
// "+" as %2B (reference A4: "+" must be encoded, or it reads as a space).
func escape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// queryURL writes an entity set (or navigation) URL with its options in
// a fixed order.
func (c *Client) queryURL(path string, sel []string, filter, orderby string) string {
	var opts []string
	if len(sel) > 0 {
		opts = append(opts, "$select="+escape(strings.Join(sel, ",")))
	}
	if filter != "" {
		opts = append(opts, "$filter="+escape(filter))
	}
	if orderby != "" {
		opts = append(opts, "$orderby="+escape(orderby))
	}
	u := c.api + path
	if len(opts) > 0 {
		u += "?" + strings.Join(opts, "&")
	}
	return u
}

// selectList joins columns without repeats.
func selectList(cols ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range cols {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// lookup finds a column in a row; an absent column is null (FetchXML
// answers leave out null attributes).
func lookup(row map[string]any, name string) any { return row[name] }

// fieldString writes a column value for a marketing merge field; null is "".
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

// collection is a Web API collection answer.
type collection struct {
	Value       []map[string]any `json:"value"`
	NextLink    string           `json:"@odata.nextLink"`
	MoreRecords *bool            `json:"@Microsoft.Dynamics.CRM.morerecords"`
}

// UnmarshalJSON refuses an answer without "value": a collection always has
// it ([] when empty), and an answer without it (null, {}, an error envelope
// answered 2xx) must never read as "no rows", which would end a read or a
// lookup as if nothing were left and lose the opt-outs it did not return.
func (c *collection) UnmarshalJSON(b []byte) error {
	type plain collection
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if p.Value == nil {
		return errors.New("a collection answer without a value array")
	}
	*c = collection(p)
	return nil
}

// follow checks a nextLink before the bearer token goes with it: it must
// be on the environment's host, under the Web API. It is otherwise used
// unchanged (reference A4: never edited, never appended to).
func (c *Client) follow(next string) (string, error) {
	u, err := url.Parse(next)
	if err != nil || u.Host != c.org.Host || u.Scheme != c.org.Scheme || !strings.HasPrefix(u.Path, apiPath+"/") {
		return "", fmt.Errorf("dynamics: a nextLink points outside %s%s: %w", c.org, apiPath, connectors.ErrInvalid)
	}
	return next, nil
}

// ---- cursors ----

// cursorState is the opaque cursor of a paged read.
type cursorState struct {
	V int    `json:"v"`
	F string `json:"f"`           // fingerprint of the read
	P int    `json:"p"`           // step
	N string `json:"n,omitempty"` // nextLink of the step's next page
	U string `json:"u,omitempty"` // the batch a page ended inside: read on after T, K
	T string `json:"t,omitempty"` // modifiedon of the last row returned from U
	Z int    `json:"z,omitempty"` // odata.maxpagesize of the step's chain
	G int    `json:"g,omitempty"` // FetchXML page number of the step's next page
	K string `json:"k,omitempty"` // last list member returned ("type/id")
}

func fingerprint(parts ...string) string {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = h.Write([]byte(p + "\x00"))
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func (s cursorState) encode() string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c *Client) decodeCursor(raw, fp string) (cursorState, error) {
	st := cursorState{V: 1, F: fp}
	if raw == "" {
		return st, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil || st.V != 1 || st.P < 0 || st.G < 0 {
		return st, fmt.Errorf("dynamics: Cursor: %w: not a cursor of this connector", connectors.ErrInvalid)
	}
	if st.F != fp {
		return st, fmt.Errorf("dynamics: Cursor: %w: the cursor belongs to a different query", connectors.ErrInvalid)
	}
	for _, u := range []string{st.N, st.U} {
		if u == "" {
			continue
		}
		if _, err := c.follow(u); err != nil {
			return st, fmt.Errorf("dynamics: Cursor: %w", err)
		}
	}
	if st.Z < 0 || st.Z > batchRows {
		return st, fmt.Errorf("dynamics: Cursor: %w: bad page size", connectors.ErrInvalid)
	}
	return st, nil
}

func checkPageSize(n int) (int, error) {
	if n < 0 || n > connectors.MaxPageSize {
		return 0, fmt.Errorf("dynamics: PageSize %d is outside 0..%d", n, connectors.MaxPageSize)
	}
	if n == 0 {
		return connectors.MaxPageSize, nil
	}
	return n, nil
}

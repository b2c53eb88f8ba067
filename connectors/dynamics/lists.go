package dynamics

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// Marketing lists (reference A5) scope a sync. A list holds members of one
// table (createdfromcode). A static list's members are read through its
// navigation property (lists(<id>)/listcontact_association); a dynamic
// list stores none, and its members are what its FetchXML query returns,
// run against the table with the connector's own columns and conditions
// added to it.

// MaxLists bounds the marketing lists one integration scopes to: each
// costs a read per run.
const MaxLists = 50

// checkList says why id is not a marketing list id, or nil.
func checkList(id string) error {
	if !guidPattern.MatchString(id) {
		return fmt.Errorf("%q is not a marketing list id (a GUID, the listid)", id)
	}
	return nil
}

// listMeta is what the connector needs of a list.
type listMeta struct {
	id      string
	name    string
	dynamic bool
	query   string
	tab     table
	known   bool // the list's table is one the connector knows
}

func (c *Client) listMeta(ctx context.Context, id string) (listMeta, error) {
	if err := checkList(id); err != nil {
		return listMeta{}, fmt.Errorf("dynamics: Lists: %w", err)
	}
	var row map[string]any
	u := c.queryURL("lists("+strings.ToLower(id)+")", []string{"listname", "type", "query", "createdfromcode"}, "", "")
	if _, err := c.getJSON(ctx, u, nil, &row); err != nil {
		return listMeta{}, fmt.Errorf("dynamics: reading marketing list %s: %w", id, err)
	}
	m := listMeta{id: strings.ToLower(id)}
	m.name, _ = row["listname"].(string)
	m.query, _ = row["query"].(string)
	switch t := row["type"].(type) {
	case bool:
		m.dynamic = t
	case float64:
		m.dynamic = t == 1
	}
	code, _ := row["createdfromcode"].(float64)
	m.tab, m.known = tableByCode(int(code))
	if m.dynamic && strings.TrimSpace(m.query) == "" {
		return m, fmt.Errorf("dynamics: marketing list %s (%q) is dynamic but has no query", id, m.name)
	}
	return m, nil
}

// fetchCond is a condition added to a dynamic list's query.
type fetchCond struct{ attr, op, value string }

// rewriteFetch adds the connector's columns, an order on the primary key
// when the query has none (stable paging), and its conditions (ANDed with
// the list's own filters) to a dynamic list's FetchXML, and sets page and
// count. A query with top is read as one page.
func rewriteFetch(query string, tab table, cols []string, conds []fetchCond, page, count int) (string, bool, error) {
	dec := xml.NewDecoder(strings.NewReader(query))
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	depth := 0
	inEntity := false
	paged := true
	attrs := map[string]bool{}
	all, ordered := false, false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", false, fmt.Errorf("the list's query is not valid FetchXML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case depth == 1 && t.Name.Local == "fetch":
				var keep []xml.Attr
				for _, a := range t.Attr {
					switch a.Name.Local {
					case "top":
						paged = false
						keep = append(keep, a)
					case "page", "count", "paging-cookie":
					default:
						keep = append(keep, a)
					}
				}
				if paged {
					keep = append(keep, xml.Attr{Name: xml.Name{Local: "page"}, Value: strconv.Itoa(page)},
						xml.Attr{Name: xml.Name{Local: "count"}, Value: strconv.Itoa(count)})
				}
				t.Attr = keep
				tok = t
			case depth == 1:
				return "", false, fmt.Errorf("the list's query is not FetchXML (root %q)", t.Name.Local)
			case depth == 2 && t.Name.Local == "entity":
				inEntity = true
				for _, a := range t.Attr {
					if a.Name.Local == "name" && a.Value != tab.logical {
						return "", false, fmt.Errorf("the list's query reads %q, not its members' table %q", a.Value, tab.logical)
					}
				}
			case depth == 3 && inEntity:
				switch t.Name.Local {
				case "attribute":
					for _, a := range t.Attr {
						if a.Name.Local == "name" {
							attrs[a.Value] = true
						}
					}
				case "all-attributes":
					all = true
				case "order":
					ordered = true
				}
			}
		case xml.EndElement:
			if depth == 2 && inEntity && t.Name.Local == "entity" {
				for _, col := range cols {
					if !all && !attrs[col] {
						emptyElement(enc, "attribute", xml.Attr{Name: xml.Name{Local: "name"}, Value: col})
					}
				}
				if !ordered {
					emptyElement(enc, "order", xml.Attr{Name: xml.Name{Local: "attribute"}, Value: tab.key})
				}
				if len(conds) > 0 {
					f := xml.StartElement{Name: xml.Name{Local: "filter"}, Attr: []xml.Attr{{Name: xml.Name{Local: "type"}, Value: "and"}}}
					_ = enc.EncodeToken(f)
					for _, c := range conds {
						emptyElement(enc, "condition", xml.Attr{Name: xml.Name{Local: "attribute"}, Value: c.attr},
							xml.Attr{Name: xml.Name{Local: "operator"}, Value: c.op}, xml.Attr{Name: xml.Name{Local: "value"}, Value: c.value})
					}
					_ = enc.EncodeToken(f.End())
				}
				inEntity = false
			}
			depth--
		}
		if err := enc.EncodeToken(xml.CopyToken(tok)); err != nil {
			return "", false, fmt.Errorf("the list's query cannot be rewritten: %w", err)
		}
	}
	if err := enc.Flush(); err != nil {
		return "", false, err
	}
	return buf.String(), paged, nil
}

func emptyElement(enc *xml.Encoder, name string, attrs ...xml.Attr) {
	s := xml.StartElement{Name: xml.Name{Local: name}, Attr: attrs}
	_ = enc.EncodeToken(s)
	_ = enc.EncodeToken(s.End())
}

// fetchPageSize is FetchXML's largest page.
const fetchPageSize = 5000

// listPage reads one page of a list's members with the columns sel, the
// OData filter (static) or the FetchXML conditions (dynamic). st carries
// the nextLink (static) or the page number (dynamic) of the page to read;
// the state of the page after is returned, zero at the end.
func (c *Client) listPage(ctx context.Context, m listMeta, sel []string, filter string, conds []fetchCond, size int, next string, page int) ([]map[string]any, string, int, error) {
	var res collection
	if !m.dynamic {
		u := next
		if u == "" {
			u = c.queryURL("lists("+m.id+")/"+m.tab.nav, sel, filter, m.tab.key+" asc")
		}
		h := http.Header{"Prefer": {"odata.maxpagesize=" + strconv.Itoa(size)}}
		if _, err := c.getJSON(ctx, u, h, &res); err != nil {
			return nil, "", 0, fmt.Errorf("dynamics: reading members of marketing list %s: %w", m.id, err)
		}
		if res.NextLink != "" {
			if _, err := c.follow(res.NextLink); err != nil {
				return nil, "", 0, err
			}
		}
		return res.Value, res.NextLink, 0, nil
	}
	if page < 1 {
		page = 1
	}
	count := min(size, fetchPageSize)
	q, paged, err := rewriteFetch(m.query, m.tab, sel, conds, page, count)
	if err != nil {
		return nil, "", 0, fmt.Errorf("dynamics: marketing list %s (%q): %w", m.id, m.name, err)
	}
	// The morerecords annotation says whether another page exists; without
	// it, a full page means there may be one (UNCONFIRMED, reference A5).
	h := http.Header{"Prefer": {`odata.include-annotations="Microsoft.Dynamics.CRM.morerecords,Microsoft.Dynamics.CRM.fetchxmlpagingcookie"`}}
	if _, err := c.getJSON(ctx, c.api+m.tab.set+"?fetchXml="+escape(q), h, &res); err != nil {
		return nil, "", 0, fmt.Errorf("dynamics: running the query of marketing list %s: %w", m.id, err)
	}
	more := len(res.Value) >= count
	if res.MoreRecords != nil {
		more = *res.MoreRecords
	}
	if !paged || !more {
		return res.Value, "", 0, nil
	}
	return res.Value, "", page + 1, nil
}

// membership is the opted-out members of a set of lists.
type membership struct {
	rows []memberRow // by type, then id
	set  map[connectors.RecordRef]bool
}

type memberRow struct {
	ref connectors.RecordRef
	row map[string]any
}

func (m *membership) has(ref connectors.RecordRef) bool { return m.set[ref] }

// after returns the index of the first member after key ("type/id"), or 0.
func (m *membership) after(key string) int {
	if key == "" {
		return 0
	}
	i, found := slices.BinarySearchFunc(m.rows, key, func(r memberRow, k string) int { return strings.Compare(r.ref.String(), k) })
	if found {
		i++
	}
	return i
}

// listCache keeps the opted-out members of a set of lists between the
// pages of one read, so that a run reads each list once.
type listCache struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]*listEntry
}

type listEntry struct {
	loaded time.Time
	m      *membership
}

// optedOutMembers returns the opted-out members of lists among the tables.
// The first page of a read (first) reads them afresh unless the copy was
// loaded at or after asOf (the run's start); a later page reads them when
// the copy is missing or older than the TTL.
func (c *Client) optedOutMembers(ctx context.Context, lists []string, tabs []table, o optOut, first bool, asOf time.Time) (*membership, error) {
	var names []string
	for _, t := range tabs {
		names = append(names, t.logical)
	}
	key := strings.Join(lists, ",") + "|" + strings.Join(names, ",") + "|" + o.filter() + "|" + strings.Join(c.emails, ",")
	lc := c.lists
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if e, ok := lc.entries[key]; ok {
		current := !asOf.IsZero() && !e.loaded.Before(asOf)
		if first && current || !first && time.Since(e.loaded) < lc.ttl {
			return e.m, nil
		}
	}
	loaded := time.Now()
	m := &membership{set: map[connectors.RecordRef]bool{}}
	for _, id := range lists {
		meta, err := c.listMeta(ctx, id)
		if err != nil {
			return nil, err
		}
		if !meta.known || !slices.ContainsFunc(tabs, func(t table) bool { return t.logical == meta.tab.logical }) {
			c.logger().Debug("marketing list holds members of a table not synced; skipped", "list", id)
			continue
		}
		sel := selectList(append(append([]string{meta.tab.key}, c.emails...), o.col, "modifiedon")...)
		conds := []fetchCond{{attr: o.col, op: "eq", value: fetchBool(o.val)}}
		next, page := "", 1
		for {
			rows, n, p, err := c.listPage(ctx, meta, sel, o.filter(), conds, fetchPageSize, next, page)
			if err != nil {
				return nil, err
			}
			for _, row := range rows {
				id, _ := row[meta.tab.key].(string)
				if !guidPattern.MatchString(id) {
					return nil, fmt.Errorf("dynamics: marketing list %s: a %s row without a valid %s", meta.id, meta.tab.logical, meta.tab.key)
				}
				// The query asked for opted-out records; a row that is not
				// one (a list whose query ignored the condition) is left out.
				if !o.optedOut(row) {
					continue
				}
				ref := connectors.RecordRef{Type: meta.tab.logical, ID: strings.ToLower(id)}
				if !m.set[ref] {
					m.set[ref] = true
					m.rows = append(m.rows, memberRow{ref: ref, row: row})
				}
			}
			if n == "" && p == 0 {
				break
			}
			next, page = n, p
		}
	}
	slices.SortFunc(m.rows, func(a, b memberRow) int { return strings.Compare(a.ref.String(), b.ref.String()) })
	lc.entries[key] = &listEntry{loaded: loaded, m: m}
	c.logger().Debug("dynamics marketing lists read", "lists", len(lists), "opted_out_members", len(m.rows))
	return m, nil
}

func fetchBool(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

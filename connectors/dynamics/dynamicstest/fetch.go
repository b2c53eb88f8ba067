//lint:file-ignore ST1005 the emulator answers with the Dataverse error texts themselves, capitals and full stops included

package dynamicstest

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FetchXML, the query language of dynamic marketing lists (reference A5),
// in the subset the emulator evaluates: one entity, attribute or
// all-attributes, order, nested filter / condition with the common
// operators, and page / count paging. link-entity and aggregates are
// refused with a 400 naming them. UNCONFIRMED (reference A5): the exact
// paging behaviour; the emulator pages by page number and answers the
// morerecords and pagingcookie annotations when asked for them.

type fetchDoc struct {
	XMLName   xml.Name    `xml:"fetch"`
	Page      string      `xml:"page,attr"`
	Count     string      `xml:"count,attr"`
	Top       string      `xml:"top,attr"`
	Aggregate string      `xml:"aggregate,attr"`
	Entity    fetchEntity `xml:"entity"`
}

type fetchEntity struct {
	Name       string        `xml:"name,attr"`
	Attributes []fetchAttr   `xml:"attribute"`
	All        *struct{}     `xml:"all-attributes"`
	Orders     []fetchOrder  `xml:"order"`
	Filters    []fetchFilter `xml:"filter"`
	Links      []struct{}    `xml:"link-entity"`
}

type fetchAttr struct {
	Name string `xml:"name,attr"`
}

type fetchOrder struct {
	Attribute  string `xml:"attribute,attr"`
	Descending bool   `xml:"descending,attr"`
}

type fetchFilter struct {
	Type       string        `xml:"type,attr"`
	Conditions []fetchCond   `xml:"condition"`
	Filters    []fetchFilter `xml:"filter"`
}

type fetchCond struct {
	Attribute string   `xml:"attribute,attr"`
	Operator  string   `xml:"operator,attr"`
	Value     string   `xml:"value,attr"`
	Values    []string `xml:"value"`
}

func parseFetch(src string) (*fetchDoc, error) {
	var d fetchDoc
	if err := xml.Unmarshal([]byte(src), &d); err != nil {
		return nil, fmt.Errorf("The FetchXML is not valid: %v", err)
	}
	if d.Entity.Name == "" {
		return nil, fmt.Errorf("The FetchXML has no entity.")
	}
	if len(d.Entity.Links) > 0 || d.Aggregate == "true" {
		return nil, fmt.Errorf("link-entity and aggregate FetchXML are not supported by the emulator")
	}
	return &d, nil
}

func (f *fetchFilter) eval(r *record, e *entity) (bool, error) {
	or := f.Type == "or"
	for _, c := range f.Conditions {
		ok, err := c.eval(r, e)
		if err != nil {
			return false, err
		}
		if or && ok {
			return true, nil
		}
		if !or && !ok {
			return false, nil
		}
	}
	for i := range f.Filters {
		ok, err := f.Filters[i].eval(r, e)
		if err != nil {
			return false, err
		}
		if or && ok {
			return true, nil
		}
		if !or && !ok {
			return false, nil
		}
	}
	return !or, nil
}

func fetchValue(raw string, typ colType) (any, error) {
	switch typ {
	case ctBool:
		switch strings.ToLower(raw) {
		case "1", "true":
			return true, nil
		case "0", "false":
			return false, nil
		}
	case ctTime:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
			if t, err := time.Parse(layout, raw); err == nil {
				return t, nil
			}
		}
	case ctInt:
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			return n, nil
		}
	case ctGUID:
		raw = strings.ToLower(strings.Trim(raw, "{}"))
		if guidPattern.MatchString(raw) {
			return raw, nil
		}
	default:
		return raw, nil
	}
	return nil, fmt.Errorf("The value '%s' is not a valid %s", raw, edmName(typ))
}

func (c *fetchCond) eval(r *record, e *entity) (bool, error) {
	typ, ok := e.cols[c.Attribute]
	if !ok {
		return false, fmt.Errorf("'%s' entity doesn't contain attribute with Name = '%s'.", e.logical, c.Attribute)
	}
	v := r.get(c.Attribute)
	switch c.Operator {
	case "null":
		return v == nil, nil
	case "not-null":
		return v != nil, nil
	case "in":
		for _, raw := range c.Values {
			want, err := fetchValue(raw, typ)
			if err != nil {
				return false, err
			}
			if v != nil && compare(v, want) == 0 {
				return true, nil
			}
		}
		return false, nil
	case "like", "not-like":
		s, _ := v.(string)
		pat := "^" + strings.ReplaceAll(regexp.QuoteMeta(strings.ToLower(c.Value)), "%", ".*") + "$"
		m, err := regexp.MatchString(pat, strings.ToLower(s))
		if err != nil {
			return false, err
		}
		return v != nil && m == (c.Operator == "like"), nil
	}
	want, err := fetchValue(c.Value, typ)
	if err != nil {
		return false, err
	}
	if v == nil {
		return c.Operator == "ne" || c.Operator == "neq", nil
	}
	cmp := compare(v, want)
	switch c.Operator {
	case "eq":
		return cmp == 0, nil
	case "ne", "neq":
		return cmp != 0, nil
	case "gt":
		return cmp > 0, nil
	case "ge":
		return cmp >= 0, nil
	case "lt":
		return cmp < 0, nil
	case "le":
		return cmp <= 0, nil
	}
	return false, fmt.Errorf("The condition operator '%s' is not supported by the emulator", c.Operator)
}

// fetch answers <entityset>?fetchXml=<query>.
func (s *Server) fetch(w http.ResponseWriter, r *http.Request, e *entity, o options) {
	if len(o.sel) > 0 || o.filter != "" || o.orderby != "" || o.top >= 0 {
		writeError(w, http.StatusBadRequest, codeProperty, "fetchXml cannot be combined with other query options.")
		return
	}
	d, err := parseFetch(o.fetchXML)
	if err != nil {
		writeError(w, http.StatusBadRequest, "0x80041103", err.Error())
		return
	}
	if d.Entity.Name != e.logical {
		writeError(w, http.StatusBadRequest, "0x80041103", fmt.Sprintf("The entity name '%s' in the FetchXML does not match the entity set '%s'.", d.Entity.Name, e.set))
		return
	}
	page, count := 1, 5000
	if d.Page != "" {
		if page, err = strconv.Atoi(d.Page); err != nil || page < 1 {
			writeError(w, http.StatusBadRequest, "0x80041103", "The page attribute must be a positive number.")
			return
		}
	}
	if d.Count != "" {
		if count, err = strconv.Atoi(d.Count); err != nil || count < 1 || count > 5000 {
			writeError(w, http.StatusBadRequest, "0x80041103", "The count attribute must be between 1 and 5000.")
			return
		}
	}
	if d.Top != "" && (d.Page != "" || d.Count != "") {
		writeError(w, http.StatusBadRequest, "0x80041103", "The top attribute can't be specified with paging attribute page or count.")
		return
	}
	sel, body, more, err := s.runFetch(d, e, page, count)
	if err != nil {
		writeError(w, http.StatusBadRequest, "0x80041103", err.Error())
		return
	}
	var ann map[string]any
	if a := parsePrefer(r.Header).annotations; a == "*" || strings.Contains(a, "Microsoft.Dynamics.CRM.") {
		cookie := fmt.Sprintf(`<cookie pagenumber="%d" pagingcookie="%s" istracking="False" />`, page+1, escape(escape(fmt.Sprintf(`<cookie page="%d"></cookie>`, page))))
		ann = map[string]any{"@Microsoft.Dynamics.CRM.fetchxmlpagingcookie": cookie, "@Microsoft.Dynamics.CRM.morerecords": more}
	}
	writeCollection(w, s.URL+APIPath+"/$metadata#"+e.set+selectSuffix(sel), body, "", ann)
}

// runFetch evaluates a FetchXML query's page under the lock.
func (s *Server) runFetch(d *fetchDoc, e *entity, page, count int) ([]string, []json.RawMessage, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sel []string
	if d.Entity.All == nil {
		for _, a := range d.Entity.Attributes {
			if _, ok := e.cols[a.Name]; !ok {
				return nil, nil, false, fmt.Errorf("'%s' entity doesn't contain attribute with Name = '%s'.", e.logical, a.Name)
			}
			if !slices.Contains(sel, a.Name) {
				sel = append(sel, a.Name)
			}
		}
	}
	var ord []order
	for _, oe := range d.Entity.Orders {
		if _, ok := e.cols[oe.Attribute]; !ok {
			return nil, nil, false, fmt.Errorf("'%s' entity doesn't contain attribute with Name = '%s'.", e.logical, oe.Attribute)
		}
		ord = append(ord, order{col: oe.Attribute, desc: oe.Descending})
	}
	ord = append(ord, order{col: e.key})
	var rows []*record
	for _, rec := range e.recs {
		if rec.deleted {
			continue
		}
		keep := true
		for i := range d.Entity.Filters {
			ok, err := d.Entity.Filters[i].eval(rec, e)
			if err != nil {
				return nil, nil, false, err
			}
			keep = keep && ok
		}
		if keep {
			rows = append(rows, rec)
		}
	}
	slices.SortFunc(rows, func(a, b *record) int { return compareRows(a, b, ord) })
	if d.Top != "" {
		top, _ := strconv.Atoi(d.Top)
		rows = rows[:min(max(top, 0), len(rows))]
		count, page = max(len(rows), 1), 1
	}
	start := min((page-1)*count, len(rows))
	end := min(start+count, len(rows))
	more := end < len(rows)
	return sel, s.render(e, sel, rows[start:end]), more, nil
}

package salesforcetest

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// fieldType is the SOAP type of a field, as SOQL type-checks filters.
type fieldType int

const (
	ftID fieldType = iota
	ftRef
	ftString
	ftBool
	ftDatetime
	ftNumber
)

func (t fieldType) String() string {
	return [...]string{"id", "reference", "string", "boolean", "dateTime", "double"}[t]
}

type fieldDef struct {
	name     string
	typ      fieldType
	writable bool
}

type objectDef struct {
	name   string
	prefix string
	fields map[string]*fieldDef // by lower-case name: SOQL names are case-insensitive
}

func (o *objectDef) field(name string) *fieldDef { return o.fields[strings.ToLower(name)] }

func (o *objectDef) add(name string, typ fieldType, writable bool) *fieldDef {
	if f := o.field(name); f != nil {
		return f
	}
	f := &fieldDef{name: name, typ: typ, writable: writable}
	o.fields[strings.ToLower(name)] = f
	return f
}

type schema struct {
	objects map[string]*objectDef
}

func (s *schema) object(name string) *objectDef { return s.objects[strings.ToLower(name)] }

// newSchema builds the objects the sync touches, with the standard fields
// it reads or writes. The org is one with person accounts enabled, so
// Contact and Account carry IsPersonAccount.
func newSchema() *schema {
	s := &schema{objects: map[string]*objectDef{}}
	def := func(name, prefix string) *objectDef {
		o := &objectDef{name: name, prefix: prefix, fields: map[string]*fieldDef{}}
		o.add("Id", ftID, false)
		o.add("IsDeleted", ftBool, false)
		o.add("CreatedDate", ftDatetime, false)
		o.add("LastModifiedDate", ftDatetime, false)
		o.add("SystemModstamp", ftDatetime, false)
		s.objects[strings.ToLower(name)] = o
		return o
	}
	c := def("Contact", "003")
	for _, f := range []string{"FirstName", "LastName", "Email", "Title", "Phone"} {
		c.add(f, ftString, true)
	}
	c.add("Name", ftString, false)
	c.add("HasOptedOutOfEmail", ftBool, true)
	c.add("IsPersonAccount", ftBool, false)
	c.add("AccountId", ftRef, true)

	l := def("Lead", "00Q")
	for _, f := range []string{"FirstName", "LastName", "Email", "Company", "Status", "Title", "Phone"} {
		l.add(f, ftString, true)
	}
	l.add("Name", ftString, false)
	l.add("HasOptedOutOfEmail", ftBool, true)
	l.add("IsConverted", ftBool, false)

	a := def("Account", "001")
	for _, f := range []string{"Name", "FirstName", "LastName", "PersonEmail", "PersonTitle", "Phone"} {
		a.add(f, ftString, true)
	}
	a.add("PersonHasOptedOutOfEmail", ftBool, true)
	a.add("IsPersonAccount", ftBool, false)
	a.add("PersonContactId", ftRef, false)

	cp := def("Campaign", "701")
	cp.add("Name", ftString, true)
	cp.add("IsActive", ftBool, true)

	m := def("CampaignMember", "00v")
	m.add("CampaignId", ftRef, false)
	m.add("ContactId", ftRef, false)
	m.add("LeadId", ftRef, false)
	m.add("Status", ftString, true)
	// A read-only mirror of the member's Contact or Lead opt-out.
	m.add("HasOptedOutOfEmail", ftBool, false)
	return s
}

type record struct {
	obj     *objectDef
	vals    map[string]any // by canonical field name
	deleted bool
}

func (r *record) id() string { s, _ := r.vals["Id"].(string); return s }

// mirror links a person account and its person contact: a write to one is
// a write to the other, as in Salesforce, where the person contact's fields
// are the account's Person* fields.
var personMirror = map[string]string{
	"PersonEmail":              "Email",
	"PersonHasOptedOutOfEmail": "HasOptedOutOfEmail",
	"FirstName":                "FirstName",
	"LastName":                 "LastName",
	"PersonTitle":              "Title",
}

// stored is the value a field holds once written. An email field holds
// its address without surrounding white space.
//
// UNCONFIRMED: our reference says nothing on it. Salesforce checks an email
// field's format on save, so it cannot hold an address with spaces around
// it; we chose to model that it trims them (a text field's common fate)
// rather than refuses the record, so that a seed of "ANN@Example.com "
// reads back "ANN@Example.com". The case and the Unicode form are kept as
// written. SOQL has no TRIM, so the connector could not match such a
// value if Salesforce did keep it.
func stored(field string, v any) any {
	if field != "Email" && field != "PersonEmail" {
		return v
	}
	s, ok := v.(string)
	if !ok {
		return v
	}
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	return s
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID makes an 18-character id: key prefix, a pod-like "RO" and a base-62
// sequence (so ids sort in creation order), then the case-safe suffix
// Salesforce appends to a 15-character id.
func newID(prefix string, n int) string {
	seq := make([]byte, 10)
	for i := len(seq) - 1; i >= 0; i-- {
		seq[i] = base62[n%62]
		n /= 62
	}
	id15 := prefix + "RO" + string(seq)
	return id15 + idSuffix(id15)
}

// idSuffix is the checksum of the 15-character id: for each 5-character
// chunk, a bit per upper-case letter, mapped onto A-Z0-5.
func idSuffix(id15 string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
	var out [3]byte
	for chunk := range 3 {
		bits := 0
		for i := range 5 {
			c := id15[chunk*5+i]
			if c >= 'A' && c <= 'Z' {
				bits |= 1 << i
			}
		}
		out[chunk] = alphabet[bits]
	}
	return string(out[:])
}

// validID reports whether s looks like an 18-character (or 15-character)
// Salesforce id.
func validID(s string) bool {
	if len(s) != 18 && len(s) != 15 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(base62, s[i]) < 0 {
			return false
		}
	}
	return len(s) == 15 || idSuffix(s[:15]) == s[15:]
}

// formatDatetime is how the REST API writes a dateTime.
func formatDatetime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000+0000") }

// ---- evaluation ----

type evalCtx struct {
	s    *Server
	sets map[*inExpr]map[string]bool
	// texts holds each literal IN list's text values as compare matches
	// them (case-folded but for ids), so that a list of hundreds of
	// addresses costs one lookup per record, not one comparison per value:
	// queries run under the server's lock.
	texts map[*inExpr]map[string]bool
}

// textKey is a text value as compare matches it: ids and references
// exactly, other text case-insensitively.
func textKey(f *fieldDef, v string) string {
	if f.typ == ftID || f.typ == ftRef {
		return v
	}
	return strings.ToLower(v)
}

// get reads a field, computing CampaignMember.HasOptedOutOfEmail from the
// member's Contact or Lead.
func (c *evalCtx) get(r *record, f *fieldDef) any {
	if r.obj.name == "CampaignMember" && f.name == "HasOptedOutOfEmail" {
		for _, k := range []string{"ContactId", "LeadId"} {
			if id, _ := r.vals[k].(string); id != "" {
				if p := c.s.records[id]; p != nil {
					return p.vals["HasOptedOutOfEmail"]
				}
			}
		}
		return false
	}
	return r.vals[f.name]
}

func compare(f *fieldDef, v any, l literal) (int, bool) {
	switch x := v.(type) {
	case string:
		if l.kind != vString {
			return 0, false
		}
		if f.typ == ftID || f.typ == ftRef {
			return strings.Compare(x, l.s), true
		}
		// Text comparisons in SOQL are case-insensitive.
		return strings.Compare(strings.ToLower(x), strings.ToLower(l.s)), true
	case bool:
		if l.kind != vBool {
			return 0, false
		}
		if x == l.b {
			return 0, true
		}
		if !x {
			return -1, true
		}
		return 1, true
	case time.Time:
		if l.kind != vDatetime {
			return 0, false
		}
		return x.Compare(l.t), true
	case float64:
		if l.kind != vNumber {
			return 0, false
		}
		switch {
		case x < l.n:
			return -1, true
		case x > l.n:
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func (c *evalCtx) eval(e expr, r *record) bool {
	switch x := e.(type) {
	case andExpr:
		return c.eval(x.l, r) && c.eval(x.r, r)
	case orExpr:
		return c.eval(x.l, r) || c.eval(x.r, r)
	case notExpr:
		return !c.eval(x.e, r)
	case cmpExpr:
		v := c.get(r, x.field)
		if x.val.kind == vNull {
			if x.op == "=" {
				return v == nil
			}
			return v != nil
		}
		if v == nil {
			return x.op == "!="
		}
		d, ok := compare(x.field, v, x.val)
		if !ok {
			return false
		}
		switch x.op {
		case "=":
			return d == 0
		case "!=":
			return d != 0
		case "<":
			return d < 0
		case ">":
			return d > 0
		case "<=":
			return d <= 0
		case ">=":
			return d >= 0
		}
		return false
	case *inExpr:
		v := c.get(r, x.field)
		var hit bool
		if x.sub != nil {
			s, _ := v.(string)
			hit = s != "" && c.sets[x][s]
		} else if s, ok := v.(string); ok {
			hit = c.texts[x][textKey(x.field, s)]
		} else if v != nil {
			for _, l := range x.values {
				if d, ok := compare(x.field, v, l); ok && d == 0 {
					hit = true
					break
				}
			}
		}
		return hit != x.not
	}
	return true
}

// run evaluates q against the store; the caller holds s.mu.
func (s *Server) run(q *query) []*record {
	c := &evalCtx{s: s, sets: map[*inExpr]map[string]bool{}, texts: map[*inExpr]map[string]bool{}}
	var collect func(e expr)
	collect = func(e expr) {
		switch x := e.(type) {
		case andExpr:
			collect(x.l)
			collect(x.r)
		case orExpr:
			collect(x.l)
			collect(x.r)
		case notExpr:
			collect(x.e)
		case *inExpr:
			if x.sub != nil {
				set := map[string]bool{}
				for _, r := range s.run(x.sub) {
					if v, _ := c.get(r, x.sub.fields[0]).(string); v != "" {
						set[v] = true
					}
				}
				c.sets[x] = set
			} else {
				texts := map[string]bool{}
				for _, l := range x.values {
					if l.kind == vString {
						texts[textKey(x.field, l.s)] = true
					}
				}
				c.texts[x] = texts
			}
		}
	}
	collect(q.where)
	var out []*record
	for _, r := range s.byObject[q.object.name] {
		if r.deleted {
			continue
		}
		if q.where == nil || c.eval(q.where, r) {
			out = append(out, r)
		}
	}
	if len(q.orderBy) > 0 {
		slices.SortStableFunc(out, func(a, b *record) int {
			for _, k := range q.orderBy {
				d := cmpValues(c.get(a, k.field), c.get(b, k.field))
				if k.desc {
					d = -d
				}
				if d != 0 {
					return d
				}
			}
			return 0
		})
	}
	if q.limit >= 0 && len(out) > q.limit {
		out = out[:q.limit]
	}
	return out
}

// cmpValues orders two field values; nulls sort first, as in SOQL's
// default NULLS FIRST for ascending order.
func cmpValues(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch x := a.(type) {
	case string:
		return strings.Compare(x, b.(string))
	case time.Time:
		return x.Compare(b.(time.Time))
	case bool:
		y := b.(bool)
		if x == y {
			return 0
		} else if !x {
			return -1
		}
		return 1
	case float64:
		y := b.(float64)
		if x < y {
			return -1
		} else if x > y {
			return 1
		}
	}
	return 0
}

// render writes a record as the query resource does: attributes, then the
// selected fields.
func (s *Server) render(c *evalCtx, r *record, fields []*fieldDef, version string) map[string]any {
	row := map[string]any{
		"attributes": map[string]any{"type": r.obj.name, "url": fmt.Sprintf("/services/data/%s/sobjects/%s/%s", version, r.obj.name, r.id())},
	}
	for _, f := range fields {
		v := c.get(r, f)
		if t, ok := v.(time.Time); ok {
			v = formatDatetime(t)
		}
		row[f.name] = v
	}
	return row
}

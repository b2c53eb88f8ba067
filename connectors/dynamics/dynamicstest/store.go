package dynamicstest

import (
	"fmt"
	"maps"
	"strings"
	"time"
)

// colType is an attribute's type, as $filter type-checks literals.
type colType int

const (
	ctString colType = iota
	ctBool
	ctTime
	ctGUID
	ctInt
)

// entity is one table: its entity set, logical name, primary key and
// attributes.
type entity struct {
	set, logical, key string
	// nav is the marketing list's navigation property to this table.
	nav string
	// listCode is the list's createdfromcode for members of this table.
	listCode int
	cols     map[string]colType
	recs     []*record
}

// standard attributes every table the sync touches has.
var standardCols = map[string]colType{
	"emailaddress1": ctString, "emailaddress2": ctString, "emailaddress3": ctString,
	"donotbulkemail": ctBool, "donotemail": ctBool, "donotbulkpostalmail": ctBool, "donotphone": ctBool,
	"modifiedon": ctTime, "createdon": ctTime, "statecode": ctInt, "versionnumber": ctInt,
}

func newEntities() map[string]*entity {
	def := func(set, logical string, listCode int, extra ...string) *entity {
		e := &entity{set: set, logical: logical, key: logical + "id", nav: "list" + logical + "_association", listCode: listCode, cols: maps.Clone(standardCols)}
		e.cols[e.key] = ctGUID
		for _, c := range extra {
			e.cols[c] = ctString
		}
		return e
	}
	return map[string]*entity{
		"contacts": def("contacts", "contact", 2, "firstname", "lastname", "fullname", "jobtitle"),
		"leads":    def("leads", "lead", 4, "firstname", "lastname", "fullname", "companyname", "subject"),
		"accounts": def("accounts", "account", 1, "name"),
	}
}

// entityByLogical finds a table by its logical name; the caller holds s.mu.
func (s *Server) entityByLogical(name string) *entity {
	for _, e := range s.entities {
		if e.logical == name {
			return e
		}
	}
	return nil
}

// record is one row. The standard columns are fields, not map entries, so
// that a million records fit in memory.
type record struct {
	ent                 *entity
	id                  string
	first, last, extra  string // extra: companyname (lead), name (account), jobtitle (contact)
	email               [3]string
	dnbe, dne, dnpm, dp bool
	created, modified   time.Time
	version             int64
	custom              map[string]any
	deleted             bool
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// get reads one attribute; the caller holds s.mu.
func (r *record) get(col string) any {
	switch col {
	case r.ent.key:
		return r.id
	case "emailaddress1":
		return nilIfEmpty(r.email[0])
	case "emailaddress2":
		return nilIfEmpty(r.email[1])
	case "emailaddress3":
		return nilIfEmpty(r.email[2])
	case "donotbulkemail":
		return r.dnbe
	case "donotemail":
		return r.dne
	case "donotbulkpostalmail":
		return r.dnpm
	case "donotphone":
		return r.dp
	case "modifiedon":
		return r.modified
	case "createdon":
		return r.created
	case "statecode":
		return 0
	case "versionnumber":
		return r.version
	case "firstname":
		return nilIfEmpty(r.first)
	case "lastname":
		return nilIfEmpty(r.last)
	case "fullname":
		return nilIfEmpty(strings.TrimSpace(r.first + " " + r.last))
	case "companyname", "name", "jobtitle":
		return nilIfEmpty(r.extra)
	}
	return r.custom[col]
}

// writable reports whether a PATCH may set col.
func (e *entity) writable(col string) bool {
	switch col {
	case e.key, "modifiedon", "createdon", "versionnumber", "fullname", "statecode":
		return false
	}
	_, ok := e.cols[col]
	return ok
}

// set writes one attribute already type-checked; the caller holds s.mu.
func (r *record) set(col string, v any) {
	str, _ := v.(string)
	b, _ := v.(bool)
	switch col {
	case "emailaddress1":
		r.email[0] = str
	case "emailaddress2":
		r.email[1] = str
	case "emailaddress3":
		r.email[2] = str
	case "donotbulkemail":
		r.dnbe = b
	case "donotemail":
		r.dne = b
	case "donotbulkpostalmail":
		r.dnpm = b
	case "donotphone":
		r.dp = b
	case "firstname":
		r.first = str
	case "lastname":
		r.last = str
	case "companyname", "name", "jobtitle":
		r.extra = str
	default:
		if r.custom == nil {
			r.custom = map[string]any{}
		}
		r.custom[col] = v
	}
}

func (r *record) clone() *record {
	c := *r
	c.custom = maps.Clone(r.custom)
	return &c
}

// list is a marketing list (reference A5).
type list struct {
	id, name string
	dynamic  bool
	code     int    // createdfromcode: 1 account, 2 contact, 4 lead
	query    string // FetchXML of a dynamic list
	members  []string
	member   map[string]bool
	modified time.Time
	version  int64
}

// Person seeds a contact, a lead or an account.
type Person struct {
	FirstName, LastName string
	// Email, Email2 and Email3 are emailaddress1, 2 and 3.
	Email, Email2, Email3 string
	// Company is the lead's companyname; an account's name is Company, or
	// the full name when Company is empty.
	Company string
	// OptedOut sets donotbulkemail; DoNotEmail sets donotemail.
	OptedOut, DoNotEmail bool
	// Custom holds custom column values by logical name ("new_optout":
	// true); the columns are created on the table if new.
	Custom map[string]any
}

func (s *Server) now() time.Time {
	t := s.opts.Clock().UTC()
	if s.opts.FractionalSeconds {
		return t.Truncate(time.Millisecond)
	}
	return t.Truncate(time.Second)
}

// insert creates a record; the caller holds s.mu.
func (s *Server) insert(set string, p Person) *record {
	e := s.entities[set]
	s.version++
	now := s.now()
	r := &record{ent: e, id: NewGUID(), first: p.FirstName, last: p.LastName, email: [3]string{p.Email, p.Email2, p.Email3},
		dnbe: p.OptedOut, dne: p.DoNotEmail, created: now, modified: now, version: s.version}
	switch set {
	case "leads":
		r.extra = p.Company
	case "accounts":
		r.extra = p.Company
		if r.extra == "" {
			r.extra = strings.TrimSpace(p.FirstName + " " + p.LastName)
		}
	}
	for k, v := range p.Custom {
		k = strings.ToLower(k)
		if _, ok := e.cols[k]; !ok {
			switch v.(type) {
			case bool:
				e.cols[k] = ctBool
			case int:
				e.cols[k] = ctInt
			default:
				e.cols[k] = ctString
			}
		}
		r.set(k, v)
	}
	e.recs = append(e.recs, r)
	s.byID[r.id] = r
	return r
}

// AddContact seeds a contact and returns its contactid.
func (s *Server) AddContact(p Person) string { return s.add("contacts", p) }

// AddLead seeds a lead and returns its leadid.
func (s *Server) AddLead(p Person) string { return s.add("leads", p) }

// AddAccount seeds an account and returns its accountid.
func (s *Server) AddAccount(p Person) string { return s.add("accounts", p) }

func (s *Server) add(set string, p Person) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.insert(set, p).id
}

// Seed adds n records to the entity set ("contacts", "leads",
// "accounts"), the i-th from gen(i), and returns their ids: a million
// records take a few seconds and a few hundred megabytes.
func (s *Server) Seed(set string, n int, gen func(i int) Person) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entities[set] == nil {
		panic("dynamicstest: no entity set " + set)
	}
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.insert(set, gen(i)).id
	}
	return ids
}

// AddColumn creates a custom column (a publisher-prefixed logical name
// such as "new_optin") on a table ("contact", "lead", "account"); bool
// columns read false on every record until written.
func (s *Server) AddColumn(table, name string, boolean bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entityByLogical(table)
	if e == nil {
		panic("dynamicstest: no table " + table)
	}
	e.cols[name] = ctString
	if boolean {
		e.cols[name] = ctBool
		for _, r := range e.recs {
			if _, ok := r.custom[name]; !ok {
				r.set(name, false)
			}
		}
	}
}

// AddStaticList creates a static marketing list of members of the table
// ("contact", "lead" or "account") and returns its listid.
func (s *Server) AddStaticList(name, table string) string {
	return s.addList(name, table, false, "")
}

// AddDynamicList creates a dynamic marketing list whose members are the
// records fetchXML returns, and returns its listid.
func (s *Server) AddDynamicList(name, table, fetchXML string) string {
	if _, err := parseFetch(fetchXML); err != nil {
		panic("dynamicstest: " + err.Error())
	}
	return s.addList(name, table, true, fetchXML)
}

func (s *Server) addList(name, table string, dynamic bool, query string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entityByLogical(table)
	if e == nil {
		panic("dynamicstest: no table " + table)
	}
	s.version++
	l := &list{id: NewGUID(), name: name, dynamic: dynamic, code: e.listCode, query: query, member: map[string]bool{}, modified: s.now(), version: s.version}
	s.lists[l.id] = l
	return l.id
}

// AddListMember adds records to a static list, as AddMemberList does;
// joining a list does not touch the record's modifiedon. It panics on an
// id it does not know or a record of the wrong table: a test bug.
func (s *Server) AddListMember(listID string, recordIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lists[listID]
	if l == nil || l.dynamic {
		panic("dynamicstest: no static list " + listID)
	}
	for _, id := range recordIDs {
		r := s.byID[id]
		if r == nil || r.ent.listCode != l.code {
			panic(fmt.Sprintf("dynamicstest: record %s cannot join list %s", id, listID))
		}
		if !l.member[id] {
			l.member[id] = true
			l.members = append(l.members, id)
		}
	}
}

// Update changes columns of a record as a user in the app would, moving
// its modifiedon and version.
func (s *Server) Update(id string, cols map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.byID[id]
	if r == nil || r.deleted {
		return fmt.Errorf("dynamicstest: no record %s", id)
	}
	for k, v := range cols {
		if !r.ent.writable(k) {
			return fmt.Errorf("dynamicstest: no writable column %s on %s", k, r.ent.logical)
		}
		r.set(k, v)
	}
	s.touch(r)
	return nil
}

// touch stamps a write; the caller holds s.mu.
func (s *Server) touch(r *record) {
	s.version++
	r.version = s.version
	r.modified = s.now()
}

// Delete deletes a record: queries no longer return it and a PATCH with
// If-Match: * gets 404.
func (s *Server) Delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.byID[id]; r != nil {
		r.deleted = true
	}
}

// Record returns a record's columns by logical name (modifiedon as a
// time.Time, absent text as nil).
func (s *Server) Record(id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.byID[id]
	if r == nil || r.deleted {
		return nil, false
	}
	out := map[string]any{}
	for c := range r.ent.cols {
		out[c] = r.get(c)
	}
	return out, true
}

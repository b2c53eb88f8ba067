package bullhorntest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fieldType is how a field is held and rendered.
type fieldType int

const (
	ftString    fieldType = iota
	ftBool                // JSON true/false
	ftInt                 // JSON number (ids, customInt)
	ftFloat               // JSON number
	ftTimestamp           // epoch milliseconds, JSON number
)

type fieldDef struct {
	name     string
	typ      fieldType
	readOnly bool
	maxLen   int // strings; 0 means unbounded
}

// entityDef is one entity's fields, from the reference's entityref pages
// (B2): the standard fields the sync touches and the custom ranges.
type entityDef struct {
	name   string
	fields map[string]*fieldDef
	// assoc names the Tearsheet association that holds this entity's
	// records, "" when tearsheets do not hold it.
	assoc string
}

func (e *entityDef) field(name string) *fieldDef { return e.fields[name] }

func newEntity(name string, emailLen int, custom map[string]int, assoc string) *entityDef {
	e := &entityDef{name: name, fields: map[string]*fieldDef{}, assoc: assoc}
	add := func(n string, t fieldType, ro bool, maxLen int) {
		e.fields[n] = &fieldDef{name: n, typ: t, readOnly: ro, maxLen: maxLen}
	}
	add("id", ftInt, true, 0)
	add("firstName", ftString, false, 50)
	add("lastName", ftString, false, 50)
	add("name", ftString, false, 100)
	add("email", ftString, false, emailLen)
	add("email2", ftString, false, 100)
	add("email3", ftString, false, 100)
	add("massMailOptOut", ftBool, false, 0)
	add("isDeleted", ftBool, false, 0)
	add("status", ftString, false, 100)
	add("dateAdded", ftTimestamp, true, 0)
	add("dateLastModified", ftTimestamp, true, 0)
	for prefix, n := range custom {
		t := ftString
		maxLen := 100
		switch prefix {
		case "customInt":
			t, maxLen = ftInt, 0
		case "customFloat":
			t, maxLen = ftFloat, 0
		case "customDate":
			t, maxLen = ftTimestamp, 0
		case "customTextBlock":
			maxLen = 0
		}
		for i := 1; i <= n; i++ {
			add(prefix+strconv.Itoa(i), t, false, maxLen)
		}
	}
	return e
}

// The entities, with the custom field ranges of the reference (B2).
// ClientContact's email is String(60), the others' String(100).
var entities = map[string]*entityDef{
	"Candidate": newEntity("Candidate", 100, map[string]int{
		"customText": 40, "customTextBlock": 10, "customInt": 23, "customFloat": 23, "customDate": 13,
	}, "candidates"),
	"ClientContact": newEntity("ClientContact", 60, map[string]int{
		"customText": 20, "customTextBlock": 5, "customInt": 3, "customFloat": 3, "customDate": 3,
	}, "clientContacts"),
	"Lead": newEntity("Lead", 100, map[string]int{
		"customText": 20, "customTextBlock": 5, "customInt": 3, "customFloat": 3, "customDate": 3,
	}, ""),
}

// Entities are the person entities the emulator holds.
var Entities = []string{"Candidate", "ClientContact", "Lead"}

type record struct {
	entity *entityDef
	id     int64
	vals   map[string]any
}

func (r *record) dlm() int64 { v, _ := r.vals["dateLastModified"].(int64); return v }

// table holds one entity's records by id and, lazily sorted, by
// (dateLastModified, id) for the searches that page in that order.
type table struct {
	byID  map[int64]*record
	ids   []int64 // ascending
	byMod []*record
	dirty bool
}

type tearsheet struct {
	id      int64
	name    string
	members map[string]map[int64]bool // association -> ids
}

// Person seeds a Candidate, ClientContact or Lead.
type Person struct {
	FirstName, LastName   string
	Email, Email2, Email3 string
	// OptedOut sets massMailOptOut.
	OptedOut bool
	// Custom holds custom field values ("customText3": "Yes").
	Custom map[string]any
	// Deleted seeds a soft-deleted record (isDeleted true).
	Deleted bool
}

func (s *Server) nowMillis() int64 { return s.opts.Clock().UnixMilli() }

// add inserts a record; the caller holds s.mu.
func (s *Server) add(entity string, p Person) int64 {
	e := entities[entity]
	if e == nil {
		panic("bullhorntest: no entity " + entity)
	}
	t := s.tables[entity]
	s.seq++
	id := s.seq
	now := s.nowMillis()
	r := &record{entity: e, id: id, vals: map[string]any{
		"id": id, "firstName": p.FirstName, "lastName": p.LastName,
		"name":  strings.TrimSpace(p.FirstName + " " + p.LastName),
		"email": nilIfEmpty(p.Email), "email2": nilIfEmpty(p.Email2), "email3": nilIfEmpty(p.Email3),
		"massMailOptOut": p.OptedOut, "isDeleted": p.Deleted, "status": "Active",
		"dateAdded": now, "dateLastModified": now,
	}}
	for k, v := range p.Custom {
		f := e.field(k)
		if f == nil || !strings.HasPrefix(k, "custom") {
			panic(fmt.Sprintf("bullhorntest: %s has no custom field %s", entity, k))
		}
		r.vals[k] = stored(f, v)
	}
	t.byID[id] = r
	t.ids = append(t.ids, id)
	t.byMod = append(t.byMod, r)
	if n := len(t.byMod); n > 1 && lessMod(t.byMod[n-1], t.byMod[n-2]) {
		t.dirty = true
	}
	return id
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// stored converts a Go value to the field's stored form.
func stored(f *fieldDef, v any) any {
	switch x := v.(type) {
	case int:
		if f.typ == ftFloat {
			return float64(x)
		}
		return int64(x)
	case time.Time:
		return x.UnixMilli()
	}
	return v
}

func lessMod(a, b *record) bool {
	if a.dlm() != b.dlm() {
		return a.dlm() < b.dlm()
	}
	return a.id < b.id
}

// sorted returns the table's records in (dateLastModified, id) order;
// the caller holds s.mu.
func (t *table) sorted() []*record {
	if t.dirty {
		slices.SortFunc(t.byMod, func(a, b *record) int {
			switch {
			case lessMod(a, b):
				return -1
			case lessMod(b, a):
				return 1
			}
			return 0
		})
		t.dirty = false
	}
	return t.byMod
}

// AddCandidate seeds a Candidate and returns its id.
func (s *Server) AddCandidate(p Person) int64 { return s.Add("Candidate", p) }

// AddClientContact seeds a ClientContact and returns its id.
func (s *Server) AddClientContact(p Person) int64 { return s.Add("ClientContact", p) }

// AddLead seeds a Lead and returns its id.
func (s *Server) AddLead(p Person) int64 { return s.Add("Lead", p) }

// Add seeds a record of entity (Candidate, ClientContact, Lead). Ids are
// unique across entities, as they are not in Bullhorn: it keeps tests
// from mixing them up.
func (s *Server) Add(entity string, p Person) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(entity, p)
}

// Seed adds n records of entity generated by gen(i) (i from 0), under one
// lock: a million records take a few seconds.
func (s *Server) Seed(entity string, n int, gen func(i int) Person) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[entity]
	t.ids = slices.Grow(t.ids, n)
	t.byMod = slices.Grow(t.byMod, n)
	for i := range n {
		s.add(entity, gen(i))
	}
}

// AddTearsheet seeds a Tearsheet and returns its id.
func (s *Server) AddTearsheet(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.tearsheets[s.seq] = &tearsheet{id: s.seq, name: name, members: map[string]map[int64]bool{}}
	return s.seq
}

// AddToTearsheet adds records to a tearsheet, as PUT
// entity/Tearsheet/{id}/candidates/{ids} does. Adding does not touch the
// records' dateLastModified. It panics on an unknown id: a test bug.
func (s *Server) AddToTearsheet(tearsheetID int64, ids ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tearsheets[tearsheetID]
	if ts == nil {
		panic(fmt.Sprintf("bullhorntest: no tearsheet %d", tearsheetID))
	}
	for _, id := range ids {
		r := s.find(id)
		if r == nil || r.entity.assoc == "" {
			panic(fmt.Sprintf("bullhorntest: no Candidate or ClientContact %d", id))
		}
		if ts.members[r.entity.assoc] == nil {
			ts.members[r.entity.assoc] = map[int64]bool{}
		}
		ts.members[r.entity.assoc][id] = true
	}
}

// RemoveFromTearsheet takes records off a tearsheet.
func (s *Server) RemoveFromTearsheet(tearsheetID int64, ids ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ts := s.tearsheets[tearsheetID]; ts != nil {
		for _, m := range ts.members {
			for _, id := range ids {
				delete(m, id)
			}
		}
	}
}

// find looks a record up by id in every entity; the caller holds s.mu.
func (s *Server) find(id int64) *record {
	for _, t := range s.tables {
		if r := t.byID[id]; r != nil {
			return r
		}
	}
	return nil
}

// Update changes fields of a record as a user in Bullhorn would, moving
// its dateLastModified.
func (s *Server) Update(id int64, fields map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.find(id)
	if r == nil {
		return fmt.Errorf("bullhorntest: no record %d", id)
	}
	for k, v := range fields {
		f := r.entity.field(k)
		if f == nil {
			return fmt.Errorf("bullhorntest: %s has no field %s", r.entity.name, k)
		}
		r.vals[k] = stored(f, v)
	}
	s.touch(r)
	return nil
}

// touch moves dateLastModified; the caller holds s.mu.
func (s *Server) touch(r *record) {
	r.vals["dateLastModified"] = s.nowMillis()
	s.tables[r.entity.name].dirty = true
}

// Record returns a copy of a record's fields (timestamps as epoch ms).
func (s *Server) Record(id int64) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.find(id)
	if r == nil {
		return nil, false
	}
	out := make(map[string]any, len(r.vals))
	for k, v := range r.vals {
		out[k] = v
	}
	return out, true
}

// OptedOut reports a record's massMailOptOut.
func (s *Server) OptedOut(id int64) bool {
	rec, _ := s.Record(id)
	return rec["massMailOptOut"] == true
}

// Count is the number of records of entity.
func (s *Server) Count(entity string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tables[entity].ids)
}

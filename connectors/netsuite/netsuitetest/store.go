package netsuitetest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// Entity is a customer or contact as seeded and inspected.
type Entity struct {
	// ID is the internal id, assigned by AddCustomer/AddContact.
	ID          string
	Email       string
	FirstName   string
	LastName    string
	CompanyName string
	EntityID    string
	IsInactive  bool
	// SubscriptionStatus is globalSubscriptionStatus: "1" Soft Opt-In,
	// "2" Soft Opt-Out, "3" Confirmed Opt-In, "4" Confirmed Opt-Out; ""
	// means "1".
	SubscriptionStatus string
	// Custom holds entity custom fields by script id ("custentity_optout"):
	// bool for checkboxes, string or float64 otherwise. A field seeded on
	// any record exists on all of them (NULL where unset).
	Custom map[string]any
	// LastModified is lastModifiedDate; zero means the server clock.
	LastModified time.Time
	// DateCreated is dateCreated; zero means LastModified.
	DateCreated time.Time
}

// entity is the stored form.
type entity struct {
	Entity
	id int64
}

// subscriptionNames are the refName of each globalSubscriptionStatus.
var subscriptionNames = map[string]string{"1": "Soft Opt-In", "2": "Soft Opt-Out", "3": "Confirmed Opt-In", "4": "Confirmed Opt-Out"}

// table is one record type.
type table struct {
	name   string
	rows   []*entity // in id order: ids only grow
	byID   map[int64]*entity
	custom map[string]bool // custom field -> is a checkbox
}

// standardColumns are the SuiteQL columns every entity table has here.
var standardColumns = []string{"id", "email", "firstname", "lastname", "companyname", "entityid", "isinactive", "globalsubscriptionstatus", "lastmodifieddate", "datecreated"}

func (t *table) has(col string) bool {
	_, ok := t.custom[col]
	return ok || slices.Contains(standardColumns, col)
}

func (t *table) columnNames() []string {
	return append(slices.Clone(standardColumns), slices.Sorted(maps.Keys(t.custom))...)
}

func str(s string) value {
	if s == "" {
		return value{}
	}
	return value{k: kStr, s: s}
}

func boolean(b bool) value {
	if b {
		return value{k: kStr, s: "T"}
	}
	return value{k: kStr, s: "F"}
}

// column is a row's SuiteQL value: strings, "T"/"F" booleans, NULL for
// what is unset.
func (t *table) column(e *entity, col string) value {
	switch col {
	case "id":
		return value{k: kNum, n: float64(e.id)}
	case "email":
		return str(e.Email)
	case "firstname":
		return str(e.FirstName)
	case "lastname":
		return str(e.LastName)
	case "companyname":
		return str(e.CompanyName)
	case "entityid":
		return str(e.EntityID)
	case "isinactive":
		return boolean(e.IsInactive)
	case "globalsubscriptionstatus":
		return str(e.SubscriptionStatus)
	case "lastmodifieddate":
		return value{k: kTime, t: e.LastModified}
	case "datecreated":
		return value{k: kTime, t: e.DateCreated}
	}
	switch v := e.Custom[col].(type) {
	case bool:
		return boolean(v)
	case string:
		return str(v)
	case float64:
		return value{k: kNum, n: v}
	case int:
		return value{k: kNum, n: float64(v)}
	}
	if t.custom[col] {
		return boolean(false) // an unticked checkbox reads "F", never NULL
	}
	return value{}
}

// add stores e and returns its id. Caller holds s.mu.
func (s *Server) add(typ string, e Entity) string {
	t := s.tables[typ]
	s.nextID++
	if e.SubscriptionStatus == "" {
		e.SubscriptionStatus = "1"
	}
	if e.LastModified.IsZero() {
		e.LastModified = s.now()
	}
	if e.DateCreated.IsZero() {
		e.DateCreated = e.LastModified
	}
	e.Custom = maps.Clone(e.Custom)
	for k, v := range e.Custom {
		_, isBool := v.(bool)
		if _, known := t.custom[k]; !known {
			for _, tt := range s.tables {
				tt.custom[k] = isBool
			}
		}
	}
	e.ID = strconv.FormatInt(s.nextID, 10)
	ent := &entity{Entity: e, id: s.nextID}
	t.rows = append(t.rows, ent)
	t.byID[ent.id] = ent
	return e.ID
}

// AddCustomer stores a customer and returns its internal id. Internal ids
// are unique across customers and contacts, as NetSuite's entity ids are.
func (s *Server) AddCustomer(e Entity) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add("customer", e)
}

// AddContact stores a contact and returns its internal id.
func (s *Server) AddContact(e Entity) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add("contact", e)
}

// Entity returns a copy of a stored record.
func (s *Server) Entity(typ, id string) (Entity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookup(typ, id)
	if e == nil {
		return Entity{}, false
	}
	out := e.Entity
	out.Custom = maps.Clone(e.Custom)
	return out, true
}

// Update changes a stored record through f, as a user in the UI would, and
// moves its lastModifiedDate to the server clock.
func (s *Server) Update(typ, id string, f func(*Entity)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookup(typ, id)
	if e == nil {
		return fmt.Errorf("netsuitetest: no %s %s", typ, id)
	}
	f(&e.Entity)
	e.ID = strconv.FormatInt(e.id, 10)
	e.LastModified = s.now()
	return nil
}

func (s *Server) lookup(typ, id string) *entity {
	t, ok := s.tables[typ]
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	return t.byID[n]
}

// FailWrites makes every PATCH of ref answer a server error (on) or work
// again (off): a transient failure of one record, for tests.
func (s *Server) FailWrites(ref connectors.RecordRef, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing == nil {
		s.failing = map[connectors.RecordRef]bool{}
	}
	s.failing[ref] = on
}

// AddSavedSearch creates (or replaces) a saved search, by internal id or
// script id ("customsearch_mc_sync"), whose results are refs.
func (s *Server) AddSavedSearch(id string, refs ...connectors.RecordRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searches[id] = slices.Clone(refs)
}

// AddToSavedSearch adds refs to a saved search's results, as when a record
// starts to meet its criteria. Nothing about the records changes: their
// lastModifiedDate stays where it was.
func (s *Server) AddToSavedSearch(id string, refs ...connectors.RecordRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searches[id] = append(s.searches[id], refs...)
}

// RemoveFromSavedSearch takes refs out of a saved search's results.
func (s *Server) RemoveFromSavedSearch(id string, refs ...connectors.RecordRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searches[id] = slices.DeleteFunc(s.searches[id], func(r connectors.RecordRef) bool { return slices.Contains(refs, r) })
}

// Population describes a generated data set.
type Population struct {
	Customers, Contacts int
	// OptedOut is the share of records opted out (half Soft, half
	// Confirmed Opt-Out).
	OptedOut float64
	// Duplicates is the share of contacts that reuse a customer's address.
	Duplicates float64
	// SavedSearch, when set, is created with InSearch of the records.
	SavedSearch string
	InSearch    float64
	// Seed makes the population reproducible.
	Seed uint64
	// Since spreads lastModifiedDate evenly from Since to the clock; zero
	// means a year back.
	Since time.Time
}

// Populate adds a generated population (e.g. 100k records for a
// benchmark) and returns the refs it created.
func (s *Server) Populate(p Population) []connectors.RecordRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	rng := rand.New(rand.NewPCG(p.Seed, 7))
	now := s.now()
	since := p.Since
	if since.IsZero() {
		since = now.AddDate(-1, 0, 0)
	}
	span := now.Sub(since)
	total := p.Customers + p.Contacts
	refs := make([]connectors.RecordRef, 0, total)
	var emails []string
	for i := range total {
		typ := "customer"
		if i >= p.Customers {
			typ = "contact"
		}
		email := fmt.Sprintf("person%d.%d@example.com", s.nextID+1, rng.IntN(1000))
		if typ == "contact" && len(emails) > 0 && rng.Float64() < p.Duplicates {
			email = emails[rng.IntN(len(emails))]
		}
		if typ == "customer" {
			emails = append(emails, email)
		}
		status := []string{"1", "3"}[rng.IntN(2)]
		if rng.Float64() < p.OptedOut {
			status = []string{"2", "4"}[rng.IntN(2)]
		}
		lm := since.Add(time.Duration(float64(span) * float64(i) / float64(max(total, 1)))).Truncate(time.Second)
		id := s.add(typ, Entity{Email: email, SubscriptionStatus: status, LastModified: lm, FirstName: "First", LastName: fmt.Sprintf("Last%d", i)})
		ref := connectors.RecordRef{Type: typ, ID: id}
		refs = append(refs, ref)
		if p.SavedSearch != "" && rng.Float64() < p.InSearch {
			s.searches[p.SavedSearch] = append(s.searches[p.SavedSearch], ref)
		}
	}
	return refs
}

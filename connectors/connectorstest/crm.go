package connectorstest

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// CRM is an in-memory CRM whose records carry the three places an opt-out
// can live: a NetSuite-style standard status, custom boolean fields (a
// custom opt-out, an inverted opt-in, or a flag such as the bounce field),
// and list memberships that, as in the real CRMs, do not modify the record
// when they change. Addresses are matched case-insensitively. Record ids are
// "1", "2", ... in the order records are added, across all types.
type CRM struct {
	mu      sync.Mutex
	records []*record
	writes  int
}

// record is one stored record; CRM.mu guards it.
type record struct {
	ref      connectors.RecordRef
	email    string
	status   string
	custom   map[string]bool
	fields   map[string]string
	lists    map[string]time.Time // list -> joined at
	modified time.Time
	reject   bool
}

var _ connectors.CRM = (*CRM)(nil)

// The NetSuite globalSubscriptionStatus values Add takes: the standard
// opt-out is set by StatusSoftOptOut and StatusConfirmedOptOut, and a write
// of the opt-out leaves a confirmed opt-out as it is.
const (
	StatusSoftOptIn       = "1"
	StatusSoftOptOut      = "2"
	StatusConfirmedOptIn  = "3"
	StatusConfirmedOptOut = "4"
)

// NewCRM returns a CRM with no records.
func NewCRM() *CRM { return &CRM{} }

// Add creates a record of type typ with the given standard status (one of
// the Status constants) in each of lists, modified now, and returns its
// reference for the setters and Record.
func (c *CRM) Add(typ, email, status string, lists ...string) connectors.RecordRef {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	r := &record{
		ref:   connectors.RecordRef{Type: typ, ID: strconv.Itoa(len(c.records) + 1)},
		email: email, status: status, custom: map[string]bool{}, fields: map[string]string{},
		lists: map[string]time.Time{}, modified: now,
	}
	for _, l := range lists {
		r.lists[l] = now
	}
	c.records = append(c.records, r)
	return r.ref
}

// SetCustom seeds the custom boolean field of ref, such as an opt-in that
// is set before the run. Like the other seeding setters it leaves the
// record's modification time alone: the test decides what a run sees as new.
func (c *CRM) SetCustom(ref connectors.RecordRef, field string, v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.find(ref).custom[field] = v
}

// SetField seeds a mapped field of ref, read by ListMembers.
func (c *CRM) SetField(ref connectors.RecordRef, field, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.find(ref).fields[field] = v
}

// Reject makes every write to ref fail transiently (or, with false, succeed
// again), as a record locked by another user does, so that a test can check
// that one failed record neither stops the run nor is forgotten.
func (c *CRM) Reject(ref connectors.RecordRef, reject bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.find(ref).reject = reject
}

// AddToList puts ref in list now. Joining a list does not modify the
// record, as in NetSuite and Salesforce: the sync must find it through the
// membership's own date.
func (c *CRM) AddToList(ref connectors.RecordRef, list string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.find(ref).lists[list] = time.Now()
}

// Writes counts the records written by SetOptOut and SetFlag, so that a
// test can check that a run wrote nothing.
func (c *CRM) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// RecordState is a copy of one record as the fake holds it.
type RecordState struct {
	Ref   connectors.RecordRef
	Email string
	// Status is the standard opt-out status, one of the Status constants.
	Status string
	// Custom holds the custom boolean fields that were seeded or written.
	Custom map[string]bool
	// Fields holds the mapped fields seeded by SetField.
	Fields map[string]string
	// Lists maps each list the record is in to when it joined.
	Lists map[string]time.Time
	// Modified is when the record was added or last written.
	Modified time.Time
}

// OptedOut reports whether the record is opted out through f, by the same
// rule the fake's reads apply.
func (r RecordState) OptedOut(f connectors.OptOutField) bool {
	return optedOut(r.Status, r.Custom, f)
}

// Record returns a copy of the record ref; it panics when there is none,
// since that is a mistake in the test.
func (c *CRM) Record(ref connectors.RecordRef) RecordState {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.find(ref)
	return RecordState{Ref: r.ref, Email: r.email, Status: r.status, Custom: maps.Clone(r.custom),
		Fields: maps.Clone(r.fields), Lists: maps.Clone(r.lists), Modified: r.modified}
}

// find returns the record ref or panics; the caller holds c.mu.
func (c *CRM) find(ref connectors.RecordRef) *record {
	for _, r := range c.records {
		if r.ref == ref {
			return r
		}
	}
	panic("connectorstest: no record " + ref.String())
}

// optedOut applies f: a custom field opts out when true, an inverted one
// when it is set and false (an unset opt-in is no choice at all), and the
// standard status when it is an opt-out.
func optedOut(status string, custom map[string]bool, f connectors.OptOutField) bool {
	switch f.Kind {
	case connectors.OptOutCustom:
		return custom[f.Field]
	case connectors.OptOutInverted:
		v, set := custom[f.Field]
		return set && !v
	}
	return status == StatusSoftOptOut || status == StatusConfirmedOptOut
}

// inLists reports whether r is in one of lists (true when none are asked
// for) and when it last joined one of them.
func (r *record) inLists(lists []string) (bool, time.Time) {
	if len(lists) == 0 {
		return true, time.Time{}
	}
	var joined time.Time
	in := false
	for _, l := range lists {
		if t, ok := r.lists[l]; ok {
			in = true
			if t.After(joined) {
				joined = t
			}
		}
	}
	return in, joined
}

// OptedOut returns the opted-out records of q.Types modified after q.Since
// or, with q.Lists, that joined one of the lists after it; records outside
// the lists come back with InLists false.
func (c *CRM) OptedOut(_ context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []connectors.Record
	for _, r := range c.records {
		if !slices.Contains(q.Types, r.ref.Type) || !optedOut(r.status, r.custom, q.Field) {
			continue
		}
		in, joined := r.inLists(q.Lists)
		if q.Since.IsZero() || r.modified.After(q.Since) || (in && joined.After(q.Since)) {
			all = append(all, connectors.Record{Ref: r.ref, Email: r.email, OptedOut: true, InLists: in})
		}
	}
	rs, next := page(all, q.Cursor, q.PageSize)
	return connectors.RecordPage{Records: rs, Next: next}, nil
}

// FindByEmail returns every record of types whose address is one of emails.
func (c *CRM) FindByEmail(_ context.Context, types []string, f connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []connectors.Record
	for _, r := range c.records {
		if slices.Contains(types, r.ref.Type) && slices.ContainsFunc(emails, func(e string) bool { return strings.EqualFold(e, r.email) }) {
			out = append(out, connectors.Record{Ref: r.ref, Email: r.email, OptedOut: optedOut(r.status, r.custom, f)})
		}
	}
	return out, nil
}

// SetOptOut writes the opt-out through f: it sets a custom field, clears an
// inverted one, or moves the standard status to a soft opt-out (a
// confirmed opt-out stays as it is). Unknown references are skipped.
func (c *CRM) SetOptOut(_ context.Context, f connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	return c.write(refs, func(r *record) {
		switch f.Kind {
		case connectors.OptOutCustom:
			r.custom[f.Field] = true
		case connectors.OptOutInverted:
			r.custom[f.Field] = false
		default:
			if r.status != StatusConfirmedOptOut {
				r.status = StatusSoftOptOut
			}
		}
	})
}

// SetFlag sets the custom boolean field to true and nothing else: a bounce
// flag is not an opt-out, so the standard status is never touched.
func (c *CRM) SetFlag(_ context.Context, field string, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	return c.write(refs, func(r *record) { r.custom[field] = true })
}

// write applies set to each record of refs, failing the rejected ones
// transiently, and stamps the written ones as modified.
func (c *CRM) write(refs []connectors.RecordRef, set func(*record)) (connectors.BatchResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var res connectors.BatchResult
	for _, ref := range refs {
		for _, r := range c.records {
			if r.ref != ref {
				continue
			}
			if r.reject {
				res.Failed = append(res.Failed, connectors.Failure{Record: ref, Code: "UNEXPECTED_ERROR", Message: "a transient failure", Retryable: true})
				continue
			}
			set(r)
			r.modified = time.Now()
			c.writes++
			res.Written++
		}
	}
	return res, nil
}

// ListMembers returns the records of q.Types in q.Lists (all of them when
// none are given) modified at or after q.Since, with the fields of q.Fields
// that are set.
func (c *CRM) ListMembers(_ context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []connectors.Record
	for _, r := range c.records {
		in, _ := r.inLists(q.Lists)
		if !slices.Contains(q.Types, r.ref.Type) || !in || r.modified.Before(q.Since) {
			continue
		}
		fields := map[string]string{}
		for _, f := range q.Fields {
			if v, ok := r.fields[f]; ok {
				fields[f] = v
			}
		}
		all = append(all, connectors.Record{Ref: r.ref, Email: r.email, OptedOut: optedOut(r.status, r.custom, q.Field), InLists: true, Fields: fields})
	}
	rs, next := page(all, q.Cursor, q.PageSize)
	return connectors.RecordPage{Records: rs, Next: next}, nil
}

// MaxBatch is small enough that a test with a few hundred records crosses
// a batch boundary.
func (c *CRM) MaxBatch() int { return 200 }

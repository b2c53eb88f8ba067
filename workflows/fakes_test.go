package workflows_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// The fakes below are in-memory stand-ins for one piece each, used only by
// the workflow unit tests; the real connectors are tested against the
// emulators over HTTP, and the integration tests use those.

type fakeMember struct {
	status      connectors.MemberStatus
	fields      map[string]string
	lastChanged time.Time
	forgotten   bool
}

type fakeMarketing struct {
	mu      sync.Mutex
	members map[string]*fakeMember
	err     error // returned by every call when set
	calls   map[string]int
}

func newFakeMarketing() *fakeMarketing {
	return &fakeMarketing{members: map[string]*fakeMember{}, calls: map[string]int{}}
}

func (f *fakeMarketing) now() time.Time { return time.Now() }

func (f *fakeMarketing) add(email string, st connectors.MemberStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members[strings.ToLower(email)] = &fakeMember{status: st, fields: map[string]string{}, lastChanged: f.now()}
}

func (f *fakeMarketing) member(email string) fakeMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[strings.ToLower(email)]
	if !ok {
		return fakeMember{}
	}
	return *m
}

func (f *fakeMarketing) ChangedMembers(_ context.Context, req connectors.ChangesRequest) (connectors.MemberPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["changed"]++
	if f.err != nil {
		return connectors.MemberPage{}, f.err
	}
	var all []connectors.Member
	for email, m := range f.members {
		if m.status == req.Status && m.lastChanged.After(req.Since) {
			all = append(all, connectors.Member{Email: email, Status: m.status, LastChanged: m.lastChanged})
		}
	}
	slices.SortFunc(all, func(a, b connectors.Member) int { return a.LastChanged.Compare(b.LastChanged) })
	return pageOf(all, req.Cursor, req.PageSize, func(ms []connectors.Member, next string) connectors.MemberPage {
		return connectors.MemberPage{Members: ms, Next: next}
	}), nil
}

func pageOf[T, P any](all []T, cursor string, size int, mk func([]T, string) P) P {
	if size <= 0 {
		size = connectors.MaxPageSize
	}
	off, _ := strconv.Atoi(cursor)
	end := min(off+size, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return mk(all[min(off, len(all)):end], next)
}

func (f *fakeMarketing) Unsubscribe(_ context.Context, _ string, emails []string) (connectors.BatchResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["unsubscribe"]++
	if f.err != nil {
		return connectors.BatchResult{}, f.err
	}
	var res connectors.BatchResult
	for _, e := range emails {
		m, ok := f.members[strings.ToLower(e)]
		switch {
		case ok && m.forgotten:
			res.Failed = append(res.Failed, connectors.Failure{Email: e, Code: "Forgotten Email Not Subscribed", Message: "permanently deleted", Compliance: true})
		case ok && m.status == connectors.StatusCleaned:
			res.Failed = append(res.Failed, connectors.Failure{Email: e, Code: "Member In Compliance State", Message: "cleaned", Compliance: true})
		case ok:
			if m.status != connectors.StatusUnsubscribed {
				m.status, m.lastChanged = connectors.StatusUnsubscribed, f.now()
			}
			res.Written++
		default:
			f.members[strings.ToLower(e)] = &fakeMember{status: connectors.StatusUnsubscribed, fields: map[string]string{}, lastChanged: f.now()}
			res.Written++
		}
	}
	return res, nil
}

func (f *fakeMarketing) UpsertMembers(_ context.Context, _ string, members []connectors.MemberFields, statusIfNew connectors.MemberStatus) (connectors.BatchResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["upsert"]++
	var res connectors.BatchResult
	for _, mf := range members {
		m, ok := f.members[strings.ToLower(mf.Email)]
		if !ok {
			m = &fakeMember{status: statusIfNew, fields: map[string]string{}}
			f.members[strings.ToLower(mf.Email)] = m
			res.Added++
		}
		for k, v := range mf.Fields {
			m.fields[k] = v
		}
		m.lastChanged = f.now()
		res.Written++
	}
	return res, nil
}

func (f *fakeMarketing) Members(_ context.Context, _ string, emails []string) (map[string]connectors.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]connectors.Member{}
	for _, e := range emails {
		if m, ok := f.members[strings.ToLower(e)]; ok {
			out[e] = connectors.Member{Email: e, Status: m.status, LastChanged: m.lastChanged}
		}
	}
	return out, nil
}

func (f *fakeMarketing) MaxBatch() int { return 500 }

type fakeRecord struct {
	ref      connectors.RecordRef
	email    string
	status   string // NetSuite-style globalSubscriptionStatus: "1".."4"
	custom   map[string]bool
	fields   map[string]string
	lists    map[string]time.Time // list -> joined at
	modified time.Time
	reject   bool // SetOptOut fails for this record, transiently
}

type fakeCRM struct {
	mu      sync.Mutex
	records []*fakeRecord
	writes  int
}

func (c *fakeCRM) now() time.Time { return time.Now() }

func (c *fakeCRM) add(typ, email, status string, lists ...string) *fakeRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &fakeRecord{
		ref:   connectors.RecordRef{Type: typ, ID: strconv.Itoa(len(c.records) + 1)},
		email: email, status: status, custom: map[string]bool{}, fields: map[string]string{},
		lists: map[string]time.Time{}, modified: c.now(),
	}
	for _, l := range lists {
		r.lists[l] = r.modified
	}
	c.records = append(c.records, r)
	return r
}

func (c *fakeCRM) addToList(r *fakeRecord, list string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.lists[list] = c.now() // joining a list does not modify the record
}

func (c *fakeCRM) get(id string) fakeRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.records {
		if r.ref.ID == id {
			return *r
		}
	}
	panic("no record " + id)
}

func optedOut(r *fakeRecord, f connectors.OptOutField) bool {
	switch f.Kind {
	case connectors.OptOutCustom:
		return r.custom[f.Field]
	case connectors.OptOutInverted:
		v, set := r.custom[f.Field]
		return set && !v
	}
	return r.status == "2" || r.status == "4"
}

func inLists(r *fakeRecord, lists []string) (bool, time.Time) {
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

func (c *fakeCRM) OptedOut(_ context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []connectors.Record
	for _, r := range c.records {
		if !slices.Contains(q.Types, r.ref.Type) || !optedOut(r, q.Field) {
			continue
		}
		in, joined := inLists(r, q.Lists)
		if r.modified.After(q.Since) || (in && joined.After(q.Since)) {
			all = append(all, connectors.Record{Ref: r.ref, Email: r.email, OptedOut: true, InLists: in})
		}
	}
	return pageOf(all, q.Cursor, q.PageSize, func(rs []connectors.Record, next string) connectors.RecordPage {
		return connectors.RecordPage{Records: rs, Next: next}
	}), nil
}

func (c *fakeCRM) FindByEmail(_ context.Context, types []string, f connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []connectors.Record
	for _, r := range c.records {
		if slices.Contains(types, r.ref.Type) && slices.ContainsFunc(emails, func(e string) bool { return strings.EqualFold(e, r.email) }) {
			out = append(out, connectors.Record{Ref: r.ref, Email: r.email, OptedOut: optedOut(r, f)})
		}
	}
	return out, nil
}

// SetFlag sets a custom boolean, as SetOptOut does a custom opt-out.
func (c *fakeCRM) SetFlag(ctx context.Context, field string, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	return c.SetOptOut(ctx, connectors.OptOutField{Kind: connectors.OptOutCustom, Field: field}, refs)
}

func (c *fakeCRM) SetOptOut(_ context.Context, f connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
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
			switch f.Kind {
			case connectors.OptOutCustom:
				r.custom[f.Field] = true
			case connectors.OptOutInverted:
				r.custom[f.Field] = false
			default:
				if r.status != "4" {
					r.status = "2"
				}
			}
			r.modified = c.now()
			c.writes++
			res.Written++
		}
	}
	return res, nil
}

func (c *fakeCRM) ListMembers(_ context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []connectors.Record
	for _, r := range c.records {
		in, _ := inLists(r, q.Lists)
		if !slices.Contains(q.Types, r.ref.Type) || !in || r.modified.Before(q.Since) {
			continue
		}
		fields := map[string]string{}
		for _, f := range q.Fields {
			if v, ok := r.fields[f]; ok {
				fields[f] = v
			}
		}
		all = append(all, connectors.Record{Ref: r.ref, Email: r.email, OptedOut: optedOut(r, q.Field), InLists: true, Fields: fields})
	}
	return pageOf(all, q.Cursor, q.PageSize, func(rs []connectors.Record, next string) connectors.RecordPage {
		return connectors.RecordPage{Records: rs, Next: next}
	}), nil
}

func (c *fakeCRM) MaxBatch() int { return 200 }

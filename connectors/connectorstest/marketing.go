package connectorstest

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// Marketing is an in-memory audience that keeps Mailchimp's rules where
// the sync depends on them: a cleaned or permanently deleted ("forgotten")
// address refuses an unsubscribe with a compliance answer, an unsubscribe
// of an unknown address adds it as unsubscribed, an upsert never changes an
// existing member's status, and an update never adds a member. Addresses
// are matched case-insensitively, as Mailchimp's subscriber hash does. It
// has one audience: the audience argument of every call is ignored.
type Marketing struct {
	mu      sync.Mutex
	members map[string]*member // by lower-cased address
	err     error
	calls   map[string]int
}

// member is one stored member; Marketing.mu guards it.
type member struct {
	status      connectors.MemberStatus
	fields      map[string]string
	lastChanged time.Time
	forgotten   bool
}

var _ connectors.Marketing = (*Marketing)(nil)

// NewMarketing returns an empty audience.
func NewMarketing() *Marketing {
	return &Marketing{members: map[string]*member{}, calls: map[string]int{}}
}

// Add puts email in the audience in status st, changed now, replacing
// any member of that address, so that a test can seed the audience or move
// a member to a new status (a re-subscribe through a form) between runs.
func (m *Marketing) Add(email string, st connectors.MemberStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[strings.ToLower(email)] = &member{status: st, fields: map[string]string{}, lastChanged: time.Now()}
}

// Forget marks email as permanently deleted: Mailchimp then refuses to
// unsubscribe it, a compliance answer the sync must record and never
// retry. It panics when email was not added, since that is a mistake in
// the test.
func (m *Marketing) Forget(email string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, ok := m.members[strings.ToLower(email)]
	if !ok {
		panic("connectorstest: Forget: " + email + " is not in the audience")
	}
	mb.forgotten = true
}

// FailWith makes every later call return err (nil clears it), as a platform
// does that rejects the API key or is down.
func (m *Marketing) FailWith(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// Calls counts the calls made to one method of connectors.Marketing, named
// as in the interface ("ChangedMembers", "Unsubscribe", "UpsertMembers",
// "UpdateMembers", "Members"), failed calls included, so that a test can
// tell a retry from none.
func (m *Marketing) Calls(method string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[method]
}

// MemberState is a copy of one member as the fake holds it.
type MemberState struct {
	// Status is StatusNotFound for an address not in the audience.
	Status connectors.MemberStatus
	// Fields are the merge fields written by UpsertMembers.
	Fields map[string]string
	// LastChanged is when the status or the fields last changed.
	LastChanged time.Time
	// Forgotten is set by Forget.
	Forgotten bool
}

// Member returns a copy of the member of email; the zero MemberState when
// the address is not in the audience.
func (m *Marketing) Member(email string) MemberState {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, ok := m.members[strings.ToLower(email)]
	if !ok {
		return MemberState{}
	}
	return MemberState{Status: mb.status, Fields: maps.Clone(mb.fields), LastChanged: mb.lastChanged, Forgotten: mb.forgotten}
}

// call counts a call to method and returns the injected error, if any; the
// caller holds m.mu.
func (m *Marketing) call(method string) error {
	m.calls[method]++
	return m.err
}

// ChangedMembers returns the members in req.Status changed after req.Since
// (all of them when it is zero), oldest change first, with their merge
// fields when req.MergeFields asks, as Mailchimp's fields parameter does.
func (m *Marketing) ChangedMembers(_ context.Context, req connectors.ChangesRequest) (connectors.MemberPage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("ChangedMembers"); err != nil {
		return connectors.MemberPage{}, err
	}
	var all []connectors.Member
	for email, mb := range m.members {
		if mb.status == req.Status && (req.Since.IsZero() || mb.lastChanged.After(req.Since)) {
			got := connectors.Member{Email: email, Status: mb.status, LastChanged: mb.lastChanged}
			if req.MergeFields {
				got.Fields = maps.Clone(mb.fields)
			}
			all = append(all, got)
		}
	}
	// By address within one instant, so that pages do not depend on map order.
	slices.SortFunc(all, func(a, b connectors.Member) int {
		if c := a.LastChanged.Compare(b.LastChanged); c != 0 {
			return c
		}
		return strings.Compare(a.Email, b.Email)
	})
	ms, next := page(all, req.Cursor, req.PageSize)
	return connectors.MemberPage{Members: ms, Next: next}, nil
}

// Unsubscribe unsubscribes each address, adding unknown ones as
// unsubscribed; a cleaned or forgotten member is refused with a compliance
// failure, as Mailchimp refuses it.
func (m *Marketing) Unsubscribe(_ context.Context, _ string, emails []string) (connectors.BatchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Unsubscribe"); err != nil {
		return connectors.BatchResult{}, err
	}
	var res connectors.BatchResult
	for _, e := range emails {
		mb, ok := m.members[strings.ToLower(e)]
		switch {
		case ok && mb.forgotten:
			res.Failed = append(res.Failed, connectors.Failure{Email: e, Code: "Forgotten Email Not Subscribed", Message: "permanently deleted", Compliance: true})
		case ok && mb.status == connectors.StatusCleaned:
			res.Failed = append(res.Failed, connectors.Failure{Email: e, Code: "Member In Compliance State", Message: "cleaned", Compliance: true})
		case ok:
			// Already unsubscribed: written, but not changed again, so a
			// repeated write does not show up as a new change.
			if mb.status != connectors.StatusUnsubscribed {
				mb.status, mb.lastChanged = connectors.StatusUnsubscribed, time.Now()
			}
			res.Written++
		default:
			m.members[strings.ToLower(e)] = &member{status: connectors.StatusUnsubscribed, fields: map[string]string{}, lastChanged: time.Now()}
			res.Written++
			res.Added++
		}
	}
	return res, nil
}

// UpsertMembers writes the fields of each member, adding an unknown one in
// statusIfNew; an existing member's status is never touched.
func (m *Marketing) UpsertMembers(_ context.Context, _ string, members []connectors.MemberFields, statusIfNew connectors.MemberStatus) (connectors.BatchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("UpsertMembers"); err != nil {
		return connectors.BatchResult{}, err
	}
	var res connectors.BatchResult
	for _, mf := range members {
		mb, ok := m.members[strings.ToLower(mf.Email)]
		if !ok {
			mb = &member{status: statusIfNew, fields: map[string]string{}}
			m.members[strings.ToLower(mf.Email)] = mb
			res.Added++
		}
		maps.Copy(mb.fields, mf.Fields)
		mb.lastChanged = time.Now()
		res.Written++
	}
	return res, nil
}

// AddMembers adds each address not in the audience with status and its
// fields; an existing one is left as it is and listed in Existing.
func (m *Marketing) AddMembers(_ context.Context, _ string, members []connectors.MemberFields, status connectors.MemberStatus) (connectors.BatchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("AddMembers"); err != nil {
		return connectors.BatchResult{}, err
	}
	var res connectors.BatchResult
	for _, mf := range members {
		if _, ok := m.members[strings.ToLower(mf.Email)]; ok {
			res.Existing = append(res.Existing, mf.Email)
			continue
		}
		mb := &member{status: status, fields: map[string]string{}, lastChanged: time.Now()}
		maps.Copy(mb.fields, mf.Fields)
		m.members[strings.ToLower(mf.Email)] = mb
		res.Written++
		res.Added++
	}
	return res, nil
}

// UpdateMembers writes the fields of existing members only; an address
// not in the audience, or forgotten, fails for good ("not_found", neither
// retryable nor a compliance answer), as Mailchimp's PATCH answers 404, so
// that field sync cannot add back a member who left.
func (m *Marketing) UpdateMembers(_ context.Context, _ string, members []connectors.MemberFields) (connectors.BatchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("UpdateMembers"); err != nil {
		return connectors.BatchResult{}, err
	}
	var res connectors.BatchResult
	for _, mf := range members {
		mb, ok := m.members[strings.ToLower(mf.Email)]
		if !ok || mb.forgotten {
			res.Failed = append(res.Failed, connectors.Failure{Email: mf.Email, Code: "not_found", Message: "no longer in the audience; not added back"})
			continue
		}
		maps.Copy(mb.fields, mf.Fields)
		mb.lastChanged = time.Now()
		res.Written++
	}
	return res, nil
}

// Members looks each address up; an address not in the audience is left
// out of the map, which reads as the zero Member (StatusNotFound).
func (m *Marketing) Members(_ context.Context, _ string, emails []string) (map[string]connectors.Member, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Members"); err != nil {
		return nil, err
	}
	out := map[string]connectors.Member{}
	for _, e := range emails {
		if mb, ok := m.members[strings.ToLower(e)]; ok {
			out[e] = connectors.Member{Email: e, Status: mb.status, LastChanged: mb.lastChanged}
		}
	}
	return out, nil
}

// MaxBatch is Mailchimp's batch limit, so that batching matches production.
func (m *Marketing) MaxBatch() int { return 500 }

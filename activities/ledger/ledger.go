// Package ledger is the consent ledger: what the product must remember
// between runs, in a real database, for years. It records every opt-out the
// sync observes and every write (or deliberate non-write) it makes because
// of one, append-only, and keeps per person the derived state the next run
// needs: whether the person is suppressed (opted out, and by what), the last
// marketing status we know, a later re-subscribe, the marketing contacts the
// person's addresses belong to, and the opt-outs not yet propagated.
//
// A person is named at rest by a keyed hash of their normalised address
// (HMAC-SHA256 under a key the operator holds, see Keyer), never by the
// address: a dictionary cannot reverse it without the key, and the ledger
// still answers "what happened to jane@example.com" to whoever has the key.
//
// The activities reach the ledger through the Ledger interface; workflows
// never do. SQLite (one file, the demo and a single worker) and PostgreSQL
// (production, several workers) run the same migrations and queries.
package ledger

import (
	"context"
	"time"
)

// Kind is what was observed.
type Kind string

// The observation kinds.
const (
	// KindUnsubscribe: a marketing member became unsubscribed.
	KindUnsubscribe Kind = "unsubscribe"
	// KindCleaned: a marketing member was cleaned (a bounce, not an opt-out).
	KindCleaned Kind = "cleaned"
	// KindCRMOptOut: a CRM record carries the opt-out.
	KindCRMOptOut Kind = "crm-opt-out"
	// KindResubscribe: a member we knew as unsubscribed (or cleaned) is
	// subscribed again, by a newer change: the person's later choice.
	KindResubscribe Kind = "resubscribe"
	// KindCRMOptIn: a CRM record seen without the opt-out it had (or that
	// we wrote): whatever opt-out it carries next is a new one. It is not
	// consent: only a re-subscribe in the marketing platform is.
	KindCRMOptIn Kind = "crm-opt-in"
)

// OptOut reports whether the kind is an opt-out (a bounce is not).
func (k Kind) OptOut() bool {
	return k == KindUnsubscribe || k == KindCRMOptOut
}

// Marketing reports whether the kind comes from the marketing platform.
func (k Kind) Marketing() bool {
	return k == KindUnsubscribe || k == KindCleaned || k == KindResubscribe
}

// Observation is one opt-out (or re-subscribe, or bounce) seen in a system.
type Observation struct {
	Integration string
	// System is the vendor ("mailchimp", "netsuite", "salesforce").
	System string
	// Subject is the vendor's own id: the member's contact id or subscriber
	// hash, the CRM record "type/id".
	Subject string
	// Person is the keyed hash of the address.
	Person string
	// Contact is the marketing contact id, when the platform gives one; a
	// contact's opt-out suppresses every address the ledger knows for it.
	Contact string
	Kind    Kind
	// OccurredAt is when the vendor says it happened; zero when it does not
	// say (a CRM opt-out): the first time we saw it counts instead.
	OccurredAt time.Time
	// Episode tells apart successive opt-outs of one record that carries no
	// time of its own: for a CRM opt-out, when the record was last seen
	// without it (zero if never); for a CRM opt-in, the opt-out it ends.
	Episode time.Time
	// Audience is the marketing audience a marketing observation was made
	// in (the person's marketing status is kept with it).
	Audience string
	// PendingFor names the system the opt-out must still be written to,
	// or "" when nothing is to be written; a later settling write clears it.
	PendingFor string
	// WorkflowID and RunID name the run that saw it.
	WorkflowID, RunID string
}

// Seen is what Observe says of one observation.
type Seen struct {
	// At is when it counts as having happened: the vendor's time, or the
	// first time it was seen when the vendor gives none.
	At time.Time
	// New is true the first time the ledger records it.
	New bool
	// State is the person's state once the whole batch is applied: what
	// People answers right after.
	State Person
}

// Action is what a write does.
type Action string

// The write actions.
const (
	ActionCRMOptOut   Action = "crm-opt-out"  // set the CRM opt-out on a record
	ActionCleanedMark Action = "cleaned-mark" // record a bounce in the CRM's cleaned field
	ActionUnsubscribe Action = "unsubscribe"  // unsubscribe a member
)

// Result is what came of a write, or why none was made.
type Result string

// The write results.
const (
	ResultWritten Result = "written" // the target now holds the state, changed by us
	ResultAlready Result = "already" // the target already held the state
	ResultRefused Result = "refused" // a final refusal (compliance, invalid, forgotten): not retried
	ResultFailed  Result = "failed"  // a transient failure: the next run retries it
	ResultSkipped Result = "skipped" // deliberately not written; Rule says why
	// ResultAbsent: not written because the address is not in the audience
	// (or is archived there) and the integration adds no such address as an
	// unsubscribed member (addAbsentAsUnsubscribed: false). The person's
	// marketing status becomes MarketingAbsent: should the address join
	// the audience later, it is unsubscribed then.
	ResultAbsent Result = "absent"
)

// Settles reports whether the result ends the propagation of an opt-out.
func (r Result) Settles() bool { return r != ResultFailed }

// Write is one write the sync made (or decided not to make) because of an
// observation.
type Write struct {
	Integration string
	// System is the target's vendor; Target its id (record "type/id",
	// member contact id or subscriber hash).
	System, Target string
	Person         string
	Action         Action
	Result         Result
	// Code is the vendor's answer code, where there is one.
	Code string
	// Rule is the product rule that decided it, in words.
	Rule string
	// Cause is the subject of the observation that caused it.
	Cause string
	// Audience is the marketing audience an unsubscribe was written to.
	Audience string
	// StatusFrom, when set, is the earliest time the marketing status the
	// write leaves counts from: the platform's time of the change it
	// answers (a join), so that the change seen again is not newer; or
	// the time of the status a lookup found superseded (absent).
	StatusFrom        time.Time
	WorkflowID, RunID string
}

// Person is what the ledger knows now about one person in one integration.
type Person struct {
	Person string
	// OptedOut: the person's latest known choice is an opt-out.
	OptedOut bool
	// OptOutKind and OptOutSource say which opt-out, and from which system;
	// Via is "contact" when it was inferred from another address of the
	// same marketing contact.
	OptOutKind   Kind
	OptOutSource string
	Via          string
	// OptOutAt is when the opt-out happened (or was first seen).
	OptOutAt time.Time
	// MarketingOptOutAt is the latest marketing opt-out (an
	// unsubscribe), zero if none: it stands unless a re-subscribe is newer,
	// whatever CRM opt-outs came after it.
	MarketingOptOutAt time.Time
	// ResubscribedAt is the latest re-subscribe, zero if none.
	ResubscribedAt time.Time
	// MarketingStatus is the last member status we know ("unsubscribed",
	// "cleaned", "subscribed"), from observations and our own writes, or
	// MarketingRefused or MarketingAbsent after a write that was not made.
	MarketingStatus   string
	MarketingStatusAt time.Time
	// MarketingAudience is the audience MarketingStatus was learnt in; ""
	// for a status recorded before the ledger kept it.
	MarketingAudience string
}

// StatusIn is the person's marketing status in audience: MarketingStatus
// when it was learnt there (or before the ledger kept audiences), "" when
// it was learnt in another audience, which says nothing of this one.
func (p Person) StatusIn(audience string) string {
	if !p.InAudience(audience) {
		return ""
	}
	return p.MarketingStatus
}

// InAudience reports whether the person's marketing status was learnt in
// audience (or before the ledger kept audiences).
func (p Person) InAudience(audience string) bool {
	return p.MarketingAudience == "" || p.MarketingAudience == audience
}

// ownWriteSkew is how much earlier than our clock says the ledger dates the
// marketing status our own writes leave: the vendor's clock may lag ours.
const ownWriteSkew = time.Minute

// MarketingRefused is the marketing status the ledger keeps for an address
// the platform refused for good (forgotten, fake, in a compliance state).
const MarketingRefused = "refused"

// MarketingAbsent is the marketing status the ledger keeps for a person
// whose CRM opt-out was not written because the audience did not hold
// the address (ResultAbsent): a member of that address who appears later
// joined after the opt-out, which the join does not undo.
const MarketingAbsent = "absent"

// SuppressedByMarketing reports whether an opt-out made in the marketing
// platform stands: no re-subscribe is newer (a tie goes to the opt-out).
func (p Person) SuppressedByMarketing() bool {
	return !p.MarketingOptOutAt.IsZero() && !p.ResubscribedAt.After(p.MarketingOptOutAt)
}

// RecordHistory is what the ledger knows of one CRM record's opt-out.
type RecordHistory struct {
	// LastWritten is our latest write of its opt-out, zero if none.
	LastWritten time.Time
	// LastOptOutSeen is the latest first sighting of an opt-out on it.
	LastOptOutSeen time.Time
	// LastCleared is when it was last seen without an opt-out it had.
	LastCleared time.Time
}

// Echo reports whether the record's opt-out is the one we wrote: we wrote
// it and have not seen the record without it since.
func (h RecordHistory) Echo() bool {
	return !h.LastWritten.IsZero() && h.LastWritten.After(h.LastCleared)
}

// HadOptOut reports whether the record carried an opt-out (ours or its
// own) that it has not been seen without since.
func (h RecordHistory) HadOptOut() bool {
	last := h.LastWritten
	if h.LastOptOutSeen.After(last) {
		last = h.LastOptOutSeen
	}
	return !last.IsZero() && last.After(h.LastCleared)
}

// LastOptOut is the latest of our write and the sightings of its opt-out.
func (h RecordHistory) LastOptOut() time.Time {
	if h.LastOptOutSeen.After(h.LastWritten) {
		return h.LastOptOutSeen
	}
	return h.LastWritten
}

// Entry is one line of a person's history, for explain.
type Entry struct {
	At                            time.Time
	Integration                   string
	Type                          string // "observed" or "wrote"
	System, Subject, Kind, Result string
	Code, Rule, Cause, Via        string
	// Audience is the marketing audience of a marketing observation or an
	// unsubscribe; "" otherwise (and for entries from before it was kept).
	Audience          string
	OccurredAt        time.Time
	WorkflowID, RunID string
}

// MemberState is one audience member as the ledger mirrors it for field
// sync: its status and a hash of the merge fields the integration maps,
// as the platform last answered them.
type MemberState struct {
	Person string
	// Contact is the platform's contact id, when it gives one: a member
	// saved with it marks the mirrored entries of the contact's earlier
	// addresses StatusMoved: they left the audience with the person, and
	// must be neither updated nor added back.
	Contact string
	Status  string
	Fields  string
	Changed time.Time
}

// Alias is an earlier address of a person: Person changed address from
// the one Alias names (its keyed hash), whose address Sealed holds (see
// Ledger.Seal), at Changed.
type Alias struct {
	Person, Alias, Sealed string
	Changed               time.Time
}

// InboxEntry is one pushed event waiting in the ledger: Delivery is its
// key (the same delivery retried has the same key), Data the event as the
// activities encode it (addresses sealed), ID its place in the queue.
type InboxEntry struct {
	ID       int64
	Delivery string
	Data     string
}

// Run is a successful sync run: when it finished, and which it was.
type Run struct {
	Integration       string
	FinishedAt        time.Time
	WorkflowID, RunID string
}

// StatusMoved is the mirrored status of an address whose contact now has
// another address in the audience.
const StatusMoved = "moved"

// Ledger is the consent ledger as the activities use it.
type Ledger interface {
	// Person is the keyed hash naming the person with this address, or ""
	// when it is not an address.
	Person(email string) string
	// Observe records observations (idempotently: the same observation
	// seen again adds nothing) and updates each person's state. It
	// returns, per observation, when it counts as having happened and
	// whether it is new.
	Observe(ctx context.Context, obs []Observation) ([]Seen, error)
	// RecordWrites appends writes and settles or keeps the pending opt-outs.
	RecordWrites(ctx context.Context, ws []Write) error
	// People returns the state of each known person among persons.
	People(ctx context.Context, integration string, persons []string) (map[string]Person, error)
	// Written returns, of targets, those the sync recorded a write of
	// action for with one of results, with the time of the latest (refused:
	// a final answer not to ask again until the person's next choice).
	Written(ctx context.Context, integration, system string, action Action, targets []string, results ...Result) (map[string]time.Time, error)
	// Records returns what the ledger knows of each CRM record's opt-out.
	Records(ctx context.Context, integration, system string, targets []string) (map[string]RecordHistory, error)
	// Settle ends the pending opt-outs of persons towards system when
	// there is nothing left to write (no record has the address).
	Settle(ctx context.Context, integration, system string, persons []string) error
	// Attempted returns, of targets, those a write of action was recorded
	// for by the workflow run runID, whatever its result.
	Attempted(ctx context.Context, integration, system string, action Action, runID string, targets []string) (map[string]bool, error)
	// LinkContacts remembers that each person's address belongs to the
	// marketing contact; a later opt-out of the contact suppresses them all.
	LinkContacts(ctx context.Context, integration, system string, links map[string]string) error
	// SaveMembers mirrors members of an audience as read from the platform;
	// a member read again with an older change time leaves the newer state.
	SaveMembers(ctx context.Context, integration, audience string, ms []MemberState) error
	// AddAliases records address changes; a person inherits the earlier
	// addresses of the address it changed from, so a chain of changes
	// leads from the newest address to every earlier one.
	AddAliases(ctx context.Context, integration string, as []Alias) error
	// Aliases returns the earlier addresses of each of persons that has any.
	Aliases(ctx context.Context, integration string, persons []string) (map[string][]Alias, error)
	// Members returns the mirrored state of each known member among persons.
	Members(ctx context.Context, integration, audience string, persons []string) (map[string]MemberState, error)
	// OldestPending is the first-seen time of the oldest opt-out not yet
	// written to its other side; ok is false when none is pending.
	OldestPending(ctx context.Context, integration string) (at time.Time, ok bool, err error)
	// Stash keeps pushed events until they are applied, each once by its
	// delivery key, and forgets applied ones applied before forgetBefore.
	// It returns how many were new: the others were taken before.
	Stash(ctx context.Context, integration string, es []InboxEntry, forgetBefore time.Time) (added int, err error)
	// Inbox returns up to limit events not yet applied, oldest first, and
	// how many are waiting in all.
	Inbox(ctx context.Context, integration string, limit int) ([]InboxEntry, int, error)
	// MarkApplied marks events applied; they are kept only to recognise a
	// retried delivery.
	MarkApplied(ctx context.Context, integration string, ids []int64, at time.Time) error
	// RecordRun records a successful run of an integration; an older
	// run recorded after a newer one leaves the newer.
	RecordRun(ctx context.Context, r Run) error
	// LastRuns is the last successful run of each integration that had one.
	LastRuns(ctx context.Context) (map[string]Run, error)
	// History is everything the ledger holds about a person, oldest first,
	// across integrations.
	History(ctx context.Context, person string) ([]Entry, error)
	// Seal encrypts an address under the ledger's key, for a workflow
	// input that must not carry it in the clear; Unseal opens it.
	Seal(email string) (string, error)
	Unseal(sealed string) (string, error)
	// Ping checks the database is reachable.
	Ping(ctx context.Context) error
	Close() error
}

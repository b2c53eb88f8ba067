// Package connectors holds the two narrow interfaces the sync activities need:
// one for an email marketing platform (Mailchimp first) and one for a CRM
// (NetSuite, Salesforce; Dynamics 365 and Bullhorn fit the same shape).
//
// A new system is a new package under connectors/ that implements one of
// them and owns its configuration (a Config implementing MarketingConfig or
// CRMConfig, config.go) and its emulator; the worker adds one line to its
// kind table. Optional capabilities (Pinger, UsageReporter) are declared
// here too. Every call takes a context,
// every page is bounded (MaxPageSize), and every cursor is an opaque string
// that is safe to store in a Temporal heartbeat or workflow input.
package connectors

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"strings"
	"time"
)

// MaxPageSize bounds every page a connector returns.
const MaxPageSize = 1000

// MemberStatus is a marketing-platform member's subscription status.
// The values are Mailchimp's, which other platforms map onto.
type MemberStatus string

// The member statuses. Unsubscribed and Cleaned are the "compliance" states:
// nothing in this product ever moves a member out of them to Subscribed.
const (
	StatusSubscribed    MemberStatus = "subscribed"
	StatusUnsubscribed  MemberStatus = "unsubscribed"
	StatusCleaned       MemberStatus = "cleaned"
	StatusPending       MemberStatus = "pending"
	StatusTransactional MemberStatus = "transactional"
	StatusArchived      MemberStatus = "archived"
	// StatusNotFound is reported by Members for an address that is
	// not in the audience at all.
	StatusNotFound MemberStatus = ""
)

// Blocked reports whether a member in this status must get no updates and
// must never be set back to subscribed: an unsubscribe is an opt-out and a
// clean is a bounce.
func (s MemberStatus) Blocked() bool {
	return s == StatusUnsubscribed || s == StatusCleaned
}

// Member is one audience member as the sync sees it.
type Member struct {
	Email       string
	Status      MemberStatus
	LastChanged time.Time
	// Fields are the member's merge fields as text, when the read asked
	// for them (ChangesRequest.MergeFields); nil otherwise.
	Fields map[string]string
	// ContactID is the platform's id of the contact (Mailchimp's
	// contact_id), which its OpenAPI describes as agnostic of the email
	// address, so it is expected to survive an address change. Empty when
	// the platform does not give one.
	ContactID string
}

// ChangesRequest asks for members in one status that changed since a watermark.
type ChangesRequest struct {
	Audience string
	// Status is StatusUnsubscribed or StatusCleaned: the two are told apart
	// because a cleaned address is a bounce, not an opt-out.
	Status MemberStatus
	// Since is the watermark: only members whose status may have changed
	// after it are returned.
	Since time.Time
	// Cursor is "" for the first page, then the Next of the previous page.
	Cursor string
	// PageSize is at most MaxPageSize; 0 means MaxPageSize.
	PageSize int
	// MergeFields asks for each member's merge fields (Member.Fields).
	MergeFields bool
}

// MemberPage is one bounded page of members.
type MemberPage struct {
	Members []Member
	// Next resumes after this page; "" means there are no more pages.
	Next string
}

// MemberFields carries mapped field values for one address, written to the
// audience's merge fields.
type MemberFields struct {
	Email  string
	Fields map[string]string
}

// Failure says why one record or member of a batch was not written. A
// batch call returns the failures of the items it could not write and
// leaves the others written.
type Failure struct {
	// Email is the address of the item that failed, on the marketing side.
	Email string
	// Record is the record that failed, on the CRM side.
	Record RecordRef
	// Code is the vendor's error code or title, e.g. "Member In Compliance State".
	Code string
	// Message is the vendor's message, with no secret in it.
	Message string
	// Compliance marks an answer that is final by law or policy (the member is
	// unsubscribed, cleaned or permanently deleted): it is recorded, never
	// retried, and never counted as a failure of the run.
	Compliance bool
	// Retryable marks a transient failure worth retrying on a later run.
	Retryable bool
}

// BatchResult is the outcome of one batch write.
type BatchResult struct {
	// Written counts items that now hold the requested state (including
	// those that already did).
	Written int
	// Added counts new members created (UpsertMembers; Unsubscribe for addresses not yet in the audience).
	Added int
	// Failed lists the items that were not written.
	Failed []Failure
	// Existing lists the addresses AddMembers found already in the
	// audience and left as they were, for the caller to write as existing
	// members.
	Existing []string
}

// Marketing is an email marketing platform's audience, as the sync needs it.
type Marketing interface {
	// ChangedMembers pages through members in req.Status whose status may
	// have changed since req.Since, oldest change first. An unsubscribe that
	// is already known (its member only had a field edited since) should
	// not be reported again where the platform makes that possible.
	ChangedMembers(ctx context.Context, req ChangesRequest) (MemberPage, error)

	// Unsubscribe sets each address to unsubscribed. Addresses not in the
	// audience are added as unsubscribed, so that a later import cannot
	// subscribe them. At most MaxBatch() addresses per call.
	Unsubscribe(ctx context.Context, audience string, emails []string) (BatchResult, error)

	// UpsertMembers writes mapped fields of existing members without
	// touching their status, and adds new members with statusIfNew. The
	// caller leaves out members whose status is Blocked or archived (a
	// write would re-add an archived member). At most MaxBatch() members
	// per call.
	UpsertMembers(ctx context.Context, audience string, members []MemberFields, statusIfNew MemberStatus) (BatchResult, error)

	// AddMembers adds members the caller found not in the audience, with
	// status and their mapped fields, in as few calls as the platform
	// allows. A member that turns out to be in the audience by now is left
	// unchanged and listed in Existing. At most MaxBatch() members per call.
	AddMembers(ctx context.Context, audience string, members []MemberFields, status MemberStatus) (BatchResult, error)

	// UpdateMembers writes mapped fields of existing members only: it
	// never creates a member and never touches a status, and a member no
	// longer in the audience is a final Failure. At most MaxBatch() per call.
	UpdateMembers(ctx context.Context, audience string, members []MemberFields) (BatchResult, error)

	// Members looks up each address, one lookup per address, keyed by the
	// address as given: the Member holds the address as the platform has
	// it, its Status, LastChanged and ContactID. An address not in the
	// audience maps to the zero Member, whose Status is StatusNotFound. At
	// most MaxBatch() per call.
	Members(ctx context.Context, audience string, emails []string) (map[string]Member, error)

	// MaxBatch is the largest batch the write and lookup calls take.
	MaxBatch() int
}

// RecordRef names one CRM record: its type as the CRM spells it
// ("customer", "contact", "Contact", "Lead", "Account") and its id.
type RecordRef struct {
	Type string
	ID   string
}

// String is the reference as it appears in failures and logs: "type/id".
func (r RecordRef) String() string { return r.Type + "/" + r.ID }

// Record is one CRM record as the sync sees it.
type Record struct {
	Ref   RecordRef
	Email string
	// OptedOut is the record's opt-out as the integration defines it (the
	// standard field, the mapped custom field, or the inverted opt-in field).
	OptedOut bool
	// InLists is true when the record is inside at least one of the
	// requested CRM lists, or when no lists were requested.
	InLists bool
	// Fields holds the mapped fields read by ListMembers, keyed by CRM field name.
	Fields map[string]string
}

// OptOutField says which CRM field carries the opt-out.
type OptOutField struct {
	// Kind is OptOutStandard (the CRM's own opt-out, e.g. NetSuite
	// globalSubscriptionStatus Soft Opt-Out, Salesforce HasOptedOutOfEmail),
	// OptOutCustom (a custom boolean field that is true when opted out) or
	// OptOutInverted (a custom boolean opt-in field that is cleared on opt-out).
	Kind OptOutKind `yaml:"kind"`
	// Field is the custom field's API name; empty for OptOutStandard.
	Field string `yaml:"field"`
}

// OptOutKind is how the opt-out is stored in the CRM.
type OptOutKind string

// The opt-out kinds.
const (
	OptOutStandard OptOutKind = "standard"
	OptOutCustom   OptOutKind = "custom"
	OptOutInverted OptOutKind = "inverted"
)

// OptOutQuery asks a CRM for opted-out records.
type OptOutQuery struct {
	// Types are the record types to read (e.g. "customer", "contact").
	Types []string
	// Field is where the opt-out lives.
	Field OptOutField
	// Since is the watermark: records modified (or, where the CRM records it,
	// added to a list) after it.
	Since time.Time
	// Lists are the CRM lists (saved searches, campaigns, marketing lists,
	// tearsheets) that scope the sync; empty means no scoping. Opted-out
	// records outside them are still returned, with InLists false, so that
	// the run can count them and say why they were left alone.
	Lists []string
	// Cursor is "" for the first page, then the Next of the previous page.
	Cursor string
	// PageSize is at most MaxPageSize; 0 means MaxPageSize.
	PageSize int
	// ListsAsOf lets the first page reuse the lists' membership when the
	// connector read it at or after this time (the run's start), so that
	// one run reads each list once; zero reads it afresh.
	ListsAsOf time.Time
}

// RecordPage is one bounded page of CRM records.
type RecordPage struct {
	Records []Record
	// Next resumes after this page; "" means there are no more pages.
	Next string
}

// ListMembersQuery asks for the members of the integration's CRM lists
// (or of the record types when no list is given) with their mapped fields.
type ListMembersQuery struct {
	Types  []string
	Lists  []string
	Fields []string
	// Field is where the opt-out lives, so that each record's OptedOut is
	// set: an opted-out person is never added to the audience as new.
	Field OptOutField
	// Since limits the read to records modified after it; zero reads all.
	Since    time.Time
	Cursor   string
	PageSize int
	// ListsAsOf is as for OptOutQuery.
	ListsAsOf time.Time
}

// CRM is a CRM, eCommerce or ERP system's people records, as the sync needs them.
type CRM interface {
	// OptedOut pages through records opted out since q.Since.
	OptedOut(ctx context.Context, q OptOutQuery) (RecordPage, error)

	// FindByEmail returns every record, of the given types, whose address is
	// one of emails (case-insensitive). One address can sit on several
	// records: an opt-out goes to all of them. At most MaxBatch() addresses.
	FindByEmail(ctx context.Context, types []string, field OptOutField, emails []string) ([]Record, error)

	// SetOptOut writes the opt-out on each record through field. The write
	// is idempotent and never clears an opt-out. At most MaxBatch() records
	// per call.
	SetOptOut(ctx context.Context, field OptOutField, refs []RecordRef) (BatchResult, error)

	// SetFlag sets a custom boolean field to true on each record: the
	// cleaned field that marks a bounce, which is never an opt-out.
	// Idempotent. At most MaxBatch() records per call.
	SetFlag(ctx context.Context, field string, refs []RecordRef) (BatchResult, error)

	// ListMembers pages through list members with their mapped fields.
	ListMembers(ctx context.Context, q ListMembersQuery) (RecordPage, error)

	// MaxBatch is the largest batch FindByEmail and SetOptOut take.
	MaxBatch() int
}

// CursorSplitter is a CRM whose paged reads (OptedOut, ListMembers) can
// go on in several parts read at once. SplitCursor returns at most parts
// cursors that together read exactly what the cursor (a page's Next)
// would, each read on its own with the same query, or nil when it cannot
// split it. A part is not split again, except the one that goes on to
// the end of the read where parts end at bounds.
type CursorSplitter interface {
	SplitCursor(ctx context.Context, cursor string, parts int) ([]string, error)
}

// ChangesSplitter is a marketing platform whose ChangedMembers reads can
// go on in several parts read at once. SplitChanges returns at most parts
// cursors that together read what req (whose Cursor is a page's Next, or
// empty for the whole read) would, each read on its own with req's other
// fields: every one but the last ends before the next one starts, and the
// last goes on to the present. It returns nil when it cannot split req,
// and an empty, non-nil slice for a whole read that finds nothing.
type ChangesSplitter interface {
	SplitChanges(ctx context.Context, req ChangesRequest, parts int) ([]string, error)
}

// Pinger is a connector that can check its credentials with one cheap
// call. The worker pings every connector that is one at start.
type Pinger interface {
	Ping(ctx context.Context) error
}

// UsageReporter is a connector that reads a daily API budget from its
// responses (Salesforce's Sforce-Limit-Info); runs report it.
type UsageReporter interface {
	APIUsage() (used, max int, ok bool)
}

// AddressHash names a person without their address, in results, histories
// and logs: Mailchimp's subscriber hash, the MD5 hex of the lower-cased
// address, so it can be looked up in Mailchimp.
func AddressHash(email string) string {
	sum := md5.Sum([]byte(strings.ToLower(strings.TrimSpace(email))))
	return hex.EncodeToString(sum[:])
}

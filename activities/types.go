// Package activities holds the activities SyncWorkflow calls: each reads one
// bounded stretch of a marketing audience or a CRM through the connector
// interfaces, writes what must be written, and returns counts, a cursor and
// the failures by address hash, never the records themselves.
//
// No secret is ever an activity argument: the worker holds the connectors
// (and so the credentials) in a Registry, and the workflow passes only the
// integration id.
package activities

import (
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// Settings are an integration's non-secret settings, as the workflow sees
// them. The worker reads them from its configuration file.
type Settings struct {
	IntegrationID string
	// MarketingKind and CRMKind name the connectors ("mailchimp", "netsuite", "salesforce").
	MarketingKind string
	CRMKind       string
	Audience      string
	// RecordTypes are the CRM record types synced ("customer", "contact", "Contact", "Lead", "Account").
	RecordTypes []string
	// Lists scope the sync to CRM lists (saved searches, campaigns...); empty means no scoping.
	Lists []string
	// CRMToMarketing is the crmToMarketing setting: unsubscribe CRM opt-outs from the audience. Off by default.
	CRMToMarketing bool
	// SkipAbsent is the addAbsentAsUnsubscribed setting turned off: a CRM
	// opt-out whose address the audience does not hold (or holds archived)
	// is not added as an unsubscribed member, which Mailchimp bills; each
	// address is looked up first, and one that joins the audience later is
	// unsubscribed then. Off (addresses are added) by default.
	SkipAbsent bool `json:",omitempty"`
	// OptOut is where the CRM keeps the opt-out.
	OptOut connectors.OptOutField
	// CleanedField, when set, is a custom CRM boolean set on records whose
	// address Mailchimp cleaned (a bounce, not an opt-out).
	CleanedField string
	// FieldMap maps CRM fields to merge fields (the field-sync step); empty turns the field-sync step off.
	FieldMap map[string]string
	// StatusIfNew is the status of members the field-sync step adds ("subscribed" or "pending"...).
	StatusIfNew connectors.MemberStatus
	// Overlap is subtracted from each watermark so clock skew cannot hide a change.
	Overlap time.Duration
	// PageSize is the page size asked of the connectors (≤ 1000).
	PageSize int
	// PagesPerActivity bounds how many pages one activity call handles
	// before it returns its cursor to the workflow.
	PagesPerActivity int
}

// Step names one of the three steps of a run, in code, configuration,
// results, notes and the README alike. (The hosted tool the product is
// modelled on calls crm-to-marketing "Step 1" and field-sync "Step 3".)
// The workflow's phases are parts of these steps.
type Step string

// The steps.
const (
	// MarketingToCRM writes unsubscribes (and cleans) from the audience to the CRM.
	MarketingToCRM Step = "marketing-to-crm"
	// CRMToMarketing unsubscribes CRM opt-outs from the audience (the crm-to-marketing step).
	CRMToMarketing Step = "crm-to-marketing"
	// FieldSync writes mapped CRM fields to merge fields (the field-sync step).
	FieldSync Step = "field-sync"
)

// PageInput asks an activity to handle pages from a cursor on.
type PageInput struct {
	IntegrationID string
	// Settings are the integration's settings as the workflow loaded them
	// at the start of the run; the activity acts on these, never on a
	// configuration reloaded since.
	Settings *Settings `json:"settings,omitempty"`
	// Status is used by the marketing-to-CRM activity: unsubscribed,
	// cleaned, or subscribed (re-subscribes after an opt-out).
	Status connectors.MemberStatus
	Since  time.Time
	Cursor string
	// Mirror tells field sync that this run mirrored the audience in the
	// ledger (SyncAudience), to look members up there.
	Mirror bool `json:"mirror,omitempty"`
	// RunStart is when the run started: CRM lists read since are current
	// enough for it, so its steps share one read of each list.
	RunStart time.Time `json:"runStart,omitempty"`
}

// Counts are what a step did. Every field adds up across pages and runs of
// one workflow; zero fields are left out of the JSON.
type Counts struct {
	// Pages and Read count what was read.
	Pages int `json:"pages,omitempty"`
	Read  int `json:"read,omitempty"`

	// marketing-to-crm.
	Unsubscribes     int `json:"unsubscribes,omitempty"`       // unsubscribed members seen
	Cleaned          int `json:"cleaned,omitempty"`            // cleaned (bounced) members seen
	CRMOptedOut      int `json:"crmOptedOut,omitempty"`        // CRM records set to opted out
	CRMAlreadyOut    int `json:"crmAlreadyOptedOut,omitempty"` // CRM records that already were
	CleanedRecorded  int `json:"cleanedRecorded,omitempty"`    // CRM records given the cleaned field
	NotInCRM         int `json:"notInCRM,omitempty"`           // addresses with no CRM record
	DuplicateRecords int `json:"duplicateRecords,omitempty"`   // extra records sharing an address
	LateOptedOut     int `json:"lateOptedOut,omitempty"`       // CRM records that appeared (or got the address) after its unsubscribe, opted out
	Resubscribes     int `json:"resubscribes,omitempty"`       // members who re-subscribed after an opt-out we knew: their later choice
	JoinedUnsub      int `json:"joinedUnsubscribed,omitempty"` // members who joined the audience after their CRM opt-out was not added (absent), unsubscribed

	// CRM → marketing.
	CRMOptOuts     int `json:"crmOptOuts,omitempty"`          // opted-out CRM records seen
	Unsubscribed   int `json:"unsubscribed,omitempty"`        // members whose status this run changed to unsubscribed
	AddedUnsub     int `json:"addedUnsubscribed,omitempty"`   // addresses not in the audience, added as unsubscribed
	AlreadyUnsub   int `json:"alreadyUnsubscribed,omitempty"` // members the ledger knows are already unsubscribed or cleaned: not sent
	EchoSkipped    int `json:"echoSkipped,omitempty"`         // opt-outs this product wrote, read back from where it wrote them: not sent back
	LaterConsent   int `json:"laterConsent,omitempty"`        // CRM opt-outs older than the member's re-subscribe: not sent
	KnownRefused   int `json:"knownRefused,omitempty"`        // addresses the platform refused for good in an earlier run: not sent again
	AbsentNotAdded int `json:"absentNotAdded,omitempty"`      // addresses not in the audience (or archived there), not added (addAbsentAsUnsubscribed: false)
	OutsideLists   int `json:"outsideLists,omitempty"`        // opted-out records left alone: outside the lists
	InvalidEmails  int `json:"invalidEmails,omitempty"`       // records skipped for a missing or invalid address
	ComplianceHeld int `json:"complianceHeld,omitempty"`      // writes refused by a compliance state (final)

	// Field sync.
	FieldsUpdated     int `json:"fieldsUpdated,omitempty"`     // existing members updated
	MembersAdded      int `json:"membersAdded,omitempty"`      // new members added with status_if_new
	SkippedBlocked    int `json:"skippedBlocked,omitempty"`    // unsubscribed/cleaned/archived members given no update
	SkippedOptOut     int `json:"skippedOptOut,omitempty"`     // CRM opt-outs not added as new members
	SkippedSuppressed int `json:"skippedSuppressed,omitempty"` // addresses the ledger holds as opted out (or an earlier address of an opted-out member): not added
	Mirrored          int `json:"mirrored,omitempty"`          // audience members mirrored in the ledger (status and field hashes)
	FieldsUnchanged   int `json:"fieldsUnchanged,omitempty"`   // members whose mapped fields already hold the CRM's values: not written

	// Pushed events (webhooks).
	Events         int `json:"events,omitempty"`         // events applied
	EventsIgnored  int `json:"eventsIgnored,omitempty"`  // events that change no opt-out (a profile edit, an archive by the account)
	AddressChanges int `json:"addressChanges,omitempty"` // address changes recorded: the earlier address's records follow the person's opt-out

	Refused int `json:"refused,omitempty"` // items refused for good (invalid, fake or forgotten address): final, not retried
	Failed  int `json:"failed,omitempty"`  // items not written for a transient reason; retried by the next run
}

// Add adds o into c.
func (c *Counts) Add(o Counts) {
	c.Pages += o.Pages
	c.Read += o.Read
	c.Unsubscribes += o.Unsubscribes
	c.Cleaned += o.Cleaned
	c.CRMOptedOut += o.CRMOptedOut
	c.CRMAlreadyOut += o.CRMAlreadyOut
	c.CleanedRecorded += o.CleanedRecorded
	c.NotInCRM += o.NotInCRM
	c.DuplicateRecords += o.DuplicateRecords
	c.LateOptedOut += o.LateOptedOut
	c.Resubscribes += o.Resubscribes
	c.JoinedUnsub += o.JoinedUnsub
	c.CRMOptOuts += o.CRMOptOuts
	c.Unsubscribed += o.Unsubscribed
	c.AddedUnsub += o.AddedUnsub
	c.AlreadyUnsub += o.AlreadyUnsub
	c.EchoSkipped += o.EchoSkipped
	c.LaterConsent += o.LaterConsent
	c.KnownRefused += o.KnownRefused
	c.AbsentNotAdded += o.AbsentNotAdded
	c.OutsideLists += o.OutsideLists
	c.InvalidEmails += o.InvalidEmails
	c.ComplianceHeld += o.ComplianceHeld
	c.FieldsUpdated += o.FieldsUpdated
	c.MembersAdded += o.MembersAdded
	c.SkippedBlocked += o.SkippedBlocked
	c.SkippedOptOut += o.SkippedOptOut
	c.SkippedSuppressed += o.SkippedSuppressed
	c.Mirrored += o.Mirrored
	c.FieldsUnchanged += o.FieldsUnchanged
	c.Events += o.Events
	c.EventsIgnored += o.EventsIgnored
	c.AddressChanges += o.AddressChanges
	c.Refused += o.Refused
	c.Failed += o.Failed
}

// FailureReport is one item that was not written, named by address hash
// (Mailchimp's subscriber hash: MD5 of the lower-cased address) and, on the
// CRM side, by record, never by the address itself.
type FailureReport struct {
	Step        Step   `json:"step"`
	AddressHash string `json:"addressHash,omitempty"`
	Record      string `json:"record,omitempty"`
	Code        string `json:"code,omitempty"`
	Reason      string `json:"reason"`
	// Compliance marks a refusal that is final (unsubscribed, cleaned or
	// permanently deleted): recorded, never retried, not a failure of the run.
	Compliance bool `json:"compliance,omitempty"`
	// Final marks any answer that retrying cannot change (a compliance
	// state, an invalid or fake address): it does not hold the watermark.
	Final bool `json:"final,omitempty"`
	// HoldsWatermark marks a failure that keeps its step's watermark where it
	// was, so the next run reads the item again and retries it.
	HoldsWatermark bool `json:"holdsWatermark,omitempty"`
}

// MaxFailureReports bounds the failures one activity result carries; the
// counts stay exact beyond it.
const MaxFailureReports = 50

// PageResult is what an activity did with its pages.
type PageResult struct {
	Counts   Counts          `json:"counts"`
	Failures []FailureReport `json:"failures,omitempty"`
	// HoldWatermark is true when an item failed in a way the next run must
	// retry: the step's watermark must not move past this run's start.
	HoldWatermark bool `json:"holdWatermark,omitempty"`
	// Next is the cursor to continue from; "" means the step is done.
	Next string `json:"next,omitempty"`
	// LaterConsent names, by address hash, members whose re-subscribe is
	// newer than a CRM opt-out: the opt-out was not sent (bounded).
	LaterConsent []string `json:"laterConsent,omitempty"`
	KnownRefused int      `json:"knownRefused,omitempty"` // addresses the platform refused for good in an earlier run: not sent again
	// OldestPending is the first sighting of the oldest opt-out the ledger
	// holds as not yet written to its other side; nil when none is.
	OldestPending *time.Time `json:"oldestPending,omitempty"`
	// CRMAPIUsage is the CRM's daily API budget as last reported, where it reports one.
	CRMAPIUsage *APIUsage `json:"crmApiUsage,omitempty"`
}

// APIUsage is a daily API budget: calls used of the maximum.
type APIUsage struct {
	Used int `json:"used"`
	Max  int `json:"max"`
}

// Event is one pushed marketing event as workflows carry it: the address
// sealed by the ledger's key (Ledger.Seal), never in clear.
type Event struct {
	// Key names the delivery by its content, so that the platform's
	// retries of one delivery are applied once.
	Key  string               `json:"key"`
	Type connectors.EventType `json:"type"`
	// Person is the ledger's keyed hash of the address (the new one, for
	// an address change).
	Person string `json:"person"`
	// Sealed is the address, sealed; OldSealed the earlier address of an
	// address change.
	Sealed    string    `json:"sealed"`
	OldSealed string    `json:"oldSealed,omitempty"`
	FiredAt   time.Time `json:"firedAt"`
	Action    string    `json:"action,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

// EventsInput asks ApplyEvents to apply pushed events.
type EventsInput struct {
	IntegrationID string
	Settings      *Settings `json:"settings,omitempty"`
	Events        []Event   `json:"events"`
}

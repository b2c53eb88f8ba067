package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
)

// Integration is one configured integration with its live connectors.
type Integration struct {
	Settings  Settings
	Marketing connectors.Marketing
	CRM       connectors.CRM
}

// Registry finds an integration by id. The worker builds it from its
// configuration file and the credentials in its environment.
type Registry interface {
	Integration(id string) (*Integration, error)
}

// MapRegistry is a Registry over a map, for the worker and for tests.
type MapRegistry map[string]*Integration

// Integration returns the integration with that id.
func (m MapRegistry) Integration(id string) (*Integration, error) {
	in, ok := m[id]
	if !ok {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("integration %q is not configured on this worker", id), ErrTypeConfig, nil)
	}
	return in, nil
}

// The application error types the workflow and the Web UI see. Errors of
// these types are not retried: retrying cannot fix them.
const (
	ErrTypeConfig        = "ConfigError"
	ErrTypeUnauthorized  = "Unauthorized"
	ErrTypeForbidden     = "Forbidden"
	ErrTypeNotFound      = "NotFound"
	ErrTypeInvalid       = "InvalidRequest"
	ErrTypeQuotaExceeded = "QuotaExhausted"
	// ErrTypeRateLimited is retried, after the delay the API asked for.
	ErrTypeRateLimited = "RateLimited"
)

// Activities are the sync's activities, registered on the worker as one struct.
type Activities struct {
	reg    Registry
	ledger ledger.Ledger
	log    *slog.Logger
}

// New returns the activities over reg, recording into led; log may be nil.
func New(reg Registry, led ledger.Ledger, log *slog.Logger) *Activities {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Activities{reg: reg, ledger: led, log: log}
}

// LoadSettings returns an integration's non-secret settings, read at the
// start of every run so that a configuration change takes effect on the
// next run without touching the schedule.
func (a *Activities) LoadSettings(ctx context.Context, id string) (Settings, error) {
	in, err := a.reg.Integration(id)
	if err != nil {
		return Settings{}, err
	}
	return in.Settings, nil
}

// integration is the integration an activity works on: its connectors
// from the registry and its settings as the workflow loaded them for this
// run, so that a configuration reloaded mid-run cannot change what one
// run decided. An activity scheduled by a workflow from before the
// settings travelled with it has none, and takes the registry's.
func (a *Activities) integration(in PageInput) (*Integration, error) {
	integ, err := a.reg.Integration(in.IntegrationID)
	if err != nil || in.Settings == nil {
		return integ, err
	}
	if in.Settings.IntegrationID != in.IntegrationID {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("integration %q: the settings passed are those of %q", in.IntegrationID, in.Settings.IntegrationID), ErrTypeConfig, nil)
	}
	return &Integration{Settings: *in.Settings, Marketing: integ.Marketing, CRM: integ.CRM}, nil
}

// The rules, in words, as the ledger records them with each decision.
const (
	ruleUnsubscribeToCRM = "a marketing unsubscribe sets the CRM opt-out on every record of the address"
	ruleCleaned          = "a marketing clean (bounce) is recorded in the cleaned field, never as an opt-out"
	ruleLateRecord       = "a record that appears with (or is changed to) an address whose marketing unsubscribe stands gets the opt-out"
	ruleCRMToMarketing   = "a CRM opt-out inside the lists unsubscribes the address"
	ruleLaterConsent     = "a re-subscribe newer than the opt-out is the person's later choice: not reverted"
	ruleAlready          = "the ledger knows the member is already unsubscribed or cleaned"
	ruleAbsent           = "a CRM opt-out whose address the audience lacks (or holds archived) is not added as an unsubscribed member (addAbsentAsUnsubscribed: false); it is unsubscribed if it joins"
	ruleJoined           = "an address whose CRM opt-out was not added, because the audience lacked it, is unsubscribed when it joins: joining is not consent after an opt-out"
)

// run names the workflow run an activity belongs to, for the ledger.
func run(ctx context.Context) (workflowID, runID string) {
	if !activity.IsActivity(ctx) {
		return "", ""
	}
	we := activity.GetInfo(ctx).WorkflowExecution
	return we.ID, we.RunID
}

// memberSubject names a member in the ledger by the platform's contact id,
// which survives an address change, or else by its subscriber hash.
func memberSubject(m connectors.Member) string {
	if m.ContactID != "" {
		return m.ContactID
	}
	return connectors.AddressHash(m.Email)
}

// SyncMarketingChanges handles pages of members that became unsubscribed,
// cleaned or (re-)subscribed since the watermark: an unsubscribe sets the
// opt-out on every CRM record with that address; a clean records the
// bounce in the mapped cleaned field, if any, and never touches the
// opt-out; a subscribe of a member the ledger knew as unsubscribed is a
// re-subscribe, the person's later choice, which lifts the suppression.
func (a *Activities) SyncMarketingChanges(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.integration(in)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	return pages(ctx, a, integ, MarketingToCRM, in.Cursor, func(ctx context.Context, cursor string) (connectors.MemberPage, string, error) {
		page, err := integ.Marketing.ChangedMembers(ctx, connectors.ChangesRequest{
			Audience: s.Audience, Status: in.Status, Since: in.Since, Cursor: cursor, PageSize: s.PageSize,
		})
		if err != nil {
			return page, "", classify(err, integ.Settings.IntegrationID, "reading "+string(in.Status)+" members of audience "+s.Audience)
		}
		return page, page.Next, nil
	}, a.changesSplit(integ, func(cursor string) connectors.ChangesRequest {
		return connectors.ChangesRequest{Audience: s.Audience, Status: in.Status, Since: in.Since, Cursor: cursor, PageSize: s.PageSize}
	}), func(ctx context.Context, page connectors.MemberPage, wk *work) error {
		res := &wk.res
		res.Counts.Pages++
		res.Counts.Read += len(page.Members)
		if in.Status != connectors.StatusCleaned && in.Status != connectors.StatusSubscribed {
			res.Counts.Unsubscribes += len(page.Members)
			return a.optOutInCRM(ctx, integ, page.Members, wk)
		}
		return wk.inTurn(ctx, func() error {
			if in.Status == connectors.StatusCleaned {
				res.Counts.Cleaned += len(page.Members)
				return a.markCleaned(ctx, integ, page.Members, res)
			}
			_, err := a.noteResubscribes(ctx, integ, page.Members, res)
			return err
		})
	})
}

// target is one CRM record to write, with the person it belongs to.
type target struct {
	record connectors.Record
	person string
	cause  string
}

// optOutInCRM sets the opt-out on every CRM record of each member's
// address, recording each observation and each write in the ledger. The
// page's people (with their earlier addresses) are claimed first (see
// flow.go).
func (a *Activities) optOutInCRM(ctx context.Context, integ *Integration, members []connectors.Member, wk *work) error {
	s := integ.Settings
	res := &wk.res
	wf, rid := run(ctx)
	err := wk.claim(ctx, func() ([]string, error) {
		var err error
		if members, err = a.withEarlierAddresses(ctx, integ, members); err != nil {
			return nil, err
		}
		persons := make([]string, 0, len(members))
		for _, m := range members {
			if p := a.ledger.Person(m.Email); p != "" {
				persons = append(persons, p)
			}
		}
		return persons, nil
	})
	if err != nil {
		return err
	}
	// The lookups of every batch of the page at once.
	type found struct {
		batch   []connectors.Member
		records []connectors.Record
	}
	var lookups []found
	err = pipelined(ctx, members, integ.CRM.MaxBatch(), func(ctx context.Context, batch []connectors.Member) ([]connectors.Record, error) {
		emails := make([]string, 0, len(batch))
		for _, m := range batch {
			emails = append(emails, m.Email)
		}
		records, err := integ.CRM.FindByEmail(ctx, s.RecordTypes, s.OptOut, emails)
		if err != nil {
			return nil, classify(err, integ.Settings.IntegrationID, "finding CRM records by address")
		}
		return records, nil
	}, func(batch []connectors.Member, records []connectors.Record) error {
		lookups = append(lookups, found{batch, records})
		return nil
	})
	if err != nil {
		return err
	}
	var (
		todo []target
		done []ledger.Write
	)
	err = func() error {
		var (
			obs         []ledger.Observation
			nothingLeft []string
		)
		for _, l := range lookups {
			byPerson := map[string][]connectors.Record{}
			for _, r := range l.records {
				if p := a.ledger.Person(r.Email); p != "" {
					byPerson[p] = append(byPerson[p], r)
				}
			}
			seen := map[string]bool{}
			for _, m := range l.batch {
				person := a.ledger.Person(m.Email)
				if person == "" {
					res.Counts.InvalidEmails++
					continue
				}
				recs := byPerson[person]
				o := ledger.Observation{Integration: s.IntegrationID, System: s.MarketingKind, Subject: memberSubject(m),
					Person: person, Contact: m.ContactID, Kind: ledger.KindUnsubscribe, OccurredAt: m.LastChanged,
					Audience: s.Audience, WorkflowID: wf, RunID: rid}
				switch n := len(recs); {
				case n == 0:
					res.Counts.NotInCRM++
					// An opt-out with no record left to write to (the
					// address was edited away since a write failed) is no
					// longer pending.
					nothingLeft = append(nothingLeft, person)
				case n > 1:
					res.Counts.DuplicateRecords += n - 1
				}
				if seen[person] { // the same person twice in one batch: one set of writes
					obs = append(obs, o)
					continue
				}
				seen[person] = true
				for _, r := range recs {
					if r.OptedOut {
						res.Counts.CRMAlreadyOut++
						done = append(done, ledger.Write{Integration: s.IntegrationID, System: s.CRMKind, Target: r.Ref.String(),
							Person: person, Action: ledger.ActionCRMOptOut, Result: ledger.ResultAlready, Rule: ruleUnsubscribeToCRM,
							Cause: o.Subject, WorkflowID: wf, RunID: rid})
						continue
					}
					o.PendingFor = s.CRMKind
					todo = append(todo, target{record: r, person: person, cause: o.Subject})
				}
				obs = append(obs, o)
			}
		}
		// The observations are durable before any write is tried, so an
		// opt-out that cannot be written yet is still known as pending.
		if _, err := a.ledger.Observe(ctx, obs); err != nil {
			return err
		}
		return a.ledger.Settle(ctx, s.IntegrationID, s.CRMKind, nothingLeft)
	}()
	if err != nil {
		return err
	}
	// The writes go while other pages are looked up and observed.
	writes, err := a.setOptOut(ctx, integ, s.OptOut, todo, ledger.ActionCRMOptOut, ruleUnsubscribeToCRM, res, func(n int) {
		res.Counts.CRMOptedOut += n
	})
	if err != nil {
		return err
	}
	return a.ledger.RecordWrites(ctx, append(done, writes...))
}

// setOptOut writes field on every target's record, at most MaxBatch per
// call however many records share an address, and returns the writes for
// the ledger; written is called with the records now holding the state.
func (a *Activities) setOptOut(ctx context.Context, integ *Integration, field connectors.OptOutField, todo []target, action ledger.Action, rule string, res *PageResult, written func(int)) ([]ledger.Write, error) {
	s := integ.Settings
	wf, rid := run(ctx)
	var writes []ledger.Write
	refsOf := func(batch []target) []connectors.RecordRef {
		refs := make([]connectors.RecordRef, len(batch))
		for i, t := range batch {
			refs[i] = t.record.Ref
		}
		return refs
	}
	err := pipelined(ctx, todo, integ.CRM.MaxBatch(), func(ctx context.Context, batch []target) (connectors.BatchResult, error) {
		if action == ledger.ActionCleanedMark {
			// A bounce is marked in its own field, never as an opt-out.
			out, err := integ.CRM.SetFlag(ctx, field.Field, refsOf(batch))
			if err != nil {
				return out, classify(err, integ.Settings.IntegrationID, "recording cleaned addresses in "+field.Field)
			}
			return out, nil
		}
		out, err := integ.CRM.SetOptOut(ctx, field, refsOf(batch))
		if err != nil {
			return out, classify(err, integ.Settings.IntegrationID, "setting the CRM opt-out")
		}
		return out, nil
	}, func(batch []target, out connectors.BatchResult) error {
		emailOf := make(map[string]string, len(batch))
		for _, t := range batch {
			emailOf[t.record.Ref.String()] = t.record.Email
		}
		written(out.Written)
		failed := res.recordFailures(MarketingToCRM, out.Failed, emailOf)
		for _, t := range batch {
			w := ledger.Write{Integration: s.IntegrationID, System: s.CRMKind, Target: t.record.Ref.String(), Person: t.person,
				Action: action, Result: ledger.ResultWritten, Rule: rule, Cause: t.cause, WorkflowID: wf, RunID: rid}
			if f, ok := failed[w.Target]; ok {
				w.Result, w.Code = failureResult(f), f.Code
			}
			writes = append(writes, w)
		}
		return nil
	})
	return writes, err
}

// failureResult is how the ledger records a failed item.
func failureResult(f connectors.Failure) ledger.Result {
	if f.Retryable {
		return ledger.ResultFailed
	}
	return ledger.ResultRefused
}

// markCleaned records bounces: always in the ledger (a clean is not an
// opt-out) and, when the integration maps one, in the CRM's cleaned field.
func (a *Activities) markCleaned(ctx context.Context, integ *Integration, members []connectors.Member, res *PageResult) error {
	s := integ.Settings
	wf, rid := run(ctx)
	field := connectors.OptOutField{Kind: connectors.OptOutCustom, Field: s.CleanedField}
	return chunks(ctx, members, integ.CRM.MaxBatch(), func(batch []connectors.Member) error {
		var obs []ledger.Observation
		emails := make([]string, 0, len(batch))
		causes := map[string]string{}
		for _, m := range batch {
			person := a.ledger.Person(m.Email)
			if person == "" {
				res.Counts.InvalidEmails++
				continue
			}
			emails = append(emails, m.Email)
			causes[person] = memberSubject(m)
			obs = append(obs, ledger.Observation{Integration: s.IntegrationID, System: s.MarketingKind, Subject: memberSubject(m),
				Person: person, Contact: m.ContactID, Kind: ledger.KindCleaned, OccurredAt: m.LastChanged, Audience: s.Audience, WorkflowID: wf, RunID: rid})
		}
		if _, err := a.ledger.Observe(ctx, obs); err != nil {
			return err
		}
		if s.CleanedField == "" || len(emails) == 0 {
			return nil
		}
		records, err := integ.CRM.FindByEmail(ctx, s.RecordTypes, field, emails)
		if err != nil {
			return classify(err, integ.Settings.IntegrationID, "finding CRM records by address")
		}
		var todo []target
		for _, r := range records {
			if !r.OptedOut { // here OptedOut reads the cleaned field
				p := a.ledger.Person(r.Email)
				todo = append(todo, target{record: r, person: p, cause: causes[p]})
			}
		}
		writes, err := a.setOptOut(ctx, integ, field, todo, ledger.ActionCleanedMark, ruleCleaned, res, func(n int) {
			res.Counts.CleanedRecorded += n
		})
		if err != nil {
			return err
		}
		return a.ledger.RecordWrites(ctx, writes)
	})
}

// noteResubscribes finds, among members subscribed since the watermark,
// those the ledger knew as unsubscribed by an earlier change: a
// re-subscribe, the person's later choice. It also remembers each member's
// contact, so that a later address change followed by an unsubscribe
// suppresses the earlier address too. Members who joined after a CRM
// opt-out the audience lacked are unsubscribed instead (unsubscribeJoined);
// it returns the others.
func (a *Activities) noteResubscribes(ctx context.Context, integ *Integration, members []connectors.Member, res *PageResult) ([]connectors.Member, error) {
	s := integ.Settings
	wf, rid := run(ctx)
	persons := make([]string, 0, len(members))
	links := map[string]string{}
	for _, m := range members {
		if p := a.ledger.Person(m.Email); p != "" {
			persons = append(persons, p)
			if m.ContactID != "" {
				links[p] = m.ContactID
			}
		}
	}
	if err := a.ledger.LinkContacts(ctx, s.IntegrationID, s.MarketingKind, links); err != nil {
		return nil, err
	}
	people, err := a.ledger.People(ctx, s.IntegrationID, persons)
	if err != nil {
		return nil, err
	}
	if members, err = a.unsubscribeJoined(ctx, integ, members, people, res); err != nil {
		return nil, err
	}
	var obs []ledger.Observation
	for _, m := range members {
		p, ok := people[a.ledger.Person(m.Email)]
		// Unsubscribed, cleaned or refused for good, then subscribed by a
		// newer change: the person's new choice.
		status := p.StatusIn(s.Audience)
		blocked := connectors.MemberStatus(status).Blocked() || status == ledger.MarketingRefused
		if !ok || !blocked || !m.LastChanged.After(p.MarketingStatusAt) {
			continue
		}
		res.Counts.Resubscribes++
		obs = append(obs, ledger.Observation{Integration: s.IntegrationID, System: s.MarketingKind, Subject: memberSubject(m),
			Person: p.Person, Contact: m.ContactID, Kind: ledger.KindResubscribe, OccurredAt: m.LastChanged, Audience: s.Audience, WorkflowID: wf, RunID: rid})
	}
	_, err = a.ledger.Observe(ctx, obs)
	return members, err
}

// SyncLateRecords handles pages of CRM records modified since the
// watermark (any record of the synced types, in or out of the lists): one
// whose address has a standing marketing unsubscribe gets the opt-out. It
// closes the gap of a record created, or given the address, after the
// unsubscribe was read (a web-store order, an edited email).
func (a *Activities) SyncLateRecords(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.integration(in)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	return pages(ctx, a, integ, MarketingToCRM, in.Cursor, func(ctx context.Context, cursor string) (connectors.RecordPage, string, error) {
		page, err := integ.CRM.ListMembers(ctx, connectors.ListMembersQuery{
			Types: s.RecordTypes, Field: s.OptOut, Since: in.Since, Cursor: cursor, PageSize: s.PageSize,
		})
		if err != nil {
			return page, "", classify(err, integ.Settings.IntegrationID, "reading CRM records changed since the last run")
		}
		return page, page.Next, nil
	}, a.crmSplit(integ), serial(func(ctx context.Context, page connectors.RecordPage, res *PageResult) error {
		res.Counts.Pages++
		res.Counts.Read += len(page.Records)
		var (
			candidates []target
			persons    []string
		)
		for _, r := range page.Records {
			if r.OptedOut {
				continue
			}
			if p := a.ledger.Person(r.Email); p != "" {
				candidates = append(candidates, target{record: r, person: p})
				persons = append(persons, p)
			}
		}
		people, err := a.ledger.People(ctx, s.IntegrationID, persons)
		if err != nil {
			return err
		}
		// A record this run already tried (marketing-to-crm read its
		// unsubscribe in the overlap) is not tried twice in one run.
		refs := make([]string, len(candidates))
		for i, t := range candidates {
			refs[i] = t.record.Ref.String()
		}
		wf, rid := run(ctx)
		tried, err := a.ledger.Attempted(ctx, s.IntegrationID, s.CRMKind, ledger.ActionCRMOptOut, rid, refs)
		if err != nil {
			return err
		}
		// A record seen without the opt-out it had (ours or its own) was
		// cleared in the CRM: whatever opt-out it carries next is new, not
		// our echo, and counts from when it is seen.
		hist, err := a.ledger.Records(ctx, s.IntegrationID, s.CRMKind, refs)
		if err != nil {
			return err
		}
		var cleared []ledger.Observation
		for i, t := range candidates {
			if h := hist[refs[i]]; h.HadOptOut() {
				cleared = append(cleared, ledger.Observation{Integration: s.IntegrationID, System: s.CRMKind, Subject: refs[i],
					Person: t.person, Kind: ledger.KindCRMOptIn, Episode: h.LastOptOut(), WorkflowID: wf, RunID: rid})
			}
		}
		if _, err := a.ledger.Observe(ctx, cleared); err != nil {
			return err
		}
		var todo []target
		for _, t := range candidates {
			if p, ok := people[t.person]; ok && p.SuppressedByMarketing() && !tried[t.record.Ref.String()] {
				t.cause = "standing marketing opt-out of " + p.MarketingOptOutAt.UTC().Format(time.RFC3339)
				todo = append(todo, t)
			}
		}
		writes, err := a.setOptOut(ctx, integ, s.OptOut, todo, ledger.ActionCRMOptOut, ruleLateRecord, res, func(n int) {
			res.Counts.LateOptedOut += n
		})
		if err != nil {
			return err
		}
		return a.ledger.RecordWrites(ctx, writes)
	}))
}

// candidate is one opted-out CRM record the crm-to-marketing step may send.
type candidate struct {
	record connectors.Record
	email  string
	person string
	// statusAt is when the marketing status the ledger held when it was
	// decided counts from: a lookup after it finds the address absent.
	statusAt time.Time
}

// SyncCRMOptOuts handles pages of CRM records opted out since the
// watermark (the crm-to-marketing step): those inside the integration's lists are unsubscribed
// from the audience, unless the opt-out is our own echo, the member's
// re-subscribe is newer, or the ledger knows the member is already
// unsubscribed; those outside the lists are counted and left alone.
func (a *Activities) SyncCRMOptOuts(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.integration(in)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	wf, rid := run(ctx)
	return pages(ctx, a, integ, CRMToMarketing, in.Cursor, func(ctx context.Context, cursor string) (connectors.RecordPage, string, error) {
		page, err := integ.CRM.OptedOut(ctx, connectors.OptOutQuery{
			Types: s.RecordTypes, Field: s.OptOut, Since: in.Since, Lists: s.Lists, Cursor: cursor, PageSize: s.PageSize,
			ListsAsOf: in.RunStart,
		})
		if err != nil {
			return page, "", classify(err, integ.Settings.IntegrationID, "reading CRM opt-outs")
		}
		return page, page.Next, nil
	}, a.crmSplit(integ), func(ctx context.Context, page connectors.RecordPage, wk *work) error {
		res := &wk.res
		send := map[string]candidate{} // by address: one unsubscribe per person
		var order []string
		var skipped []ledger.Write
		// What the ledger knows decides what is sent.
		err := func() error {
			res.Counts.Pages++
			res.Counts.Read += len(page.Records)
			var cands []candidate
			for _, r := range page.Records {
				if !r.OptedOut {
					continue
				}
				res.Counts.CRMOptOuts++
				if !r.InLists {
					res.Counts.OutsideLists++
					continue
				}
				email, ok := validEmail(r.Email)
				if !ok {
					// Not held: fixing the address edits the record, which
					// brings it back into the next run's window.
					res.Counts.InvalidEmails++
					res.add(FailureReport{Step: CRMToMarketing, Record: r.Ref.String(), Code: "InvalidEmail", Final: true,
						Reason: "record has a missing or invalid email address; skipped until it is corrected"})
					continue
				}
				cands = append(cands, candidate{record: r, email: email, person: a.ledger.Person(email)})
			}
			if len(cands) == 0 {
				return nil
			}
			refs := make([]string, len(cands))
			persons := make([]string, len(cands))
			for i, c := range cands {
				refs[i], persons[i] = c.record.Ref.String(), c.person
			}
			if err := wk.claim(ctx, func() ([]string, error) { return persons, nil }); err != nil {
				return err
			}
			// An opt-out this product wrote, on a record not seen without it
			// since, is its own echo: not a new CRM opt-out, so it is neither
			// observed nor sent back. Any other opt-out is observed, as a new
			// episode when the record was seen cleared in between.
			hist, err := a.ledger.Records(ctx, s.IntegrationID, s.CRMKind, refs)
			if err != nil {
				return err
			}
			echoes, err := a.echoes(ctx, &s, cands, refs, hist)
			if err != nil {
				return err
			}
			var obs []ledger.Observation
			at := make([]int, len(cands)) // index into obs, -1 for an echo
			for i, c := range cands {
				at[i] = -1
				if echoes[i] {
					continue
				}
				at[i] = len(obs)
				obs = append(obs, ledger.Observation{Integration: s.IntegrationID, System: s.CRMKind, Subject: refs[i],
					Person: c.person, Kind: ledger.KindCRMOptOut, Episode: hist[refs[i]].LastCleared, WorkflowID: wf, RunID: rid})
			}
			seen, err := a.ledger.Observe(ctx, obs)
			if err != nil {
				return err
			}
			hashes := make([]string, len(cands))
			for i, c := range cands {
				hashes[i] = connectors.AddressHash(c.email)
			}
			refused, err := a.ledger.Written(ctx, s.IntegrationID, s.MarketingKind, ledger.ActionUnsubscribe, hashes, ledger.ResultRefused)
			if err != nil {
				return err
			}
			// A skip is recorded at the opt-out's first sighting only: a saved
			// search read again every run must not grow the ledger every run.
			skip := func(i int, c candidate, rule string) {
				if !seen[at[i]].New {
					return
				}
				skipped = append(skipped, ledger.Write{Integration: s.IntegrationID, System: s.MarketingKind, Target: connectors.AddressHash(c.email),
					Person: c.person, Action: ledger.ActionUnsubscribe, Result: ledger.ResultSkipped, Rule: rule, Cause: c.record.Ref.String(),
					Audience: s.Audience, WorkflowID: wf, RunID: rid})
			}
			absentCounted := map[string]bool{} // by person
			for i, c := range cands {
				if at[i] < 0 {
					res.Counts.EchoSkipped++
					continue
				}
				p := seen[at[i]].State // the person's state after this page's opt-outs
				status := p.StatusIn(s.Audience)
				switch {
				case p.ResubscribedAt.After(seen[at[i]].At):
					res.Counts.LaterConsent++
					if len(res.LaterConsent) < MaxFailureReports {
						res.LaterConsent = append(res.LaterConsent, connectors.AddressHash(c.email))
					}
					skip(i, c, ruleLaterConsent)
				case status == string(connectors.StatusUnsubscribed) || status == string(connectors.StatusCleaned):
					res.Counts.AlreadyUnsub++
					skip(i, c, ruleAlready)
				case !refused[hashes[i]].IsZero() && refused[hashes[i]].After(p.ResubscribedAt) && p.InAudience(s.Audience):
					// Refused for good, and the person made no choice since
					// (the refusal is taken as this audience's unless the
					// ledger learnt the person's status in another since).
					res.Counts.KnownRefused++
				case s.SkipAbsent && p.OptedOut && status == ledger.MarketingAbsent:
					// Looked up and found absent by an earlier run: not looked
					// up again each time a list is read; a join is caught by
					// the re-subscribes read (unsubscribeJoined). Counted per
					// address, as the lookup that found it absent counted it.
					if !absentCounted[c.person] {
						absentCounted[c.person] = true
						res.Counts.AbsentNotAdded++
					}
					skip(i, c, ruleAbsent)
				default:
					if _, dup := send[c.email]; !dup {
						order = append(order, c.email)
					}
					c.statusAt = p.MarketingStatusAt
					send[c.email] = c
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
		// The unsubscribes go while other pages are decided.
		var writes []ledger.Write
		err = pipelined(ctx, order, integ.Marketing.MaxBatch(), func(ctx context.Context, batch []string) (unsubscribed, error) {
			return a.unsubscribe(ctx, integ, batch)
		}, func(batch []string, u unsubscribed) error {
			out := u.out
			res.Counts.Unsubscribed += out.Written - out.Added
			res.Counts.AddedUnsub += out.Added
			failed := res.recordFailures(CRMToMarketing, out.Failed, nil)
			for _, e := range batch {
				c := send[e]
				w := ledger.Write{Integration: s.IntegrationID, System: s.MarketingKind, Target: connectors.AddressHash(e),
					Person: c.person, Action: ledger.ActionUnsubscribe, Result: ledger.ResultWritten, Rule: ruleCRMToMarketing,
					Cause: c.record.Ref.String(), Audience: s.Audience, WorkflowID: wf, RunID: rid}
				if u.absent[e] {
					res.Counts.AbsentNotAdded++
					// Found absent now: newer than any status the ledger
					// held, however recent (a re-subscribe read seconds ago).
					w.Result, w.Rule, w.StatusFrom = ledger.ResultAbsent, ruleAbsent, c.statusAt
				} else if f, ok := failed[strings.ToLower(e)]; ok {
					w.Result, w.Code = failureResult(f), f.Code
					if f.Compliance {
						w.Result = ledger.ResultRefused
					}
				}
				writes = append(writes, w)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return a.ledger.RecordWrites(ctx, append(writes, skipped...))
	})
}

// echoes tells, per candidate, whether its CRM opt-out is the echo of one
// this product wrote from a marketing unsubscribe (RecordHistory.Echo). It
// is not when the person's marketing status was learnt in another audience
// than the integration's (it was pointed at another since): that
// unsubscribe came from the old audience, and the new one has not had the
// opt-out.
func (a *Activities) echoes(ctx context.Context, s *Settings, cands []candidate, refs []string, hist map[string]ledger.RecordHistory) ([]bool, error) {
	echo := make([]bool, len(cands))
	var persons []string
	for i, c := range cands {
		if echo[i] = hist[refs[i]].Echo(); echo[i] {
			persons = append(persons, c.person)
		}
	}
	if len(persons) == 0 {
		return echo, nil
	}
	people, err := a.ledger.People(ctx, s.IntegrationID, persons)
	if err != nil {
		return nil, err
	}
	for i, c := range cands {
		if p, ok := people[c.person]; echo[i] && ok && p.OptedOut && !p.InAudience(s.Audience) {
			echo[i] = false
		}
	}
	return echo, nil
}

// unsubscribed is what unsubscribe did with one batch of addresses.
type unsubscribed struct {
	out connectors.BatchResult
	// absent are the addresses not sent because the audience lacks them
	// (or holds them archived) and the integration does not add them.
	absent map[string]bool
}

// unsubscribe unsubscribes a batch of addresses from the integration's
// audience. With SkipAbsent, each address is looked up first and only the
// audience's members (archived ones aside) are sent: Mailchimp bills every
// unsubscribed member, and batch subscribe has no way to update existing
// members without adding the others. That costs one lookup per address, so
// a run looks an address up once: the ledger remembers it as absent.
func (a *Activities) unsubscribe(ctx context.Context, integ *Integration, batch []string) (unsubscribed, error) {
	s := integ.Settings
	var u unsubscribed
	send := batch
	if s.SkipAbsent {
		send, u.absent = nil, map[string]bool{}
		// In parts, each renewing the heartbeat: the lookups of every page
		// under way share the vendor's request slots, and one batch's may
		// wait long for its turn.
		err := chunks(ctx, batch, lookupChunk, func(part []string) error {
			ms, err := integ.Marketing.Members(ctx, s.Audience, part)
			if err != nil {
				return classify(err, s.IntegrationID, "looking up addresses in audience "+s.Audience)
			}
			for _, e := range part {
				if st := ms[e].Status; st == connectors.StatusNotFound || st == connectors.StatusArchived {
					u.absent[e] = true
				} else {
					send = append(send, e)
				}
			}
			return nil
		})
		if err != nil || len(send) == 0 {
			return u, err
		}
	}
	out, err := integ.Marketing.Unsubscribe(ctx, s.Audience, send)
	if err != nil {
		return u, classify(err, s.IntegrationID, "unsubscribing from audience "+s.Audience)
	}
	u.out = out
	return u, nil
}

// unsubscribeJoined unsubscribes the members among ms (subscribed, read or
// pushed) whose person's CRM opt-out stands and was not written because
// the audience lacked the address (ledger.MarketingAbsent): they joined
// after it, by an import, an API call or a form, and joining is not the
// person's consent after an opt-out. A re-subscribe of the unsubscribed
// member this leaves is. It returns the other members.
func (a *Activities) unsubscribeJoined(ctx context.Context, integ *Integration, ms []connectors.Member, people map[string]ledger.Person, res *PageResult) ([]connectors.Member, error) {
	s := integ.Settings
	rest := ms[:0:0]
	joined := map[string]connectors.Member{} // by address as given
	var emails []string
	for _, m := range ms {
		p, ok := people[a.ledger.Person(m.Email)]
		if ok && p.OptedOut && connectors.MemberStatus(p.StatusIn(s.Audience)).Blocked() && !m.LastChanged.After(p.MarketingStatusAt) {
			// A subscribe no newer than what the ledger knows since (a join
			// unsubscribed already, seen again: its batch of pushed events
			// applied again, or pushed after the re-subscribes read had
			// it): not the person's choice.
			continue
		}
		if !ok || !p.OptedOut || p.StatusIn(s.Audience) != ledger.MarketingAbsent {
			rest = append(rest, m)
			continue
		}
		if _, dup := joined[m.Email]; !dup {
			emails = append(emails, m.Email)
		}
		joined[m.Email] = m
	}
	wf, rid := run(ctx)
	// Each batch's writes are recorded once it is answered: a retry after
	// a later batch failed reads again only the members still subscribed,
	// and the ledger must not hold those unsubscribed here as absent.
	err := chunks(ctx, emails, integ.Marketing.MaxBatch(), func(batch []string) error {
		var writes []ledger.Write
		out, err := integ.Marketing.Unsubscribe(ctx, s.Audience, batch)
		if err != nil {
			return classify(err, s.IntegrationID, "unsubscribing members who joined after their CRM opt-out from audience "+s.Audience)
		}
		res.Counts.JoinedUnsub += out.Written
		failed := res.recordFailures(CRMToMarketing, out.Failed, nil)
		for _, e := range batch {
			w := ledger.Write{Integration: s.IntegrationID, System: s.MarketingKind, Target: connectors.AddressHash(e),
				Person: a.ledger.Person(e), Action: ledger.ActionUnsubscribe, Result: ledger.ResultWritten, Rule: ruleJoined,
				Cause: memberSubject(joined[e]), Audience: s.Audience, StatusFrom: joined[e].LastChanged, WorkflowID: wf, RunID: rid}
			if f, ok := failed[strings.ToLower(e)]; ok {
				w.Result, w.Code = failureResult(f), f.Code
				if f.Compliance {
					w.Result = ledger.ResultRefused
				}
			}
			writes = append(writes, w)
		}
		return a.ledger.RecordWrites(ctx, writes)
	})
	if err != nil {
		return nil, err
	}
	return rest, nil
}

// SyncFields handles pages of CRM list members (the field-sync step): their mapped
// fields go to the audience's merge fields. Unsubscribed and cleaned
// members get no update, opted-out CRM records and addresses the ledger
// holds as opted out are never added as new members, and no status is
// ever changed.
func (a *Activities) SyncFields(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.integration(in)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	fields := slices.Sorted(maps.Keys(s.FieldMap))
	return pages(ctx, a, integ, FieldSync, in.Cursor, func(ctx context.Context, cursor string) (connectors.RecordPage, string, error) {
		page, err := integ.CRM.ListMembers(ctx, connectors.ListMembersQuery{
			Types: s.RecordTypes, Lists: s.Lists, Fields: fields, Field: s.OptOut, Since: in.Since,
			Cursor: cursor, PageSize: s.PageSize, ListsAsOf: in.RunStart,
		})
		if err != nil {
			return page, "", classify(err, integ.Settings.IntegrationID, "reading CRM list members")
		}
		return page, page.Next, nil
	}, a.crmSplit(integ), serial(func(ctx context.Context, page connectors.RecordPage, res *PageResult) error {
		res.Counts.Pages++
		res.Counts.Read += len(page.Records)
		// One address, one member: the first record of an address gives
		// the fields, but any record of it opted out makes it opted out.
		byEmail := map[string]connectors.Record{}
		var emails []string
		for _, r := range page.Records {
			email, ok := validEmail(r.Email)
			if !ok {
				res.Counts.InvalidEmails++
				continue
			}
			if first, dup := byEmail[email]; dup {
				res.Counts.DuplicateRecords++
				first.OptedOut = first.OptedOut || r.OptedOut
				byEmail[email] = first
				continue
			}
			byEmail[email] = r
			emails = append(emails, email)
		}
		// The mirror, when this run has filled it, answers for the members
		// it holds; an address it lacks is looked up on the platform, so
		// that a mirror missing a member (a new ledger) never makes an
		// archived member look new. The next batches' lookups run while a
		// batch is written.
		var states map[string]ledger.MemberState
		if in.Mirror {
			persons := make([]string, len(emails))
			for i, e := range emails {
				persons[i] = a.ledger.Person(e)
			}
			if states, err = a.ledger.Members(ctx, s.IntegrationID, s.Audience, persons); err != nil {
				return err
			}
		}
		mirrored := map[string]string{} // address → field hashes, from the mirror
		lookup := func(ctx context.Context, batch []string) (map[string]connectors.Member, error) {
			members := map[string]connectors.Member{}
			var ask []string
			for _, e := range batch {
				if st, ok := states[a.ledger.Person(e)]; ok {
					members[e] = connectors.Member{Email: e, Status: connectors.MemberStatus(st.Status)}
				} else {
					ask = append(ask, e)
				}
			}
			if len(ask) == 0 {
				return members, nil
			}
			found, err := integ.Marketing.Members(ctx, s.Audience, ask)
			if err != nil {
				return nil, classify(err, integ.Settings.IntegrationID, "looking up members in audience "+s.Audience)
			}
			maps.Copy(members, found)
			return members, nil
		}
		for _, e := range emails {
			if st, ok := states[a.ledger.Person(e)]; ok {
				mirrored[e] = st.Fields
			}
		}
		err = pipelined(ctx, emails, integ.Marketing.MaxBatch(), lookup, func(batch []string, members map[string]connectors.Member) error {
			links := map[string]string{}
			var newcomers, persons []string
			for _, email := range batch {
				m := members[email]
				if m.ContactID != "" {
					links[a.ledger.Person(email)] = m.ContactID
				}
				if m.Status == connectors.StatusNotFound && !byEmail[email].OptedOut {
					newcomers = append(newcomers, email)
					persons = append(persons, a.ledger.Person(email))
				}
			}
			if err := a.ledger.LinkContacts(ctx, s.IntegrationID, s.MarketingKind, links); err != nil {
				return err
			}
			suppressed, err := a.ledger.People(ctx, s.IntegrationID, persons)
			if err != nil {
				return err
			}
			optedOut, err := a.optedOutAnywhere(ctx, integ, newcomers)
			if err != nil {
				return err
			}
			// Members the mirror holds are updated in place (PATCH, which
			// never creates: a stale entry cannot re-add an address that
			// left the audience); the others are upserted (PUT with
			// status_if_new, which never changes an existing status).
			var updates, upserts []connectors.MemberFields
			for _, email := range batch {
				st := members[email].Status
				r := byEmail[email]
				switch {
				case st.Blocked() || st == connectors.StatusArchived || st == ledger.StatusMoved:
					// An archived member was removed by an admin; a field
					// update would re-add them, so they get none either,
					// nor does an address the person has left.
					res.Counts.SkippedBlocked++
					continue
				case st == connectors.StatusNotFound && (r.OptedOut || optedOut[email]):
					res.Counts.SkippedOptOut++
					continue
				case st == connectors.StatusNotFound && suppressed[a.ledger.Person(email)].OptedOut:
					res.Counts.SkippedSuppressed++
					continue
				}
				merge := map[string]string{}
				for crmField, tag := range s.FieldMap {
					if v, ok := r.Fields[crmField]; ok {
						merge[tag] = v
					}
				}
				h, inMirror := mirrored[email]
				switch {
				case inMirror && unchanged(a.ledger.Person(email), h, merge):
					res.Counts.FieldsUnchanged++
				case inMirror:
					updates = append(updates, connectors.MemberFields{Email: email, Fields: merge})
				default:
					upserts = append(upserts, connectors.MemberFields{Email: email, Fields: merge})
				}
			}
			if len(updates) > 0 {
				// The mirror's status may be minutes old: each member about
				// to be written is looked up first, as before the mirror,
				// so that one who unsubscribed, bounced, was archived or
				// left since gets no update. Unchanged members cost nothing.
				emails := make([]string, len(updates))
				for i, u := range updates {
					emails[i] = u.Email
				}
				now, err := integ.Marketing.Members(ctx, s.Audience, emails)
				if err != nil {
					return classify(err, integ.Settings.IntegrationID, "looking up members in audience "+s.Audience)
				}
				updates = slices.DeleteFunc(updates, func(u connectors.MemberFields) bool {
					st := now[u.Email].Status
					gone := st.Blocked() || st == connectors.StatusArchived || st == connectors.StatusNotFound
					if gone {
						res.Counts.SkippedBlocked++
					}
					return gone
				})
			}
			if len(updates) > 0 {
				out, err := integ.Marketing.UpdateMembers(ctx, s.Audience, updates)
				if err != nil {
					return classify(err, integ.Settings.IntegrationID, "updating merge fields in audience "+s.Audience)
				}
				res.Counts.FieldsUpdated += out.Written
				res.recordFailures(FieldSync, out.Failed, nil)
			}
			// Addresses the lookup found absent are added with one batch
			// call; one that has joined the audience since is left
			// unchanged by it, looked up again and written as an
			// existing member.
			var adds []connectors.MemberFields
			upserts = slices.DeleteFunc(upserts, func(u connectors.MemberFields) bool {
				if members[u.Email].Status == connectors.StatusNotFound {
					adds = append(adds, u)
					return true
				}
				return false
			})
			if len(adds) > 0 {
				out, err := integ.Marketing.AddMembers(ctx, s.Audience, adds, s.StatusIfNew)
				if err != nil {
					return classify(err, integ.Settings.IntegrationID, "adding members to audience "+s.Audience)
				}
				res.Counts.MembersAdded += out.Added
				res.Counts.FieldsUpdated += out.Written - out.Added
				res.recordFailures(FieldSync, out.Failed, nil)
				if len(out.Existing) > 0 {
					now, err := integ.Marketing.Members(ctx, s.Audience, out.Existing)
					if err != nil {
						return classify(err, integ.Settings.IntegrationID, "looking up members in audience "+s.Audience)
					}
					var joined []connectors.MemberFields
					for _, u := range adds {
						st, ok := now[u.Email]
						switch {
						case !ok:
						case st.Status.Blocked() || st.Status == connectors.StatusArchived:
							res.Counts.SkippedBlocked++
						default:
							joined = append(joined, u)
						}
					}
					if len(joined) > 0 {
						// Members others added: all of them updates, not
						// additions, whatever the answers look like.
						out, err := integ.Marketing.UpsertMembers(ctx, s.Audience, joined, s.StatusIfNew)
						if err != nil {
							return classify(err, integ.Settings.IntegrationID, "updating merge fields in audience "+s.Audience)
						}
						res.Counts.FieldsUpdated += out.Written
						res.recordFailures(FieldSync, out.Failed, nil)
					}
				}
			}
			if len(upserts) == 0 {
				return nil
			}
			out, err := integ.Marketing.UpsertMembers(ctx, s.Audience, upserts, s.StatusIfNew)
			if err != nil {
				return classify(err, integ.Settings.IntegrationID, "updating merge fields in audience "+s.Audience)
			}
			res.Counts.MembersAdded += out.Added
			res.Counts.FieldsUpdated += out.Written - out.Added
			res.recordFailures(FieldSync, out.Failed, nil)
			return nil
		})
		return err
	}))
}

// audienceStatuses are the statuses the audience mirror reads, each its
// own stream of changes: Mailchimp lists members by status, and whether an
// unfiltered list includes archived members is not documented.
var audienceStatuses = []connectors.MemberStatus{
	connectors.StatusSubscribed, connectors.StatusPending, connectors.StatusTransactional,
	connectors.StatusUnsubscribed, connectors.StatusCleaned, connectors.StatusArchived,
}

// SyncAudience mirrors, in the ledger, the audience members changed since
// the watermark: status and a keyed hash of each mapped merge field. Field
// sync then looks members up there, with no platform call per member,
// and writes only what differs. The cursor is "<status index>:<cursor>",
// read on into the next status at its end; a part of a split read (see
// audienceSplit) is "<status index>~:<cursor>" and ends with its part.
func (a *Activities) SyncAudience(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.integration(in)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	tags := slices.Sorted(maps.Values(s.FieldMap))
	request := func(i int, inner string) connectors.ChangesRequest {
		return connectors.ChangesRequest{Audience: s.Audience, Status: audienceStatuses[i], Since: in.Since, Cursor: inner, PageSize: s.PageSize, MergeFields: true}
	}
	return pages(ctx, a, integ, FieldSync, in.Cursor, func(ctx context.Context, cursor string) (connectors.MemberPage, string, error) {
		i, part, inner, err := splitAudienceCursor(cursor)
		if err != nil {
			return connectors.MemberPage{}, "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalid, nil)
		}
		page, err := integ.Marketing.ChangedMembers(ctx, request(i, inner))
		if err != nil {
			return page, "", classify(err, integ.Settings.IntegrationID, "reading "+string(audienceStatuses[i])+" members of audience "+s.Audience)
		}
		switch {
		case page.Next != "":
			return page, audienceCursor(i, part, page.Next), nil
		case !part && i+1 < len(audienceStatuses):
			return page, strconv.Itoa(i+1) + ":", nil
		}
		return page, "", nil
	}, a.audienceSplit(integ, request), serial(func(ctx context.Context, page connectors.MemberPage, res *PageResult) error {
		// Counted as mirrored only: the step's reads are its CRM records.
		states := make([]ledger.MemberState, 0, len(page.Members))
		links := map[string]string{}
		for _, m := range page.Members {
			p := a.ledger.Person(m.Email)
			if p == "" {
				continue
			}
			if m.ContactID != "" {
				links[p] = m.ContactID
			}
			states = append(states, ledger.MemberState{Person: p, Contact: m.ContactID, Status: string(m.Status), Fields: fieldHashes(p, tags, m.Fields), Changed: m.LastChanged})
		}
		res.Counts.Mirrored += len(states)
		if err := a.ledger.LinkContacts(ctx, s.IntegrationID, s.MarketingKind, links); err != nil {
			return err
		}
		return a.ledger.SaveMembers(ctx, s.IntegrationID, s.Audience, states)
	}))
}

// audienceSplit splits the rest of a status's read, after a full first
// page, into parts read at once (connectors.ChangesSplitter), each ending
// with its part, and reads every later status in parts of its own too,
// split in the same way when it is large and left out when it is empty:
// the statuses are not read one after the other, and the small ones cost
// one round trip together instead of one each at the end of the read (a
// quiet run's statuses after the first are counted together, and not read
// when they have no change). A
// status found empty that gains members while the parts are read is read
// by the next run, from this run's start less the overlap: the mirror is
// at most one run staler for them, and never decides an opt-out (field
// sync looks members up before it writes, and writes no status). A read
// that cannot be split goes on in one part.
func (a *Activities) audienceSplit(integ *Integration, request func(int, string) connectors.ChangesRequest) func(context.Context, string) []string {
	sp, ok := integ.Marketing.(connectors.ChangesSplitter)
	if !ok {
		return nil
	}
	return func(ctx context.Context, cursor string) []string {
		i, part, inner, err := splitAudienceCursor(cursor)
		if err != nil || part {
			return nil
		}
		// parts[0] is the rest of status i, parts[j] the read of status i+j.
		parts := make([][]string, len(audienceStatuses)-i)
		err = connectors.ForEach(ctx, len(parts), len(parts), func(ctx context.Context, j int) error {
			c := ""
			if j == 0 {
				c = inner
			}
			cs, err := sp.SplitChanges(ctx, request(i+j, c), pagesInFlight)
			if err != nil {
				return err
			}
			keepAlive(ctx) // the statuses' splits share the vendor's slots
			if cs == nil {
				cs = []string{c} // read in one part
			}
			for _, c := range cs {
				parts[j] = append(parts[j], audienceCursor(i+j, true, c))
			}
			return nil
		})
		if err != nil {
			a.log.Info("the audience read goes on in one part", "integration", integ.Settings.IntegrationID, "error", scrubAddresses(err.Error()))
			return nil
		}
		// Not nil when every status left is empty: nothing is left to read.
		return append([]string{}, slices.Concat(parts...)...)
	}
}

// changesSplit splits the rest of a ChangedMembers read, after a full
// first page, into parts read at once (connectors.ChangesSplitter). A
// read that cannot be split, or a split that fails, goes on in one part.
func (a *Activities) changesSplit(integ *Integration, request func(cursor string) connectors.ChangesRequest) func(context.Context, string) []string {
	sp, ok := integ.Marketing.(connectors.ChangesSplitter)
	if !ok {
		return nil
	}
	return func(ctx context.Context, cursor string) []string {
		cs, err := sp.SplitChanges(ctx, request(cursor), pagesInFlight)
		if err != nil {
			a.log.Info("the marketing read goes on in one part", "integration", integ.Settings.IntegrationID, "error", scrubAddresses(err.Error()))
			return nil
		}
		if len(cs) == 0 {
			return nil // no part is not "nothing left" (see pages)
		}
		return cs
	}
}

func audienceCursor(i int, part bool, inner string) string {
	head := strconv.Itoa(i)
	if part {
		head += "~"
	}
	return head + ":" + inner
}

func splitAudienceCursor(c string) (i int, part bool, inner string, err error) {
	if c == "" {
		return 0, false, "", nil
	}
	head, inner, ok := strings.Cut(c, ":")
	head, part = strings.CutSuffix(head, "~")
	i, err = strconv.Atoi(head)
	if !ok || err != nil || i < 0 || i >= len(audienceStatuses) {
		return 0, false, "", fmt.Errorf("audience cursor %q is not one this activity issued", c)
	}
	return i, part, inner, nil
}

// fieldHashes names the values of the merge fields tags, as
// "TAG=hash;..." in tag order, each hash keyed by the person (itself a
// keyed hash of the address), so the ledger holds no field value and no
// dictionary of names reverses it. A tag absent from values hashes "".
func fieldHashes(person string, tags []string, values map[string]string) string {
	var b strings.Builder
	for i, tag := range tags {
		if i > 0 {
			b.WriteByte(';')
		}
		sum := sha256.Sum256([]byte(person + "\x00" + tag + "\x00" + values[tag]))
		b.WriteString(tag + "=" + hex.EncodeToString(sum[:8]))
	}
	return b.String()
}

// unchanged reports whether every field in merge has, in the mirror's
// hashes for person, the value merge gives it.
func unchanged(person, mirrored string, merge map[string]string) bool {
	held := map[string]string{}
	for part := range strings.SplitSeq(mirrored, ";") {
		if tag, h, ok := strings.Cut(part, "="); ok {
			held[tag] = h
		}
	}
	for tag, v := range merge {
		want := fieldHashes(person, []string{tag}, map[string]string{tag: v})
		if tag+"="+held[tag] != want {
			return false
		}
	}
	return true
}

// optedOutAnywhere returns the addresses among emails that any CRM record
// marks as opted out, through the integration's field or the CRM's standard
// one: a person is added to the audience only when no record of theirs, in
// or out of the lists, says no.
func (a *Activities) optedOutAnywhere(ctx context.Context, integ *Integration, emails []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(emails) == 0 {
		return out, nil
	}
	s := integ.Settings
	fields := []connectors.OptOutField{s.OptOut}
	if s.OptOut.Kind != connectors.OptOutStandard {
		fields = append(fields, connectors.OptOutField{Kind: connectors.OptOutStandard})
	}
	err := chunks(ctx, emails, integ.CRM.MaxBatch(), func(batch []string) error {
		for _, f := range fields {
			records, err := integ.CRM.FindByEmail(ctx, s.RecordTypes, f, batch)
			if err != nil {
				return classify(err, integ.Settings.IntegrationID, "checking CRM opt-outs before adding members")
			}
			for _, r := range records {
				if r.OptedOut {
					out[strings.ToLower(r.Email)] = true
				}
			}
		}
		return nil
	})
	return out, err
}

// heartbeat is what a paging activity records after each page, so a retry
// resumes after the last page it finished, with that page's counts.
type heartbeat struct {
	Cursor  string
	Partial PageResult
	Done    bool
}

type heartbeatKey struct{}

// keepAlive records the last heartbeat again, so a long page does not
// look like a dead worker; a retry still resumes after the last whole page.
func keepAlive(ctx context.Context) {
	if hb, ok := ctx.Value(heartbeatKey{}).(*beat); ok && activity.IsActivity(ctx) {
		hb.again()
	}
}

func (r *PageResult) add(f FailureReport) {
	if f.HoldsWatermark {
		r.HoldWatermark = true
	}
	if len(r.Failures) < MaxFailureReports {
		r.Failures = append(r.Failures, f)
	}
}

// recordFailures turns a batch's failures into reports and returns them
// by key (lower-cased for an address). A compliance refusal is final and
// counted apart; any other final answer (an invalid, fake or forgotten
// address) is counted as refused; only a transient failure holds the
// step's watermark, so that the next run retries the item. emailOf maps a
// CRM record key to its address, to report it by hash.
func (r *PageResult) recordFailures(step Step, failed []connectors.Failure, emailOf map[string]string) map[string]connectors.Failure {
	byKey := make(map[string]connectors.Failure, len(failed))
	for _, f := range failed {
		rep := FailureReport{Step: step, Code: f.Code, Reason: scrubAddresses(f.Message), Compliance: f.Compliance, Final: !f.Retryable}
		var key string
		if f.Email != "" {
			rep.AddressHash = connectors.AddressHash(f.Email)
			key = strings.ToLower(strings.TrimSpace(f.Email))
		} else {
			key = f.Record.String()
			rep.Record = key
			if email, ok := emailOf[key]; ok {
				rep.AddressHash = connectors.AddressHash(email)
			}
		}
		byKey[key] = f
		switch {
		case f.Compliance:
			r.Counts.ComplianceHeld++
		case f.Retryable:
			r.Counts.Failed++
			rep.HoldsWatermark = true
		default:
			r.Counts.Refused++
		}
		r.add(rep)
	}
	return byKey
}

// addressPattern matches an email address, raw or URL-encoded, even one a
// connector already shortened ("j***@example.com").
var addressPattern = regexp.MustCompile(`[^\s"'<>()\[\],;:]+(@|%40)[^\s"'<>()\[\],;:]+`)

// scrubAddresses replaces every address in a vendor's message with
// "<address>": results and histories name people by address hash only.
func scrubAddresses(s string) string {
	return addressPattern.ReplaceAllString(s, "<address>")
}

// validEmail returns the address normalised, or false when it is missing or invalid.
func validEmail(s string) (string, bool) { return connectors.NormalizeEmail(s) }

// chunks calls fn on consecutive slices of at most size items, renewing
// the activity's heartbeat before each: one page of a thousand NetSuite
// writes at the account's concurrency can outlast the heartbeat timeout.
func chunks[T any](ctx context.Context, items []T, size int, fn func([]T) error) error {
	size = max(size, 1)
	for start := 0; start < len(items); start += size {
		keepAlive(ctx)
		if err := fn(items[start:min(start+size, len(items))]); err != nil {
			return err
		}
	}
	return nil
}

// callsAhead bounds the connector calls one step keeps in flight. The
// connector's per-account limiter holds the requests to what the vendor
// allows; this only has to be high enough to keep that limiter busy
// across batch boundaries (a NetSuite batch is one request per record,
// a Mailchimp batch one request for 500).
const callsAhead = 8

// lookupChunk is how many addresses unsubscribe looks up between two
// heartbeats.
const lookupChunk = 50

// pipelined calls call on consecutive slices of items of at most size,
// up to callsAhead at once, and apply on each slice's answer in order,
// one at a time, so that apply may update the step's result and the
// ledger without locks. The first error stops it; calls already sent are
// cancelled.
func pipelined[T, R any](ctx context.Context, items []T, size int, call func(context.Context, []T) (R, error), apply func([]T, R) error) error {
	size = max(size, 1)
	n := (len(items) + size - 1) / size
	if n == 0 {
		return nil
	}
	batch := func(i int) []T { return items[i*size : min((i+1)*size, len(items))] }
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		r   R
		err error
	}
	answers := make([]chan answer, n)
	for i := range answers {
		answers[i] = make(chan answer, 1)
	}
	slots := make(chan struct{}, callsAhead)
	go func() {
		for i := range n {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				answers[i] <- answer{err: ctx.Err()}
				continue
			}
			go func() {
				defer func() { <-slots }()
				r, err := call(ctx, batch(i))
				answers[i] <- answer{r, err}
			}()
		}
	}()
	for i := range n {
		keepAlive(ctx)
		a := <-answers[i]
		if a.err != nil {
			return a.err
		}
		if err := apply(batch(i), a.r); err != nil {
			return err
		}
	}
	return nil
}

// classify turns a connector error into the error Temporal should see:
// typed non-retryable application errors for what retrying cannot fix, a
// retryable error with the API's requested delay for a 429, and the error
// itself (retried by the activity's retry policy) for the rest. Each is
// counted by kind in the activity failure series.
func classify(err error, integration, doing string) error {
	out := classified(err, integration, doing)
	activityFailed(integration, err, out)
	return out
}

func classified(err error, integration, doing string) error {
	var api *connectors.APIError
	errors.As(err, &api)
	// Every failure names its integration, whichever connector answered.
	doing = fmt.Sprintf("integration %q: %s", integration, doing)
	msg := doing + ": " + err.Error()
	nonRetryable := func(typ string) error {
		return temporal.NewNonRetryableApplicationError(msg, typ, err)
	}
	switch {
	case errors.Is(err, connectors.ErrUnauthorized):
		return nonRetryable(ErrTypeUnauthorized)
	case errors.Is(err, connectors.ErrForbidden):
		return nonRetryable(ErrTypeForbidden)
	case errors.Is(err, connectors.ErrQuotaExhausted):
		return nonRetryable(ErrTypeQuotaExceeded)
	case errors.Is(err, connectors.ErrNotFound):
		return nonRetryable(ErrTypeNotFound)
	case errors.Is(err, connectors.ErrInvalid):
		return nonRetryable(ErrTypeInvalid)
	case errors.Is(err, connectors.ErrRateLimited):
		var delay time.Duration
		if api != nil {
			delay = api.RetryAfter
		}
		return temporal.NewApplicationErrorWithOptions(msg, ErrTypeRateLimited,
			temporal.ApplicationErrorOptions{Cause: err, NextRetryDelay: delay})
	}
	return fmt.Errorf("%s: %w", doing, err)
}

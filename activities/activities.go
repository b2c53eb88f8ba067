package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

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
	reg Registry
	log *slog.Logger
}

// New returns the activities over reg; log may be nil.
func New(reg Registry, log *slog.Logger) *Activities {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Activities{reg: reg, log: log}
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

// SyncMarketingChanges handles pages of members that became unsubscribed (or
// cleaned) since the watermark: for each unsubscribe it sets the opt-out on
// every CRM record with that address; for each clean it records the bounce
// in the mapped cleaned field, if any, and never touches the opt-out.
func (a *Activities) SyncMarketingChanges(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.reg.Integration(in.IntegrationID)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	return a.pages(ctx, integ, in.Cursor, func(ctx context.Context, cursor string, res *PageResult) (string, error) {
		page, err := integ.Marketing.ChangedMembers(ctx, connectors.ChangesRequest{
			Audience: s.Audience, Status: in.Status, Since: in.Since, Cursor: cursor, PageSize: s.PageSize,
		})
		if err != nil {
			return "", classify(err, "reading "+string(in.Status)+" members of audience "+s.Audience)
		}
		res.Counts.Pages++
		res.Counts.Read += len(page.Members)
		emails := make([]string, 0, len(page.Members))
		for _, m := range page.Members {
			emails = append(emails, m.Email)
		}
		if in.Status == connectors.StatusCleaned {
			res.Counts.Cleaned += len(emails)
			if s.CleanedField != "" {
				err = a.markCleaned(ctx, integ, emails, res)
			}
		} else {
			res.Counts.Unsubscribes += len(emails)
			err = a.optOutInCRM(ctx, integ, emails, res)
		}
		return page.Next, err
	})
}

// optOutInCRM sets the opt-out on every CRM record of each address.
func (a *Activities) optOutInCRM(ctx context.Context, integ *Integration, emails []string, res *PageResult) error {
	s := integ.Settings
	return chunks(ctx, emails, integ.CRM.MaxBatch(), func(batch []string) error {
		records, err := integ.CRM.FindByEmail(ctx, s.RecordTypes, s.OptOut, batch)
		if err != nil {
			return classify(err, "finding CRM records by address")
		}
		byEmail := map[string]int{}
		var todo []connectors.RecordRef
		for _, r := range records {
			byEmail[strings.ToLower(r.Email)]++
			if r.OptedOut {
				res.Counts.CRMAlreadyOut++
				continue
			}
			todo = append(todo, r.Ref)
		}
		for _, e := range batch {
			switch n := byEmail[strings.ToLower(e)]; {
			case n == 0:
				res.Counts.NotInCRM++
			case n > 1:
				res.Counts.DuplicateRecords += n - 1
			}
		}
		if len(todo) == 0 {
			return nil
		}
		out, err := integ.CRM.SetOptOut(ctx, s.OptOut, todo)
		if err != nil {
			return classify(err, "setting the CRM opt-out")
		}
		res.Counts.CRMOptedOut += out.Written
		res.recordFailures(MarketingToCRM, out.Failed, recordKey(records))
		return nil
	})
}

// markCleaned records a bounce in the mapped cleaned field.
func (a *Activities) markCleaned(ctx context.Context, integ *Integration, emails []string, res *PageResult) error {
	s := integ.Settings
	field := connectors.OptOutField{Kind: connectors.OptOutCustom, Field: s.CleanedField}
	return chunks(ctx, emails, integ.CRM.MaxBatch(), func(batch []string) error {
		records, err := integ.CRM.FindByEmail(ctx, s.RecordTypes, field, batch)
		if err != nil {
			return classify(err, "finding CRM records by address")
		}
		var todo []connectors.RecordRef
		for _, r := range records {
			if !r.OptedOut { // here OptedOut reads the cleaned field
				todo = append(todo, r.Ref)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		out, err := integ.CRM.SetOptOut(ctx, field, todo)
		if err != nil {
			return classify(err, "recording cleaned addresses in "+s.CleanedField)
		}
		res.Counts.CleanedRecorded += out.Written
		res.recordFailures(MarketingToCRM, out.Failed, recordKey(records))
		return nil
	})
}

// SyncCRMOptOuts handles pages of CRM records opted out since the
// watermark (Step 1): those inside the integration's lists are unsubscribed
// from the audience; those outside are counted and left alone.
func (a *Activities) SyncCRMOptOuts(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.reg.Integration(in.IntegrationID)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	return a.pages(ctx, integ, in.Cursor, func(ctx context.Context, cursor string, res *PageResult) (string, error) {
		page, err := integ.CRM.OptedOut(ctx, connectors.OptOutQuery{
			Types: s.RecordTypes, Field: s.OptOut, Since: in.Since, Lists: s.Lists, Cursor: cursor, PageSize: s.PageSize,
		})
		if err != nil {
			return "", classify(err, "reading CRM opt-outs")
		}
		res.Counts.Pages++
		res.Counts.Read += len(page.Records)
		seen := map[string]bool{}
		var emails []string
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
				res.add(FailureReport{Direction: CRMToMarketing, Record: r.Ref.String(), Code: "InvalidEmail",
					Reason: "record has a missing or invalid email address; skipped until it is corrected"})
				continue
			}
			if !seen[email] {
				seen[email] = true
				emails = append(emails, email)
			}
		}
		err = chunks(ctx, emails, integ.Marketing.MaxBatch(), func(batch []string) error {
			out, err := integ.Marketing.Unsubscribe(ctx, s.Audience, batch)
			if err != nil {
				return classify(err, "unsubscribing from audience "+s.Audience)
			}
			res.Counts.Unsubscribed += out.Written
			res.recordFailures(CRMToMarketing, out.Failed, nil)
			return nil
		})
		return page.Next, err
	})
}

// SyncFields handles pages of CRM list members (Step 3): their mapped
// fields go to the audience's merge fields. Unsubscribed and cleaned
// members get no update, opted-out CRM records are never added as new
// members, and no status is ever changed.
func (a *Activities) SyncFields(ctx context.Context, in PageInput) (PageResult, error) {
	integ, err := a.reg.Integration(in.IntegrationID)
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	fields := slices.Sorted(maps.Keys(s.FieldMap))
	return a.pages(ctx, integ, in.Cursor, func(ctx context.Context, cursor string, res *PageResult) (string, error) {
		page, err := integ.CRM.ListMembers(ctx, connectors.ListMembersQuery{
			Types: s.RecordTypes, Lists: s.Lists, Fields: fields, Field: s.OptOut, Since: in.Since,
			Cursor: cursor, PageSize: s.PageSize,
		})
		if err != nil {
			return "", classify(err, "reading CRM list members")
		}
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
		err = chunks(ctx, emails, integ.Marketing.MaxBatch(), func(batch []string) error {
			statuses, err := integ.Marketing.MemberStatuses(ctx, s.Audience, batch)
			if err != nil {
				return classify(err, "looking up member statuses in audience "+s.Audience)
			}
			var newcomers []string
			for _, email := range batch {
				if statuses[email] == connectors.StatusNotFound && !byEmail[email].OptedOut {
					newcomers = append(newcomers, email)
				}
			}
			optedOut, err := a.optedOutAnywhere(ctx, integ, newcomers)
			if err != nil {
				return err
			}
			var todo []connectors.MemberFields
			for _, email := range batch {
				st := statuses[email]
				r := byEmail[email]
				switch {
				case st.Blocked() || st == connectors.StatusArchived:
					// An archived member was removed by an admin; a field
					// update would re-add them, so they get none either.
					res.Counts.SkippedBlocked++
					continue
				case st == connectors.StatusNotFound && (r.OptedOut || optedOut[email]):
					res.Counts.SkippedOptOut++
					continue
				}
				merge := map[string]string{}
				for crmField, tag := range s.FieldMap {
					if v, ok := r.Fields[crmField]; ok {
						merge[tag] = v
					}
				}
				todo = append(todo, connectors.MemberFields{Email: email, Fields: merge})
			}
			if len(todo) == 0 {
				return nil
			}
			out, err := integ.Marketing.UpsertMembers(ctx, s.Audience, todo, s.StatusIfNew)
			if err != nil {
				return classify(err, "updating merge fields in audience "+s.Audience)
			}
			res.Counts.MembersAdded += out.Added
			res.Counts.FieldsUpdated += out.Written - out.Added
			res.recordFailures(FieldSync, out.Failed, nil)
			return nil
		})
		return page.Next, err
	})
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
				return classify(err, "checking CRM opt-outs before adding members")
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

// pages runs handle page by page from cursor (or from the cursor this
// activity heartbeated before a retry), heartbeating the cursor after each
// page, until the step is done or PagesPerActivity pages were handled.
func (a *Activities) pages(ctx context.Context, integ *Integration, cursor string, handle func(context.Context, string, *PageResult) (string, error)) (PageResult, error) {
	var res PageResult
	last := &heartbeat{Cursor: cursor}
	if activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, last); err == nil {
			cursor, res = last.Cursor, last.Partial
		}
	}
	ctx = context.WithValue(ctx, heartbeatKey{}, last)
	limit := max(integ.Settings.PagesPerActivity, 1)
	// A heartbeat is recorded after each finished page, so a resumed
	// attempt whose last page was the step's last has nothing left to do.
	for i := 0; i < limit && !last.Done; i++ {
		next, err := handle(ctx, cursor, &res)
		if err != nil {
			return PageResult{}, err
		}
		cursor = next
		*last = heartbeat{Cursor: cursor, Partial: res, Done: cursor == ""}
		activity.RecordHeartbeat(ctx, *last)
	}
	res.Next = cursor
	a.log.Debug("pages synced", "integration", integ.Settings.IntegrationID, "pages", res.Counts.Pages,
		"read", res.Counts.Read, "failed", res.Counts.Failed, "more", cursor != "")
	if u, ok := integ.CRM.(UsageReporter); ok {
		if used, limit, ok := u.APIUsage(); ok {
			res.CRMAPIUsage = &APIUsage{Used: used, Max: limit}
		}
	}
	return res, nil
}

// UsageReporter is implemented by CRM connectors that read a daily API
// budget from their responses (Salesforce's Sforce-Limit-Info).
type UsageReporter interface {
	APIUsage() (used, max int, ok bool)
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
	if hb, ok := ctx.Value(heartbeatKey{}).(*heartbeat); ok && activity.IsActivity(ctx) {
		activity.RecordHeartbeat(ctx, *hb)
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

// recordFailures turns a batch's failures into reports. A compliance
// refusal is final and counted apart; any other failure holds the step's
// watermark so the next run retries the item. emailOf maps a CRM record
// key to its address, to report it by hash.
func (r *PageResult) recordFailures(dir Direction, failed []connectors.Failure, emailOf map[string]string) {
	for _, f := range failed {
		rep := FailureReport{Direction: dir, Code: f.Code, Reason: scrubAddresses(f.Message), Compliance: f.Compliance}
		if email, ok := emailOf[f.Key]; ok {
			rep.Record, rep.AddressHash = f.Key, connectors.AddressHash(email)
		} else if strings.Contains(f.Key, "@") {
			rep.AddressHash = connectors.AddressHash(f.Key)
		} else {
			rep.Record = f.Key
		}
		if f.Compliance {
			r.Counts.ComplianceHeld++
		} else {
			r.Counts.Failed++
			rep.HoldsWatermark = true
		}
		r.add(rep)
	}
}

func recordKey(records []connectors.Record) map[string]string {
	m := make(map[string]string, len(records))
	for _, r := range records {
		m[r.Ref.String()] = r.Email
	}
	return m
}

// addressPattern matches an email address, raw or URL-encoded, even one a
// connector already shortened ("j***@example.com").
var addressPattern = regexp.MustCompile(`[^\s"'<>()\[\],;:]+(@|%40)[^\s"'<>()\[\],;:]+`)

// scrubAddresses replaces every address in a vendor's message with
// "<address>": results and histories name people by address hash only.
func scrubAddresses(s string) string {
	return addressPattern.ReplaceAllString(s, "<address>")
}

// validEmail returns the address lower-cased, or false when it is missing or invalid.
func validEmail(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", false
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Address != s || !strings.Contains(s[strings.LastIndex(s, "@"):], ".") {
		return "", false
	}
	return strings.ToLower(s), true
}

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

// classify turns a connector error into the error Temporal should see:
// typed non-retryable application errors for what retrying cannot fix, a
// retryable error with the API's requested delay for a 429, and the error
// itself (retried by the activity's retry policy) for the rest.
func classify(err error, doing string) error {
	var api *connectors.APIError
	errors.As(err, &api)
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

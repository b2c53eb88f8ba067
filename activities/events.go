package activities

import (
	"context"
	"maps"
	"slices"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
)

// ruleArchived is why an archive by the account changes no opt-out.
const ruleArchived = "a member deleted by the account (not by the person) is not an opt-out"

// ApplyEvents applies the pushed events it is given, as the events
// workflow did before it kept them in the ledger's inbox (TakeEvents); it
// stays for the runs of that workflow started before.
func (a *Activities) ApplyEvents(ctx context.Context, in EventsInput) (PageResult, error) {
	return a.applyEvents(ctx, in)
}

// applyEvents applies pushed marketing events through the same rules as
// the scheduled sync: an address change is recorded first (so that an
// unsubscribe of the new address in the same batch reaches the earlier
// one), then cleans, unsubscribes and re-subscribes, each as the
// marketing-to-crm step handles the members it reads. A profile edit
// changes no opt-out (field sync reads fields itself); an unsubscribe with
// action "delete" is the account deleting a member, not the person's
// choice, unless the reason is abuse (a spam complaint).
func (a *Activities) applyEvents(ctx context.Context, in EventsInput) (PageResult, error) {
	integ, err := a.integration(PageInput{IntegrationID: in.IntegrationID, Settings: in.Settings})
	if err != nil {
		return PageResult{}, err
	}
	s := integ.Settings
	var res PageResult
	evs := slices.Clone(in.Events)
	slices.SortStableFunc(evs, func(x, y Event) int { return x.FiredAt.Compare(y.FiredAt) })
	var (
		aliases                   []ledger.Alias
		moved                     []ledger.MemberState
		cleaned, unsubbed, subbed []connectors.Member
	)
	for _, ev := range evs {
		email, err := a.ledger.Unseal(ev.Sealed)
		if err != nil {
			res.Counts.InvalidEmails++
			continue
		}
		m := connectors.Member{Email: email, LastChanged: ev.FiredAt}
		res.Counts.Events++
		switch ev.Type {
		case connectors.EventAddressChange:
			old, err := a.ledger.Unseal(ev.OldSealed)
			if err != nil {
				res.Counts.InvalidEmails++
				continue
			}
			if a.ledger.Person(old) == a.ledger.Person(email) {
				res.Counts.EventsIgnored++ // the same address in other letter case
				continue
			}
			res.Counts.AddressChanges++
			aliases = append(aliases, ledger.Alias{Person: a.ledger.Person(email), Alias: a.ledger.Person(old), Sealed: ev.OldSealed, Changed: ev.FiredAt})
			// The earlier address left the audience with the person: field
			// sync must neither update nor add it back.
			moved = append(moved, ledger.MemberState{Person: a.ledger.Person(old), Status: ledger.StatusMoved, Changed: ev.FiredAt})
		case connectors.EventCleaned:
			m.Status = connectors.StatusCleaned
			cleaned = append(cleaned, m)
			if ev.Reason == "abuse" {
				// A spam complaint: a bounce and an opt-out.
				unsubbed = append(unsubbed, connectors.Member{Email: email, Status: connectors.StatusUnsubscribed, LastChanged: ev.FiredAt})
			}
		case connectors.EventUnsubscribe:
			if AccountDeleted(ev) {
				res.Counts.EventsIgnored++
				a.log.Debug("event changes no opt-out", "integration", s.IntegrationID, "rule", ruleArchived)
				continue
			}
			m.Status = connectors.StatusUnsubscribed
			unsubbed = append(unsubbed, m)
		case connectors.EventSubscribe:
			m.Status = connectors.StatusSubscribed
			subbed = append(subbed, m)
		default:
			res.Counts.EventsIgnored++
		}
	}
	if err := a.ledger.AddAliases(ctx, s.IntegrationID, aliases); err != nil {
		return PageResult{}, err
	}
	// A new address that had already opted out (its unsubscribe came
	// first, pushed or polled): the opt-out now reaches the earlier one.
	unsubbed, err = a.optedOutBefore(ctx, s.IntegrationID, evs, unsubbed)
	if err != nil {
		return PageResult{}, err
	}
	if err := a.ledger.SaveMembers(ctx, s.IntegrationID, s.Audience, moved); err != nil {
		return PageResult{}, err
	}
	if len(cleaned) > 0 {
		res.Counts.Cleaned += len(cleaned)
		if err := a.markCleaned(ctx, integ, cleaned, &res); err != nil {
			return PageResult{}, err
		}
	}
	// A delivery can arrive late (a retry): an unsubscribe older than a
	// re-subscribe the ledger already holds is not the person's latest
	// choice.
	unsubbed, err = a.notSuperseded(ctx, s.IntegrationID, unsubbed, &res)
	if err != nil {
		return PageResult{}, err
	}
	if len(unsubbed) > 0 {
		res.Counts.Unsubscribes += len(unsubbed)
		if err := alone(&res, func(wk *work) error { return a.optOutInCRM(ctx, integ, unsubbed, wk) }); err != nil {
			return PageResult{}, err
		}
	}
	if len(subbed) > 0 {
		// A member who joined after a CRM opt-out the audience lacked is
		// unsubscribed, and the join is not remembered as a choice.
		if subbed, err = a.noteResubscribes(ctx, integ, subbed, &res); err != nil {
			return PageResult{}, err
		}
		// Every subscribe is remembered as the person's latest choice, even
		// of one the ledger never knew blocked: an unsubscribe delivered
		// late (a retry) and older than it must not be applied after it.
		wf, rid := run(ctx)
		obs := make([]ledger.Observation, 0, len(subbed))
		for _, m := range subbed {
			if p := a.ledger.Person(m.Email); p != "" {
				obs = append(obs, ledger.Observation{Integration: s.IntegrationID, System: s.MarketingKind, Subject: memberSubject(m),
					Person: p, Kind: ledger.KindResubscribe, OccurredAt: m.LastChanged, Audience: s.Audience, WorkflowID: wf, RunID: rid})
			}
		}
		if _, err := a.ledger.Observe(ctx, obs); err != nil {
			return PageResult{}, err
		}
	}
	if at, ok, err := a.ledger.OldestPending(ctx, s.IntegrationID); err != nil {
		return PageResult{}, err
	} else if ok {
		res.OldestPending = &at
	}
	// Pushed events go through the marketing-to-crm code, and count there.
	observe(s.IntegrationID, MarketingToCRM, res.Counts)
	return res, nil
}

// optedOutBefore adds to unsubbed the new address of each address change
// among evs whose person's marketing opt-out stands in the ledger, unless
// unsubbed already has it, so that the opt-out is written to the records
// of the earlier addresses (see withEarlierAddresses).
func (a *Activities) optedOutBefore(ctx context.Context, integration string, evs []Event, unsubbed []connectors.Member) ([]connectors.Member, error) {
	have := map[string]bool{}
	for _, m := range unsubbed {
		have[a.ledger.Person(m.Email)] = true
	}
	changed := map[string]string{}
	for _, ev := range evs {
		if ev.Type != connectors.EventAddressChange || have[ev.Person] {
			continue
		}
		if email, err := a.ledger.Unseal(ev.Sealed); err == nil && a.ledger.Person(email) == ev.Person {
			changed[ev.Person] = email
		}
	}
	if len(changed) == 0 {
		return unsubbed, nil
	}
	people, err := a.ledger.People(ctx, integration, slices.Sorted(maps.Keys(changed)))
	if err != nil {
		return nil, err
	}
	for _, person := range slices.Sorted(maps.Keys(changed)) {
		if p, ok := people[person]; ok && p.SuppressedByMarketing() {
			unsubbed = append(unsubbed, connectors.Member{Email: changed[person], Status: connectors.StatusUnsubscribed, LastChanged: p.MarketingOptOutAt})
		}
	}
	return unsubbed, nil
}

// notSuperseded drops the unsubscribes older than the person's latest
// re-subscribe in the ledger, counting them as later consent.
func (a *Activities) notSuperseded(ctx context.Context, integration string, ms []connectors.Member, res *PageResult) ([]connectors.Member, error) {
	persons := make([]string, 0, len(ms))
	for _, m := range ms {
		persons = append(persons, a.ledger.Person(m.Email))
	}
	people, err := a.ledger.People(ctx, integration, persons)
	if err != nil {
		return nil, err
	}
	out := ms[:0:0]
	for _, m := range ms {
		if p, ok := people[a.ledger.Person(m.Email)]; ok && p.ResubscribedAt.After(m.LastChanged) {
			res.Counts.LaterConsent++
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// AccountDeleted reports whether an unsubscribe event is the account
// deleting (archiving) the member rather than the person's opt-out: action
// "delete", unless the reason is abuse (a spam complaint).
func AccountDeleted(ev Event) bool {
	return ev.Type == connectors.EventUnsubscribe && ev.Action == "delete" && ev.Reason != "abuse"
}

// withEarlierAddresses adds to members, for each whose person changed
// address (a recorded upemail), a member of each earlier address with the
// same status and time, so that the opt-out reaches the CRM records that
// still carry an earlier address. An earlier address that has since come
// back to the audience as a member of its own (mirrored after the change,
// not moved) belongs to someone again and is left alone.
func (a *Activities) withEarlierAddresses(ctx context.Context, integ *Integration, members []connectors.Member) ([]connectors.Member, error) {
	s := integ.Settings
	persons := make([]string, 0, len(members))
	for _, m := range members {
		if p := a.ledger.Person(m.Email); p != "" {
			persons = append(persons, p)
		}
	}
	aliases, err := a.ledger.Aliases(ctx, s.IntegrationID, persons)
	if err != nil || len(aliases) == 0 {
		return members, err
	}
	var earlier []string
	for _, as := range aliases {
		for _, al := range as {
			earlier = append(earlier, al.Alias)
		}
	}
	mirrored, err := a.ledger.Members(ctx, s.IntegrationID, s.Audience, earlier)
	if err != nil {
		return nil, err
	}
	type candidate struct {
		email string
		of    connectors.Member
	}
	var cands []candidate
	for _, m := range members {
		for _, al := range aliases[a.ledger.Person(m.Email)] {
			if ms, ok := mirrored[al.Alias]; ok && ms.Status != ledger.StatusMoved && ms.Changed.After(al.Changed) {
				continue
			}
			if old, err := a.ledger.Unseal(al.Sealed); err == nil {
				cands = append(cands, candidate{old, m})
			}
		}
	}
	// An earlier address that is a member of the audience again belongs
	// to someone now (the platform answers 404 for an address its member
	// left): asked live, since the mirror may be older than the change.
	taken := map[string]bool{}
	err = chunks(ctx, cands, integ.Marketing.MaxBatch(), func(batch []candidate) error {
		emails := make([]string, len(batch))
		for i, c := range batch {
			emails[i] = c.email
		}
		found, err := integ.Marketing.Members(ctx, s.Audience, emails)
		if err != nil {
			return classify(err, s.IntegrationID, "looking up earlier addresses in audience "+s.Audience)
		}
		for e, m := range found {
			if m.Status != connectors.StatusNotFound && m.Status != connectors.StatusArchived {
				taken[e] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := slices.Clone(members)
	for _, c := range cands {
		if !taken[c.email] {
			out = append(out, connectors.Member{Email: c.email, Status: c.of.Status, LastChanged: c.of.LastChanged, ContactID: c.of.ContactID})
		}
	}
	return out, nil
}

package salesforce

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// fieldPattern is the API-name charset: a letter, then letters, digits and
// single underscores, with an optional namespace prefix ("ns__") and an
// optional custom suffix ("__c", or "__pc" for a person-account field).
// Only names that match ever reach a SOQL string.
var fieldPattern = regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*__)?[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__c|__pc)?$`)

// idPattern is a 15- or 18-character record id.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$`)

func validFieldName(name string) error {
	if len(name) > 80 || !fieldPattern.MatchString(name) {
		return fmt.Errorf("%q is not a Salesforce field API name", name)
	}
	return nil
}

// validOptOutField checks an opt-out field; name is how the caller's
// input calls it, for the error.
func validOptOutField(name string, f connectors.OptOutField) error {
	switch f.Kind {
	case connectors.OptOutStandard:
		return nil
	case connectors.OptOutCustom, connectors.OptOutInverted:
		if err := validFieldName(f.Field); err != nil {
			return fmt.Errorf("salesforce: %s.Field: %w", name, err)
		}
		if !strings.HasSuffix(f.Field, "__c") && !strings.HasSuffix(f.Field, "__pc") {
			return fmt.Errorf("salesforce: %s.Field %q: a custom opt-out field's API name ends in __c", name, f.Field)
		}
		return nil
	}
	return fmt.Errorf("salesforce: %s.Kind %q is not standard, custom or inverted", name, f.Kind)
}

// quote writes a SOQL string literal, escaping what SOQL requires: the
// quote, the backslash and control characters.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// datetime writes a SOQL dateTime literal: unquoted ISO-8601 in UTC with Z.
// Truncating to the second widens a ">=" filter, never narrows it.
func datetime(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format("2006-01-02T15:04:05Z")
}

// parseStamp reads a dateTime as the REST API writes it.
func parseStamp(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05.000Z", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unreadable dateTime %q", s)
}

// object is one record type the connector reads and writes.
type object struct {
	name  string // sObject name, also the RecordRef type
	email string // the address field
	// optOut is the standard opt-out checkbox.
	optOut string
	// memberKey is the field CampaignMember points at: Id for Contact and
	// Lead; for a person account, its PersonContactId, because a person
	// account joins a campaign through its person contact.
	memberKey string
	// memberField is the CampaignMember field holding memberKey.
	memberField string
	// filter restricts the object to the records the sync handles.
	filter string
}

var objects = map[string]object{
	"Contact": {name: "Contact", email: "Email", optOut: "HasOptedOutOfEmail", memberKey: "Id", memberField: "ContactId"},
	// A converted Lead is read-only and its opt-out lives on the Contact
	// it became, so converted Leads are left out.
	"Lead":    {name: "Lead", email: "Email", optOut: "HasOptedOutOfEmail", memberKey: "Id", memberField: "LeadId", filter: "IsConverted = false"},
	"Account": {name: "Account", email: "PersonEmail", optOut: "PersonHasOptedOutOfEmail", memberKey: "PersonContactId", memberField: "ContactId", filter: "IsPersonAccount = true"},
}

// resolveTypes checks the requested types. When person accounts are read as
// Accounts, the person contacts behind them (which SOQL on Contact also
// returns) are left out of Contact reads so that each person is seen once,
// as the Account, the only record through which Salesforce lets a person
// account's fields be written. IsPersonAccount only exists in orgs with
// person accounts, so that filter is added only when Account is asked for.
func resolveTypes(types []string) ([]object, error) {
	if len(types) == 0 {
		return nil, errors.New("salesforce: no record types given (Types: Contact, Lead, Account)")
	}
	seen := map[string]bool{}
	var out []object
	for _, t := range types {
		o, ok := objects[t]
		if !ok {
			return nil, fmt.Errorf("salesforce: record type %q is not one of Contact, Lead, Account", t)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, o)
		}
	}
	if seen["Account"] {
		for i := range out {
			if out[i].name == "Contact" {
				out[i].filter = "IsPersonAccount = false"
			}
		}
	}
	return out, nil
}

// optOutColumn is the field holding the opt-out on o and the value that
// means "opted out". A custom field is named as on Contact and Lead
// ("X__c"); on a person account the same Contact field reads "X__pc".
func optOutColumn(o object, f connectors.OptOutField) (string, bool) {
	switch f.Kind {
	case connectors.OptOutCustom, connectors.OptOutInverted:
		name := f.Field
		if o.name == "Account" && strings.HasSuffix(name, "__c") {
			name = strings.TrimSuffix(name, "__c") + "__pc"
		} else if o.name != "Account" && strings.HasSuffix(name, "__pc") {
			name = strings.TrimSuffix(name, "__pc") + "__c"
		}
		return name, f.Kind == connectors.OptOutCustom
	}
	return o.optOut, true
}

// MaxCampaigns bounds the campaigns one integration scopes to: each id
// costs about 21 characters of URL, and 300 keep the query well inside the
// REST URI limit (16,384 bytes) with room for the rest.
const MaxCampaigns = 300

// checkCampaign says why id is not a Campaign id, or nil.
func checkCampaign(id string) error {
	if !idPattern.MatchString(id) || !strings.HasPrefix(id, "701") {
		return fmt.Errorf("%q is not a Campaign id (15 or 18 characters starting with 701)", id)
	}
	return nil
}

// campaignIDs validates the campaign ids and writes them as a SOQL list.
func campaignIDs(lists []string) (string, error) {
	if len(lists) > MaxCampaigns {
		return "", fmt.Errorf("salesforce: Lists: %d campaigns given, at most %d can scope one sync", len(lists), MaxCampaigns)
	}
	q := make([]string, len(lists))
	for i, id := range lists {
		if err := checkCampaign(id); err != nil {
			return "", fmt.Errorf("salesforce: Lists: %w", err)
		}
		q[i] = quote(id)
	}
	return "(" + strings.Join(q, ", ") + ")", nil
}

package connectors

import (
	"net/mail"
	"slices"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// idnaProfile is IDNA2008 lookup processing with UTS #46 mapping, spelled out
// rather than taken from idna.Lookup, whose configuration "may change over
// time": a changed mapping would change normal forms and so subscriber
// hashes. Non-transitional: "ß" stays "ß" (xn--zca), as in browsers.
var idnaProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule())

// NormalizeEmail returns the one spelling of an email address under which
// the sync compares, hashes and sends it, and false when s is not an
// address.
//
// An address is what activities have accepted so far: a bare RFC 5322
// addr-spec as net/mail parses it (no display name, no angle brackets, no
// comment), with a dot in the domain, and surrounding white space allowed.
// An internationalised domain must also pass IDNA2008 lookup rules (so a
// malformed "xn--" label is not an address).
//
// The normal form is:
//   - trimmed of surrounding white space;
//   - in Unicode NFC, so that "é" typed as one code point or as "e" and a
//     combining accent is one address;
//   - lower-cased, local part included. Mailchimp's member id is the MD5
//     of the lower-cased address (our wire reference, 1.3/1.4; AddressHash,
//     which this does not replace), so two cases are one member there. The
//     reference says nothing on how NetSuite or Salesforce compare emails:
//     CRM.FindByEmail promises a case-insensitive match, which the NetSuite
//     connector gets by lower-casing both sides (SuiteQL compares strings
//     as Oracle does, case-sensitively) and the Salesforce one from SOQL,
//     which compares text case-insensitively. RFC 5321 lets a local part be
//     case-sensitive, but no system here treats it so;
//   - with an internationalised domain in its IDNA A-label (punycode) form,
//     "ann@Bücher.example" and "ann@xn--bcher-kva.example" both becoming
//     "ann@xn--bcher-kva.example". ASCII domains are only lower-cased.
//
// Why the A-label and not the U-label ("bücher"): it is ASCII, the form DNS
// and SMTP without SMTPUTF8 use, so it is the form every system can hold,
// including one that accepts ASCII addresses only (whether Mailchimp keeps
// a U-label as typed or refuses it is not in our reference: UNCONFIRMED),
// and its lower case and hash are plain ASCII operations. Lookup processing
// maps every Unicode spelling of a domain (any case, full-width letters,
// NFD) onto exactly one A-label, and leaves a valid A-label as it is, so the
// form is a fixed point; the U-label has many spellings, and going from an
// A-label to it needs the same table anyway. A CRM may still store either
// spelling, in either normal form: EmailSpellings lists them for queries.
// The local part of an internationalised address has no ASCII form and
// stays Unicode (NFC).
//
// NormalizeEmail is a pure function.
func NormalizeEmail(s string) (string, bool) {
	s = norm.NFC.String(strings.TrimSpace(s))
	if s == "" {
		return "", false
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Address != s {
		return "", false
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || !strings.Contains(s[at+1:], ".") {
		return "", false
	}
	// Lower-casing can leave a string that is no longer NFC; compose again.
	local := norm.NFC.String(strings.ToLower(s[:at]))
	domain := strings.ToLower(s[at+1:])
	if needsIDNA(domain) {
		if domain, err = idnaProfile.ToASCII(domain); err != nil {
			return "", false
		}
	}
	return local + "@" + domain, true
}

// needsIDNA reports whether a lower-cased domain has a non-ASCII character
// or an A-label. Other ASCII domains are left to net/mail's rules alone, as
// before, so that an address accepted until now stays accepted (lookup
// processing would refuse, say, an underscore).
func needsIDNA(domain string) bool {
	for i := 0; i < len(domain); i++ {
		if domain[i] >= 0x80 {
			return true
		}
	}
	return strings.HasPrefix(domain, "xn--") || strings.Contains(domain, ".xn--")
}

// EmailKey is what two addresses are matched by: their NormalizeEmail form,
// or, for a string that is not an address, the string trimmed and
// lower-cased, so that a malformed address still matches its own spelling
// as it did before there was a normal form.
func EmailKey(s string) string {
	if n, ok := NormalizeEmail(s); ok {
		return n
	}
	return strings.ToLower(strings.TrimSpace(s))
}

// EmailSpellings returns the lower-cased spellings under which a system that
// compares addresses as case-insensitive text may hold the address s: its
// normal form first, then with the domain's U-label, then both in NFD
// (decomposed), then the local part and the U-label each in the form the
// other is not (an address pasted together from two sources), without
// repeats. An ASCII address has one spelling; there are never more than
// six. A string that is not an address has one, its
// EmailKey; a blank one has none.
//
// A query for all of them finds a record whatever form its address was
// entered in (surrounding spaces and case are the query's own business);
// match what it returns back with EmailKey.
func EmailSpellings(s string) []string {
	n, ok := NormalizeEmail(s)
	if !ok {
		if k := EmailKey(s); k != "" {
			return []string{k}
		}
		return nil
	}
	at := strings.LastIndexByte(n, '@')
	local, domain := n[:at], n[at+1:]
	unicode := domain
	if needsIDNA(domain) {
		if u, err := idnaProfile.ToUnicode(domain); err == nil {
			unicode = u
		}
	}
	out := []string{n, local + "@" + unicode, norm.NFD.String(local) + "@" + domain, norm.NFD.String(local + "@" + unicode),
		local + "@" + norm.NFD.String(unicode), norm.NFD.String(local) + "@" + unicode}
	var uniq []string
	for _, sp := range out {
		if !slices.Contains(uniq, sp) {
			uniq = append(uniq, sp)
		}
	}
	return uniq
}

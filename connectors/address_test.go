package connectors_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/unicode/norm"

	"github.com/optoutsync/optoutsync/connectors"
)

func TestNormalizeEmail(t *testing.T) {
	nfd := norm.NFD.String
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "ann@example.com", "ann@example.com"},
		{"case and spaces", "  ANN@Example.COM \t\n", "ann@example.com"},
		{"plus and dots", "Ann.B+tag@mail.Example.co.uk", "ann.b+tag@mail.example.co.uk"},
		{"quote in local part", "O'Brien@example.com", "o'brien@example.com"},
		{"underscore domain stays accepted", "a@foo_bar.example.com", "a@foo_bar.example.com"},
		{"NFD local part", nfd("Zoë@example.com"), "zoë@example.com"},
		{"NFC local part", "ZOË@example.com", "zoë@example.com"},
		{"U-label domain", "ann@Bücher.example", "ann@xn--bcher-kva.example"},
		{"NFD U-label domain", nfd("ann@bücher.example"), "ann@xn--bcher-kva.example"},
		{"A-label domain", "ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"},
		{"A-label upper case", "ANN@XN--BCHER-KVA.EXAMPLE", "ann@xn--bcher-kva.example"},
		{"A-label below the top", "ann@mail.xn--bcher-kva.example", "ann@mail.xn--bcher-kva.example"},
		{"full-width letters", "ann@ｅｘａｍｐｌｅ.com", "ann@example.com"},
		{"sharp s is kept (non-transitional)", "ann@straße.example", "ann@xn--strae-oqa.example"},
		{"unicode both parts", "Δοκιμή@Παράδειγμα.Δοκιμή", "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := connectors.NormalizeEmail(tc.in)
			require.True(t, ok, "%q", tc.in)
			require.Equal(t, tc.want, got)
			again, ok := connectors.NormalizeEmail(got)
			require.True(t, ok)
			require.Equal(t, got, again, "the normal form is a fixed point")
			require.Equal(t, got, connectors.EmailKey(tc.in))
		})
	}
}

func TestNormalizeEmailRefuses(t *testing.T) {
	for _, in := range []string{
		"", "   ", "ann", "ann@", "@example.com", "ann@localhost", "ann@@example.com",
		"Ann <ann@example.com>", "<ann@example.com>", "ann@example.com (Ann)", `"ann b"@example.com`,
		"ann@example.com, bob@example.com", "ann @example.com", "ann@.example.com", "ann@example..com",
		"ann@xn--zz.example",  // not valid punycode
		"ann@-bücher.example", // leading hyphen in an IDN label
	} {
		got, ok := connectors.NormalizeEmail(in)
		require.False(t, ok, "%q gave %q", in, got)
		require.Empty(t, got)
	}
}

func TestNormalizeEmailSameAddress(t *testing.T) {
	// Every spelling of one person's address, as Mailchimp, NetSuite and
	// Salesforce may hold it, is one normal form.
	spellings := []string{
		"Zoë@Bücher.example",
		norm.NFD.String("zoë@bücher.example"),
		"ZOË@XN--BCHER-KVA.EXAMPLE ",
		" zoë@xn--bcher-kva.example",
		norm.NFD.String("Zoë") + "@xn--bcher-kva.example",
	}
	want, ok := connectors.NormalizeEmail(spellings[0])
	require.True(t, ok)
	for _, s := range spellings {
		got, ok := connectors.NormalizeEmail(s)
		require.True(t, ok, "%q", s)
		require.Equal(t, want, got, "%q", s)
	}
}

func TestEmailKey(t *testing.T) {
	// Not an address: still matched by its trimmed lower case.
	require.Equal(t, "ann@localhost", connectors.EmailKey(" ANN@localhost "))
	require.Equal(t, "", connectors.EmailKey("  "))
}

func TestEmailSpellings(t *testing.T) {
	require.Equal(t, []string{"ann@example.com"}, connectors.EmailSpellings(" ANN@Example.com "))
	require.Equal(t, []string{"ann@xn--bcher-kva.example", "ann@bücher.example", norm.NFD.String("ann@bücher.example")},
		connectors.EmailSpellings("ANN@XN--BCHER-KVA.EXAMPLE"))
	require.Equal(t, []string{"zoë@example.com", norm.NFD.String("zoë@example.com")},
		connectors.EmailSpellings(norm.NFD.String("Zoë@Example.com")))
	all := connectors.EmailSpellings("Zoë@bücher.example")
	require.Equal(t, []string{
		"zoë@xn--bcher-kva.example",
		"zoë@bücher.example",
		norm.NFD.String("zoë") + "@xn--bcher-kva.example",
		norm.NFD.String("zoë@bücher.example"),
		"zoë@" + norm.NFD.String("bücher.example"),
		norm.NFD.String("zoë") + "@bücher.example",
	}, all)
	for _, s := range all {
		require.Equal(t, all[0], connectors.EmailKey(s), "every spelling matches back")
	}
	require.Equal(t, []string{"ann@localhost"}, connectors.EmailSpellings("ANN@localhost"))
	require.Nil(t, connectors.EmailSpellings(" "))
}

func TestAddressHashUnchanged(t *testing.T) {
	// Mailchimp's own example member: md5("urist.mcvankab@freddiesjokes.com").
	require.Equal(t, "62eeb292278cc15f5817cb78f7790b08", connectors.AddressHash(" Urist.McVankab@FreddiesJokes.com "))
}

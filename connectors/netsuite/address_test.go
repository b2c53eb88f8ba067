package netsuite_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/unicode/norm"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// TestFindByEmailMatchesEverySpelling: the CRM holds addresses as people
// typed them; the caller asks with another spelling of the same address.
func TestFindByEmailMatchesEverySpelling(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	c := tbaClient(t, s)
	ann := s.AddCustomer(netsuitetest.Entity{Email: "ANN@Example.com ", SubscriptionStatus: "2"})
	ann2 := s.AddContact(netsuitetest.Entity{Email: "  ann@example.COM"})
	zoe := s.AddCustomer(netsuitetest.Entity{Email: norm.NFD.String("Zoë@example.com")})
	bob := s.AddContact(netsuitetest.Entity{Email: "bob@Bücher.example"})
	carl := s.AddCustomer(netsuitetest.Entity{Email: "carl@XN--BCHER-KVA.example"})
	dora := s.AddCustomer(netsuitetest.Entity{Email: norm.NFD.String("dörte@bücher.example")})
	s.AddCustomer(netsuitetest.Entity{Email: "annie@example.com"})
	s.AddCustomer(netsuitetest.Entity{Email: "bob@bucher.example"})

	asked := []string{"ann@example.com", "ZOË@example.com", "bob@xn--bcher-kva.example", "carl@bücher.example", "Dörte@XN--BCHER-KVA.example", "nobody@example.com"}
	recs, err := c.FindByEmail(t.Context(), both, standard, asked)
	require.NoError(t, err)
	got := map[connectors.RecordRef]string{}
	for _, r := range recs {
		_, dup := got[r.Ref]
		require.False(t, dup, "returned twice: %s", r.Ref)
		got[r.Ref] = r.Email
	}
	require.Equal(t, map[connectors.RecordRef]string{
		ref("customer", ann):  "ann@example.com",
		ref("contact", ann2):  "ann@example.com",
		ref("customer", zoe):  "ZOË@example.com",
		ref("contact", bob):   "bob@xn--bcher-kva.example",
		ref("customer", carl): "carl@bücher.example",
		ref("customer", dora): "Dörte@XN--BCHER-KVA.example",
	}, got, "each record carries the address as asked for")
	for _, r := range recs {
		if r.Ref == ref("customer", ann) {
			require.True(t, r.OptedOut)
		}
	}

	// Two spellings of one address in one call: one lookup, the first
	// spelling given.
	recs, err = c.FindByEmail(t.Context(), []string{"customer"}, standard, []string{" ANN@EXAMPLE.COM", "ann@example.com"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, " ANN@EXAMPLE.COM", recs[0].Email)

	// Something that is no address still finds its own spelling, as before.
	odd := s.AddCustomer(netsuitetest.Entity{Email: "Odd@Localhost"})
	recs, err = c.FindByEmail(t.Context(), []string{"customer"}, standard, []string{"odd@localhost", "  "})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, ref("customer", odd), recs[0].Ref)
}

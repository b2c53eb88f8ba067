package salesforce_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/unicode/norm"

	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

// TestFindByEmailMatchesEverySpelling: the org holds addresses as people
// typed them; the caller asks with another spelling of the same address.
func TestFindByEmailMatchesEverySpelling(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	ann := srv.AddContact(salesforcetest.Person{LastName: "Ann", Email: "ANN@Example.com "})
	zoe := srv.AddLead(salesforcetest.Person{LastName: "Zoe", Email: norm.NFD.String("Zoë@example.com"), OptedOut: true})
	bob := srv.AddContact(salesforcetest.Person{LastName: "Bob", Email: "bob@Bücher.example"})
	carl := srv.AddPersonAccount(salesforcetest.Person{LastName: "Carl", Email: "carl@XN--BCHER-KVA.example"})
	srv.AddContact(salesforcetest.Person{LastName: "Annie", Email: "annie@example.com"})
	srv.AddContact(salesforcetest.Person{LastName: "Bob2", Email: "bob@bucher.example"})
	c := clientFor(t, srv)

	rec, _ := srv.Record(ann)
	require.Equal(t, "ANN@Example.com", rec["Email"], "Salesforce keeps no white space around an email")
	require.NoError(t, srv.Update(bob, map[string]any{"Email": "\tbob@Bücher.example  "}))
	rec, _ = srv.Record(bob)
	require.Equal(t, "bob@Bücher.example", rec["Email"], "nor on an update")

	asked := []string{"ann@example.com", "ZOË@example.com", "bob@xn--bcher-kva.example", "carl@bücher.example", "nobody@example.com"}
	recs, err := c.FindByEmail(t.Context(), []string{"Contact", "Lead", "Account"}, standard, asked)
	require.NoError(t, err)
	got := map[string]string{}
	for _, r := range recs {
		got[r.Ref.String()] = r.Email
		if r.Ref.ID == zoe {
			require.True(t, r.OptedOut)
		}
	}
	require.Equal(t, map[string]string{
		"Contact/" + ann:  "ann@example.com",
		"Lead/" + zoe:     "ZOË@example.com",
		"Contact/" + bob:  "bob@xn--bcher-kva.example",
		"Account/" + carl: "carl@bücher.example",
	}, got, "each record carries the address as asked for")
}

// TestFindByEmailSplitsALongInList: 200 internationalised addresses have
// 800 spellings, too many for one URL; they go in several queries and all
// are found.
func TestFindByEmailSplitsALongInList(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	var asked []string
	want := map[string]bool{}
	for i := range 200 {
		e := fmt.Sprintf("zoë.%03d.lönger-than-most@bücher-und-zeitschriften.example", i)
		want["Contact/"+srv.AddContact(salesforcetest.Person{LastName: "Z", Email: norm.NFD.String(e)})] = true
		asked = append(asked, e)
	}
	c := clientFor(t, srv)
	srv.Middleware.ResetCounts()
	recs, err := c.FindByEmail(t.Context(), []string{"Contact"}, standard, asked)
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Ref.String()] = true
	}
	require.Equal(t, want, got)
	require.Greater(t, srv.Middleware.Counts()["GET /services/data/{v}/query"], 1, "one URL could not hold them")

	// Ordinary addresses still take one query.
	asked = asked[:0]
	for i := range 200 {
		asked = append(asked, fmt.Sprintf("person.%03d@example.com", i))
	}
	srv.Middleware.ResetCounts()
	_, err = c.FindByEmail(t.Context(), []string{"Contact"}, standard, asked)
	require.NoError(t, err)
	require.Equal(t, 1, srv.Middleware.Counts()["GET /services/data/{v}/query"])
}

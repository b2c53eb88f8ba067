package mailchimp_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// without drops a top-level key of the answer.
func without(key string) func([]byte) []byte {
	return func(b []byte) []byte {
		var doc map[string]json.RawMessage
		if json.Unmarshal(b, &doc) != nil {
			return b
		}
		delete(doc, key)
		out, _ := json.Marshal(doc)
		return out
	}
}

func rewritingClient(t *testing.T, s *mailchimptest.Server, edit func([]byte) []byte) *mailchimp.Client {
	t.Helper()
	c, err := mailchimp.New(mailchimp.Options{
		APIKey: s.APIKey, BaseURL: s.URL,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
		// Every GET of an audience's members collection answers what edit
		// makes of the emulator's answer.
		Transport: connectorstest.Rewriter{Match: func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/members")
		}, Edit: edit},
	})
	require.NoError(t, err)
	return c
}

// readChanges pages ChangedMembers to its end or its first error.
func readChanges(t *testing.T, c *mailchimp.Client, req connectors.ChangesRequest) (int, error) {
	t.Helper()
	read := 0
	for range 100 {
		page, err := c.ChangedMembers(t.Context(), req)
		if err != nil {
			return read, err
		}
		read += len(page.Members)
		if page.Next == "" {
			return read, nil
		}
		req.Cursor = page.Next
	}
	t.Fatal("paging does not end")
	return read, nil
}

// TestMembersPageThatIsNotACollectionIsAnError: a 200 answer of the
// unsubscribed read that is not a members collection (no members array,
// no total_items) fails the read, retryably, instead of ending it as if no
// member were left, which would move the watermark past the unsubscribes
// it did not return.
func TestMembersPageThatIsNotACollectionIsAnError(t *testing.T) {
	for name, edit := range map[string]func([]byte) []byte{
		"null":             connectorstest.Replace(`null`),
		"empty object":     connectorstest.Replace(`{}`),
		"problem document": connectorstest.Replace(`{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"Internal Server Error","status":500,"detail":"An unexpected internal error has occurred.","instance":"x"}`),
		"no members":       without("members"),
		"null members":     connectorstest.Replace(`{"members":null,"list_id":"L1","total_items":3}`),
		"no total_items":   without("total_items"),
	} {
		t.Run(name, func(t *testing.T) {
			s, clk, _ := newEnv(t, mailchimptest.Options{})
			for i := range 3 {
				require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("u%d@example.com", i), Status: "unsubscribed", LastChanged: t0}))
			}
			clk.Set(t0.Add(time.Hour))
			c := rewritingClient(t, s, edit)
			read, err := readChanges(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute)})
			require.Error(t, err, "read %d of 3 and ended", read)
			require.False(t, connectors.Permanent(err))
			require.ErrorContains(t, err, "/lists/L1/members")
			require.NotContains(t, err.Error(), "@")
		})
	}
}

// TestMembersPageWithoutTotalInABulkSecondIsAnError: inside a second of
// more than 1000 members, total_items is what tells a read of the whole
// second from its first 1000; an answer without it must not pass for the
// whole second (the rest would be skipped).
func TestMembersPageWithoutTotalInABulkSecondIsAnError(t *testing.T) {
	s, clk, _ := newEnv(t, mailchimptest.Options{})
	bulk(t, s, 1500, t0, optSame)
	clk.Set(t0.Add(time.Hour))
	c := rewritingClient(t, s, without("total_items"))
	read, err := readChanges(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute)})
	require.Error(t, err, "read %d of 1500 and ended", read)
	require.False(t, connectors.Permanent(err))
}

// TestEmptyMembersPageIsNoMembers: an empty collection comes as
// "members": [] and ends the read without an error.
func TestEmptyMembersPageIsNoMembers(t *testing.T) {
	s, clk, _ := newEnv(t, mailchimptest.Options{})
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "u@example.com", Status: "unsubscribed", LastChanged: t0}))
	clk.Set(t0.Add(time.Hour))
	c := rewritingClient(t, s, connectorstest.Replace(`{"members":[],"list_id":"L1","total_items":0}`))
	read, err := readChanges(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute)})
	require.NoError(t, err)
	require.Zero(t, read)
}

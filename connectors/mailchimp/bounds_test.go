package mailchimp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
)

// TestAPageWithMoreMembersThanAskedIsRefused: an answer the cursor cannot
// account for (more members than the count asked) fails the read, naming
// the endpoint, instead of being taken.
func TestAPageWithMoreMembersThanAskedIsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ms []string
		for i := range 50 {
			ms = append(ms, fmt.Sprintf(`{"id":"%032x","email_address":"m%d@example.com","status":"unsubscribed","last_changed":"2026-11-01T00:00:%02d+00:00","timestamp_opt":""}`, i, i, i))
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"members":[%s],"total_items":50}`, strings.Join(ms, ","))
	}))
	defer srv.Close()
	c, err := mailchimp.New(mailchimp.Options{APIKey: "0123456789abcdef-us6", BaseURL: srv.URL})
	require.NoError(t, err)
	_, err = c.ChangedMembers(t.Context(), connectors.ChangesRequest{Audience: "l1", Status: connectors.StatusUnsubscribed, PageSize: 5})
	require.ErrorContains(t, err, "members answered where at most 6 were asked")
	require.ErrorContains(t, err, "GET /lists/l1/members")
}

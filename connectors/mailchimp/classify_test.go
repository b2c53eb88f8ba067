package mailchimp

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
)

// TestClassify covers answers the emulator does not produce: a 403 or 429
// without a JSON body, a Retry-After header, a plain-text 5xx.
func TestClassify(t *testing.T) {
	answer := func(status int, contentType, body string, hdr ...string) *http.Response {
		rec := httptest.NewRecorder()
		if contentType != "" {
			rec.Header().Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			rec.Header().Set(hdr[i], hdr[i+1])
		}
		rec.WriteHeader(status)
		_, _ = rec.WriteString(body)
		return rec.Result()
	}
	problem := func(status int, title, detail string) string {
		return `{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"` + title + `","status":` +
			strconv.Itoa(status) + `,"detail":"` + detail + `","instance":"x"}`
	}
	const pj = "application/problem+json; charset=utf-8"
	for _, tc := range []struct {
		resp  *http.Response
		kind  error
		code  string
		after time.Duration
	}{
		{answer(403, "text/html", "<html>blocked</html>"), connectors.ErrRateLimited, "TooManyRequests", 0},
		{answer(403, "", ""), connectors.ErrRateLimited, "TooManyRequests", 0},
		{answer(403, pj, problem(403, "User Disabled", "This account has been disabled.")), connectors.ErrForbidden, "User Disabled", 0},
		{answer(429, "", ""), connectors.ErrRateLimited, "Too Many Requests", 0},
		{answer(429, pj, problem(429, "TooManyRequests", "You have exceeded the limit of 10 simultaneous connections."), "Retry-After", "7"), connectors.ErrRateLimited, "TooManyRequests", 7 * time.Second},
		{answer(401, pj, problem(401, "API Key Invalid", "Your API key may be invalid.")), connectors.ErrUnauthorized, "API Key Invalid", 0},
		{answer(404, pj, problem(404, "Resource Not Found", "The requested resource could not be found.")), connectors.ErrNotFound, "Resource Not Found", 0},
		{answer(400, pj, problem(400, "Member In Compliance State", "ann@example.com is in a compliance state")), connectors.ErrCompliance, "Member In Compliance State", 0},
		{answer(400, pj, problem(400, "Forgotten Email Not Subscribed", "ann@example.com was permanently deleted")), connectors.ErrCompliance, "Forgotten Email Not Subscribed", 0},
		{answer(400, pj, problem(400, "Invalid Resource", "ann@example.com looks fake or invalid")), connectors.ErrInvalid, "Invalid Resource", 0},
		{answer(502, "text/html", "bad gateway"), connectors.ErrServer, "Bad Gateway", 0},
		{answer(500, pj, problem(500, "InternalServerError", "oops")), connectors.ErrServer, "InternalServerError", 0},
	} {
		err := classify(tc.resp)
		require.ErrorIs(t, err, tc.kind)
		ae := err.(*connectors.APIError)
		require.Equal(t, tc.code, ae.Code)
		require.Equal(t, tc.after, ae.RetryAfter)
		require.NotContains(t, err.Error(), "ann@example.com")
	}
}

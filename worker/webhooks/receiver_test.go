package webhooks_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/worker/webhooks"
)

const token = "0123456789abcdef0123456789abcdef"

// When Temporal cannot be reached, a genuine delivery is answered 503 (the
// platform retries it), and nothing the receiver logs holds the address
// or the token.
func TestAnUnreachableTemporalAnswers503AndLogsNoAddress(t *testing.T) {
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1"})
	require.NoError(t, err)
	defer c.Close()
	mc, err := mailchimp.New(mailchimp.Options{APIKey: "0123456789abcdef-us6",
		Webhook: &mailchimp.WebhookOptions{Audience: "aud", Token: token}})
	require.NoError(t, err)
	var logs bytes.Buffer
	r := webhooks.New(webhooks.Options{
		Client: c, Ledger: ledgertest.Open(t, ledger.SQLite), SignalTimeout: time.Second,
		Endpoints: []webhooks.Endpoint{{Integration: "acme", Hooks: mc}},
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	p, ok := r.Path("acme")
	require.True(t, ok)
	require.Equal(t, webhooks.PathPrefix+"acme/"+token, p)

	serve := func(method, path, ctype, body string) int {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	v := url.Values{"type": {"unsubscribe"}, "fired_at": {"2026-12-01 10:00:00"}, "data[list_id]": {"aud"}, "data[email]": {"secret.person@example.com"}}
	form := "application/x-www-form-urlencoded"
	require.Equal(t, http.StatusOK, serve(http.MethodGet, p, "", ""), "the validator's GET")
	require.Equal(t, http.StatusServiceUnavailable, serve(http.MethodPost, p, form, v.Encode()))
	require.Equal(t, http.StatusNotFound, serve(http.MethodPost, webhooks.PathPrefix+"acme/wrong", form, v.Encode()))
	require.Equal(t, http.StatusNotFound, serve(http.MethodGet, webhooks.PathPrefix+"acme/wrong", "", ""))
	require.Equal(t, http.StatusMethodNotAllowed, serve(http.MethodPut, p, form, v.Encode()))
	v.Set("data[list_id]", "other")
	require.Equal(t, http.StatusBadRequest, serve(http.MethodPost, p, form, v.Encode()))
	require.NotContains(t, logs.String(), "secret.person")
	require.NotContains(t, logs.String(), token)
	require.Contains(t, logs.String(), "not taken")
	require.Contains(t, logs.String(), "audience")
}

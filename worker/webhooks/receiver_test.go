package webhooks_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
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

// The signing secret Mailchimp answers when the receiver creates the
// webhook is kept in the ledger, sealed; a receiver started later (a
// restart, another worker) loads it and refuses a badly signed delivery.
func TestTheSigningSecretAnsweredOnCreationIsKeptAndUsedAfterARestart(t *testing.T) {
	mcs := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mcs.Close)
	mcs.AddList("aud", "Audience")
	led := ledgertest.Open(t, ledger.SQLite)
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1"})
	require.NoError(t, err)
	defer c.Close()
	newReceiver := func() (*webhooks.Receiver, *httptest.Server) {
		mc, err := mailchimp.New(mailchimp.Options{APIKey: mcs.APIKey, BaseURL: mcs.URL,
			Webhook: &mailchimp.WebhookOptions{Audience: "aud", Token: token}})
		require.NoError(t, err)
		r := webhooks.New(webhooks.Options{Client: c, Ledger: led, Secrets: led, SignalTimeout: time.Second,
			Endpoints: []webhooks.Endpoint{{Integration: "acme", Hooks: mc}}})
		hs := httptest.NewServer(r)
		t.Cleanup(hs.Close)
		return r, hs
	}
	first, hs := newReceiver()
	require.NoError(t, first.LoadSecrets(t.Context()))
	require.NoError(t, first.Register(t.Context(), hs.URL))
	hooks := mcs.Webhooks("aud")
	require.Len(t, hooks, 1)
	secret := mcs.WebhookSecret("aud", hooks[0].ID)
	kept, err := led.WebhookSecret(t.Context(), "acme")
	require.NoError(t, err)
	require.Equal(t, secret, kept)

	second, _ := newReceiver()
	require.NoError(t, second.LoadSecrets(t.Context()))
	require.NoError(t, second.Register(t.Context(), hs.URL), "the webhook exists: updated, no new secret")
	kept, err = led.WebhookSecret(t.Context(), "acme")
	require.NoError(t, err)
	require.Equal(t, secret, kept, "the kept secret stays")
	body := url.Values{"type": {"unsubscribe"}, "fired_at": {"2026-12-01 10:00:00"}, "data[list_id]": {"aud"}, "data[email]": {"a@example.com"}}.Encode()
	p, _ := second.Path("acme")
	post := func(secret string) int {
		req := httptest.NewRequest(http.MethodPost, p, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		now := time.Now().Unix()
		req.Header.Set(mailchimp.SignatureHeader, "t="+strconv.FormatInt(now, 10)+",v1="+mailchimp.Sign(secret, now, []byte(body)))
		w := httptest.NewRecorder()
		second.ServeHTTP(w, req)
		return w.Code
	}
	require.Equal(t, http.StatusBadRequest, post("forged"), "a signature under another secret is refused")
	require.Equal(t, http.StatusServiceUnavailable, post(secret), "a genuine one gets to Temporal (unreachable here)")
}

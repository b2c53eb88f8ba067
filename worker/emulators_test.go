package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

// TestPrintedEmulatorCredentialsWork starts the demo emulators as
// -emulators does and signs in to each with what it prints.
func TestPrintedEmulatorCredentialsWork(t *testing.T) {
	e := NewEmulators()
	defer e.Close()
	require.NoError(t, e.Resolve(DemoConfig()))
	var out strings.Builder
	printEmulators(&out, e)
	text := out.String()
	mc := e.Get("mailchimp").(*mailchimptest.Server)
	ns := e.Get("netsuite").(*netsuitetest.Server)
	sf := e.Get("salesforce").(*salesforcetest.DemoServer)
	for _, want := range []string{mc.URL, mc.APIKey, ns.URL, ns.TokenSecret, sf.URL, sf.ClientSecret, sf.CampaignID} {
		require.Contains(t, text, want)
	}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, mc.URL+"/lists/"+mailchimptest.DemoNetSuiteAudience+"/members?status=unsubscribed", nil)
	require.NoError(t, err)
	req.SetBasicAuth("any", mc.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	nc, err := netsuite.New(netsuite.Options{AccountID: ns.AccountID, BaseURL: ns.URL, TBA: netsuite.TBA{
		ConsumerKey: ns.ConsumerKey, ConsumerSecret: ns.ConsumerSecret, TokenID: ns.TokenID, TokenSecret: ns.TokenSecret,
	}})
	require.NoError(t, err)
	require.NoError(t, nc.Ping(t.Context()))

	resp, err = http.PostForm(sf.URL+"/services/oauth2/token", map[string][]string{
		"grant_type": {"client_credentials"}, "client_id": {sf.ClientID}, "client_secret": {sf.ClientSecret},
	})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/netsuite"
)

// TestPrintedEmulatorCredentialsWork starts the demo emulators as
// -emulators does and signs in to each with what it prints.
func TestPrintedEmulatorCredentialsWork(t *testing.T) {
	cfg := DemoConfig()
	e := StartEmulators(cfg)
	defer e.Close()
	require.NoError(t, e.Resolve(cfg))
	var out strings.Builder
	printEmulators(&out, e)
	text := out.String()
	for _, want := range []string{e.Mailchimp.URL, e.Mailchimp.APIKey, e.NetSuite.URL, e.NetSuite.TokenSecret, e.Salesforce.URL, e.Salesforce.ClientSecret, e.CampaignID} {
		require.Contains(t, text, want)
	}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.Mailchimp.URL+"/lists/"+demoNetSuiteAudience+"/members?status=unsubscribed", nil)
	require.NoError(t, err)
	req.SetBasicAuth("any", e.Mailchimp.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	ns, err := netsuite.New(netsuite.Config{AccountID: e.NetSuite.AccountID, BaseURL: e.NetSuite.URL, TBA: netsuite.TBA{
		ConsumerKey: e.NetSuite.ConsumerKey, ConsumerSecret: e.NetSuite.ConsumerSecret, TokenID: e.NetSuite.TokenID, TokenSecret: e.NetSuite.TokenSecret,
	}})
	require.NoError(t, err)
	require.NoError(t, ns.Ping(t.Context()))

	resp, err = http.PostForm(e.Salesforce.URL+"/services/oauth2/token", map[string][]string{
		"grant_type": {"client_credentials"}, "client_id": {e.Salesforce.ClientID}, "client_secret": {e.Salesforce.ClientSecret},
	})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

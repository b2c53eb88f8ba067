package bullhorn_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
)

type secrets struct {
	vals  map[string]string
	store bullhorn.TokenStore
}

func (s secrets) Secret(key string, ref connectors.SecretRef) (string, error) {
	v, ok := s.vals[ref.Env]
	if !ok {
		return "", &connectors.FieldError{Key: key + "Env", Msg: "not set"}
	}
	return v, nil
}

// providing wraps secrets as the worker's per-integration Secrets do.
type providing struct {
	secrets
	id string
}

func (p providing) TokenStore() bullhorn.TokenStore { return p.store }
func (p providing) Integration() string             { return p.id }

func TestConfigValidate(t *testing.T) {
	c := &bullhorn.Config{ClientIDEnv: "A", ClientSecretEnv: "B", UsernameEnv: "C", PasswordEnv: "D"}
	require.NoError(t, c.Validate(false))
	require.Equal(t, []string{"Candidate", "ClientContact"}, c.RecordTypes)
	require.Equal(t, []string{"email"}, c.EmailFields)
	require.Equal(t, 10, c.MaxInFlight)
	require.Equal(t, 1500, c.RequestsPerMinute)

	bad := &bullhorn.Config{BaseURL: "http://x", CRMScope: connectors.CRMScope{RecordTypes: []string{"Contact"}, Lists: []string{"abc"},
		OptOut: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "massMailOptOut"}}, EmailFields: []string{"email4"},
		TrueText: "No", MaxInFlight: 51, RequestsPerMinute: 2000}
	var keys []string
	for _, fe := range connectors.FieldErrors(bad.Validate(false)) {
		keys = append(keys, fe.Key)
	}
	require.ElementsMatch(t, []string{"baseURL", "recordTypes[0]", "lists[0]", "optOut.field", "emailFields[0]", "trueText",
		"maxInFlight", "requestsPerMinute", "clientIdEnv", "clientSecretEnv", "usernameEnv", "passwordEnv"}, keys)
}

// TestOpenUsesTheProvidedTokenStore: the worker's Secrets hand the
// connector a durable store and the integration's name.
func TestOpenUsesTheProvidedTokenStore(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{})
	t.Cleanup(s.Close)
	c := &bullhorn.Config{BaseURL: s.LoginInfoURL(), ClientIDEnv: "A", ClientSecretEnv: "B", UsernameEnv: "C", PasswordEnv: "D"}
	require.NoError(t, c.Validate(true))
	store := bullhorn.NewMemoryTokenStore()
	sec := providing{secrets: secrets{vals: map[string]string{"A": s.ClientID, "B": s.ClientSecret, "C": s.Username, "D": s.Password}, store: store}, id: "bh-prod"}
	crm, err := c.Open(sec, nil)
	require.NoError(t, err)
	require.NoError(t, crm.(connectors.Pinger).Ping(t.Context()))
	rt, err := store.RefreshToken(context.Background(), "bh-prod")
	require.NoError(t, err)
	require.NotEmpty(t, rt)

	_, err = c.Open(secrets{vals: map[string]string{"A": "x"}}, nil)
	var fe *connectors.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "clientSecretEnv", fe.Key)
}

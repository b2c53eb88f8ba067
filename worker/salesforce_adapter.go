package main

import (
	"log/slog"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/salesforce"
)

// newSalesforce builds the Salesforce connector. Tokens come from the My
// Domain URL (instanceURL), which the client credentials flow requires;
// loginURL overrides it for the JWT bearer flow (login or test.salesforce.com).
func newSalesforce(s salesforceSettings, log *slog.Logger) (connectors.CRM, error) {
	cfg := salesforce.Config{
		LoginURL:     firstNonEmpty(s.BaseURL, s.LoginURL, s.InstanceURL),
		ClientID:     s.ClientID,
		ClientSecret: s.ClientSecret,
		Username:     s.Username,
		Logger:       log,
	}
	if s.PrivateKey != "" {
		cfg.PrivateKeyPEM = []byte(s.PrivateKey)
	}
	if s.APIVersion != "" {
		cfg.APIVersion = "v" + strings.TrimPrefix(s.APIVersion, "v")
	}
	if strings.Contains(s.LoginURL, "test.salesforce.com") {
		// Sandboxes take the test audience in the JWT.
		cfg.Audience = "https://test.salesforce.com"
	}
	return salesforce.New(cfg)
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
)

// LookupEnv reads an environment variable; os.LookupEnv in production, a
// map in tests and in dev mode (where the emulators' credentials live).
type LookupEnv func(name string) (string, bool)

// secrets reads the credentials an integration names. Every error names
// the integration and the field, never the value.
type secrets struct {
	env  LookupEnv
	errs []error
	id   string
}

// get returns the credential from its environment variable or file; side
// is "marketing" or "crm" for the error message.
func (s *secrets) get(side string, p secretPair) string {
	fail := func(field, format string, args ...any) string {
		s.errs = append(s.errs, fmt.Errorf("integration %q: %s.%s: %s", s.id, side, field, fmt.Sprintf(format, args...)))
		return ""
	}
	switch {
	case p.env != "":
		v, ok := s.env(p.env)
		if !ok || strings.TrimSpace(v) == "" {
			return fail(p.name+"Env", "environment variable %s is not set", p.env)
		}
		return strings.TrimSpace(v)
	case p.file != "":
		b, err := os.ReadFile(p.file)
		if err != nil {
			// The path is configuration, not a secret; the error text from
			// os names only the path.
			return fail(p.name+"File", "%v", err)
		}
		if strings.TrimSpace(string(b)) == "" {
			return fail(p.name+"File", "%s is empty", p.file)
		}
		// A private key keeps its inner newlines; trailing space never matters.
		return strings.TrimSpace(string(b))
	}
	return ""
}

// Pinger is implemented by connectors that can check their credentials.
type Pinger interface {
	Ping(ctx context.Context) error
}

// BuildRegistry reads every integration's credentials and builds its
// connectors. A missing credential is an error (the worker does not
// start); a rejected one is found only by a run (or by CheckCredentials),
// which then fails that integration alone.
func BuildRegistry(cfg *Config, env LookupEnv, log *slog.Logger) (activities.MapRegistry, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := activities.MapRegistry{}
	var errs []error
	for i := range cfg.Integrations {
		in := &cfg.Integrations[i]
		s := &secrets{env: env, id: in.ID}
		l := log.With("integration", in.ID)
		mk, err := newMarketing(in, s, l)
		if err != nil {
			errs = append(errs, fmt.Errorf("integration %q: marketing: %w", in.ID, err))
		}
		crm, err := newCRM(in, s, l)
		if err != nil {
			errs = append(errs, fmt.Errorf("integration %q: crm: %w", in.ID, err))
		}
		errs = append(errs, s.errs...)
		if mk != nil && crm != nil && len(s.errs) == 0 {
			reg[in.ID] = &activities.Integration{Settings: in.Settings(), Marketing: mk, CRM: crm}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return reg, nil
}

// newMarketing builds the marketing connector of in.
func newMarketing(in *Integration, s *secrets, log *slog.Logger) (connectors.Marketing, error) {
	m := in.Marketing
	switch m.Kind {
	case "mailchimp":
		cfg := mailchimp.Config{DC: m.DC, BaseURL: m.BaseURL, Logger: log.With("system", "mailchimp")}
		switch {
		case m.APIKeyEnv != "" || m.APIKeyFile != "":
			cfg.APIKey = s.get("marketing", secretPair{"apiKey", m.APIKeyEnv, m.APIKeyFile})
		default:
			cfg.OAuthToken = s.get("marketing", secretPair{"oauthToken", m.OAuthTokenEnv, m.OAuthTokenFile})
		}
		if cfg.APIKey == "" && cfg.OAuthToken == "" {
			return nil, nil // the missing secret is already reported
		}
		return mailchimp.New(cfg)
	}
	return nil, fmt.Errorf("kind: unknown kind %q", m.Kind)
}

// newCRM builds the CRM connector of in.
func newCRM(in *Integration, s *secrets, log *slog.Logger) (connectors.CRM, error) {
	c := in.CRM
	before := len(s.errs)
	switch c.Kind {
	case "netsuite":
		cfg := netsuite.Config{
			AccountID: c.AccountID, BaseURL: c.BaseURL, Concurrency: c.Concurrency,
			Logger: log.With("system", "netsuite"),
		}
		if c.TimeZone != "" {
			loc, err := time.LoadLocation(c.TimeZone)
			if err != nil {
				return nil, fmt.Errorf("timeZone: %w", err)
			}
			cfg.TimeZone = loc
		}
		if c.ConsumerKeyEnv != "" || c.ConsumerKeyFile != "" {
			cfg.TBA = netsuite.TBA{
				ConsumerKey:    s.get("crm", c.tba()[0]),
				ConsumerSecret: s.get("crm", c.tba()[1]),
				TokenID:        s.get("crm", c.tba()[2]),
				TokenSecret:    s.get("crm", c.tba()[3]),
			}
		} else {
			cfg.M2M = netsuite.M2M{
				ClientID:      s.get("crm", c.clientID()),
				CertificateID: c.CertificateID,
				PrivateKey:    s.get("crm", c.privateKey()),
			}
		}
		if len(s.errs) > before {
			return nil, nil
		}
		return netsuite.New(cfg)
	case "salesforce":
		cfg := salesforceSettings{
			InstanceURL: c.InstanceURL, LoginURL: c.LoginURL, APIVersion: c.APIVersion, BaseURL: c.BaseURL,
			Username: c.Username, ClientID: s.get("crm", c.clientID()),
		}
		if c.ClientSecretEnv != "" || c.ClientSecretFile != "" {
			cfg.ClientSecret = s.get("crm", c.clientSecret())
		} else {
			cfg.PrivateKey = s.get("crm", c.privateKey())
		}
		if len(s.errs) > before {
			return nil, nil
		}
		return newSalesforce(cfg, log.With("system", "salesforce"))
	}
	return nil, fmt.Errorf("kind: unknown kind %q", c.Kind)
}

// salesforceSettings is what the worker knows of a Salesforce org, with
// its credentials read.
type salesforceSettings struct {
	InstanceURL, LoginURL, APIVersion, BaseURL string
	ClientID, ClientSecret                     string
	Username, PrivateKey                       string
}

// CheckCredentials pings every integration's connectors that can be
// pinged and logs a warning for each that fails. It never fails the
// worker: a rejected credential fails that integration's runs, with a
// non-retryable error, and leaves the others running.
func CheckCredentials(ctx context.Context, reg activities.MapRegistry, log *slog.Logger) {
	for _, id := range sortedKeys(reg) {
		in := reg[id]
		for side, c := range map[string]any{"marketing": in.Marketing, "crm": in.CRM} {
			p, ok := c.(Pinger)
			if !ok {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err := p.Ping(pctx)
			cancel()
			if err != nil {
				log.Warn("credential check failed; this integration's runs will fail until it is fixed",
					"integration", id, "side", side, "kind", kindOf(in, side), "error", err)
			}
		}
	}
}

func kindOf(in *activities.Integration, side string) string {
	if side == "marketing" {
		return in.Settings.MarketingKind
	}
	return in.Settings.CRMKind
}

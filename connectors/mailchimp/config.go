package mailchimp

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
)

// Config is the "marketing:" block of an integration whose kind is
// mailchimp: the audience and where its credential is. It names the
// credential (an environment variable or a file) and never holds it.
type Config struct {
	// AudienceID is the audience (list) id, as in the audience's settings.
	AudienceID string `yaml:"audience"`
	// APIKeyEnv / APIKeyFile name where the API key ("<key>-<dc>") is.
	APIKeyEnv  string `yaml:"apiKeyEnv"`
	APIKeyFile string `yaml:"apiKeyFile"`
	// OAuthTokenEnv / OAuthTokenFile name where an OAuth access token is;
	// DC is then required (tokens carry no data center).
	OAuthTokenEnv  string `yaml:"oauthTokenEnv"`
	OAuthTokenFile string `yaml:"oauthTokenFile"`
	DC             string `yaml:"dc"`
	// BaseURL overrides the API address; "emulator" (dev mode only) is the
	// in-process emulator.
	BaseURL string `yaml:"baseURL"`
	// MaxInFlight caps this worker's requests in flight to the account;
	// default 10, Mailchimp's limit. Workers sharing an account split it.
	MaxInFlight int `yaml:"maxInFlight"`
	// WebhookTokenEnv / WebhookTokenFile name where the secret path token
	// of the integration's webhook endpoint is; given, the worker's
	// webhook receiver accepts the audience's deliveries for it.
	WebhookTokenEnv  string `yaml:"webhookTokenEnv"`
	WebhookTokenFile string `yaml:"webhookTokenFile"`
	// WebhookSigningSecretEnv / WebhookSigningSecretFile name the webhook's
	// signing secret; given, every delivery must carry a valid
	// X-Mailchimp-Signature.
	WebhookSigningSecretEnv  string `yaml:"webhookSigningSecretEnv"`
	WebhookSigningSecretFile string `yaml:"webhookSigningSecretFile"`
}

// maxInFlight is Mailchimp's limit of simultaneous connections per account.
const maxInFlight = 10

var _ connectors.MarketingConfig = (*Config)(nil)

var (
	// audiencePattern: Mailchimp's list ids are ten hexadecimal
	// characters; the emulator's demo ids are words. Nothing that could
	// leave the URL path segment passes.
	audiencePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// mergeTagPattern: a merge tag is upper-case letters, digits and '_',
	// at most ten characters.
	mergeTagPattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,9}$`)
)

func (c *Config) apiKey() connectors.SecretRef {
	return connectors.SecretRef{Env: c.APIKeyEnv, File: c.APIKeyFile}
}

func (c *Config) oauthToken() connectors.SecretRef {
	return connectors.SecretRef{Env: c.OAuthTokenEnv, File: c.OAuthTokenFile}
}

func (c *Config) webhookToken() connectors.SecretRef {
	return connectors.SecretRef{Env: c.WebhookTokenEnv, File: c.WebhookTokenFile}
}

func (c *Config) webhookSecret() connectors.SecretRef {
	return connectors.SecretRef{Env: c.WebhookSigningSecretEnv, File: c.WebhookSigningSecretFile}
}

// ReceivesWebhooks reports whether the integration's webhook endpoint is configured.
func (c *Config) ReceivesWebhooks() bool { return c.webhookToken().Given() }

// Validate checks every rule the API would otherwise refuse at run time.
func (c *Config) Validate(dev bool) error {
	var p connectors.Problems
	switch {
	case c.AudienceID == "":
		p.Add("audience", "required (the audience id, from Audience → Settings → Audience name and defaults)")
	case !audiencePattern.MatchString(c.AudienceID):
		p.Add("audience", "%q is not an audience id (letters, digits, '-' and '_', at most 64)", c.AudienceID)
	}
	switch {
	case c.MaxInFlight == 0:
		c.MaxInFlight = maxInFlight
	case c.MaxInFlight < 1 || c.MaxInFlight > maxInFlight:
		p.Add("maxInFlight", "%d must be between 1 and %d (Mailchimp's limit per account)", c.MaxInFlight, maxInFlight)
	}
	connectors.CheckSecret(&p, "webhookToken", c.webhookToken(), false)
	connectors.CheckSecret(&p, "webhookSigningSecret", c.webhookSecret(), false)
	if c.webhookSecret().Given() && !c.webhookToken().Given() {
		p.Add("webhookSigningSecretEnv", "given without webhookTokenEnv or webhookTokenFile, which turns the webhook on")
	}
	if connectors.CheckBaseURL(&p, "baseURL", c.BaseURL, dev) {
		// The emulator hands out its own credential.
		return p.Err()
	}
	key, token := c.apiKey(), c.oauthToken()
	connectors.CheckSecret(&p, "apiKey", key, false)
	connectors.CheckSecret(&p, "oauthToken", token, false)
	switch {
	case key.Given() && token.Given():
		p.Add("apiKeyEnv", "give either an API key (apiKeyEnv/File) or an OAuth token (oauthTokenEnv/File), not both")
	case !key.Given() && !token.Given():
		p.Add("apiKeyEnv", "a credential is required: one of apiKeyEnv, apiKeyFile, oauthTokenEnv, oauthTokenFile")
	}
	switch {
	case c.DC != "" && !dcPattern.MatchString(c.DC):
		p.Add("dc", "%q is not a data center such as us6", c.DC)
	case token.Given() && c.DC == "" && c.BaseURL == "":
		p.Add("dc", "required with an OAuth token (tokens carry no data center), e.g. us6")
	}
	return p.Err()
}

// Audience is the audience id.
func (c *Config) Audience() string { return c.AudienceID }

// Emulated reports whether the base URL is the dev mode's emulator.
func (c *Config) Emulated() bool { return c.BaseURL == connectors.EmulatorURL }

// CheckMergeField refuses what is not a merge tag, and EMAIL, the
// member's address: field sync must never rewrite who a member is.
func (c *Config) CheckMergeField(tag string) error {
	switch {
	case !mergeTagPattern.MatchString(tag):
		return fmt.Errorf("%q is not a merge tag (upper-case letters, digits, '_', at most 10)", tag)
	case tag == "EMAIL":
		return errors.New(`"EMAIL" is the member's address, not a merge field`)
	}
	return nil
}

// CheckStatusIfNew accepts the statuses Mailchimp's status_if_new takes.
func (c *Config) CheckStatusIfNew(s connectors.MemberStatus) error {
	switch s {
	case connectors.StatusSubscribed, connectors.StatusPending, connectors.StatusUnsubscribed, connectors.StatusTransactional:
		return nil
	}
	return fmt.Errorf("%q is not one of subscribed, pending, unsubscribed, transactional", s)
}

// Open reads the credential and builds the client.
func (c *Config) Open(s connectors.Secrets, log *slog.Logger) (connectors.Marketing, error) {
	o := Options{DC: c.DC, BaseURL: c.BaseURL, MaxInFlight: c.MaxInFlight, Logger: log.With("system", System)}
	var err error
	key, ref := "apiKey", c.apiKey()
	if ref.Given() {
		o.APIKey, err = s.Secret(key, ref)
	} else {
		key, ref = "oauthToken", c.oauthToken()
		o.OAuthToken, err = s.Secret(key, ref)
	}
	if err != nil {
		return nil, err
	}
	if ref := c.webhookToken(); ref.Given() {
		o.Webhook = &WebhookOptions{Audience: c.AudienceID}
		if o.Webhook.Token, err = s.Secret("webhookToken", ref); err != nil {
			return nil, err
		}
		if !tokenPattern.MatchString(o.Webhook.Token) {
			k := "webhookTokenEnv"
			if ref.File != "" {
				k = "webhookTokenFile"
			}
			return nil, &connectors.FieldError{Key: k, Msg: "the token must be 32 to 128 of A-Z a-z 0-9 - _ (e.g. openssl rand -hex 32)"}
		}
		if ref := c.webhookSecret(); ref.Given() {
			if o.Webhook.SigningSecret, err = s.Secret("webhookSigningSecret", ref); err != nil {
				return nil, err
			}
		}
	}
	client, err := New(o)
	if err != nil {
		// The credential read does not fit the settings (a key without
		// its data center, a data center that is not the key's).
		if ref.File != "" {
			key += "File"
		} else {
			key += "Env"
		}
		return nil, &connectors.FieldError{Key: key, Msg: strings.TrimPrefix(err.Error(), "mailchimp: ")}
	}
	return client, nil
}

package netsuite

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// Config is the "crm:" block of an integration whose kind is netsuite. It
// names the credentials (environment variables or files), never holds them.
type Config struct {
	// AccountID is the account as NetSuite spells it: 1234567 or 1234567_SB1.
	AccountID string `yaml:"accountId"`
	// Token-based authentication (OAuth 1.0a): the four secrets.
	ConsumerKeyEnv     string `yaml:"consumerKeyEnv"`
	ConsumerKeyFile    string `yaml:"consumerKeyFile"`
	ConsumerSecretEnv  string `yaml:"consumerSecretEnv"`
	ConsumerSecretFile string `yaml:"consumerSecretFile"`
	TokenIDEnv         string `yaml:"tokenIdEnv"`
	TokenIDFile        string `yaml:"tokenIdFile"`
	TokenSecretEnv     string `yaml:"tokenSecretEnv"`
	TokenSecretFile    string `yaml:"tokenSecretFile"`
	// Machine-to-machine (OAuth 2.0 client credentials): client id,
	// certificate id and private key.
	ClientIDEnv    string `yaml:"clientIdEnv"`
	ClientIDFile   string `yaml:"clientIdFile"`
	CertificateID  string `yaml:"certificateId"`
	PrivateKeyEnv  string `yaml:"privateKeyEnv"`
	PrivateKeyFile string `yaml:"privateKeyFile"`
	// TimeZone is the integration user's time zone (Set Preferences), an
	// IANA name; required, since SuiteQL reads and writes dates in it.
	TimeZone string `yaml:"timeZone"`
	// Concurrency caps requests in flight to the account; default 5.
	Concurrency int `yaml:"concurrency"`
	// BaseURL overrides the account's SuiteTalk address; "emulator" (dev
	// mode only) is the in-process emulator.
	BaseURL string `yaml:"baseURL"`

	connectors.CRMScope `yaml:",inline"`
}

var _ connectors.CRMConfig = (*Config)(nil)

// MaxConcurrency bounds Concurrency: NetSuite allows 15 concurrent
// requests at the highest service tier, plus 10 per SuiteCloud Plus
// licence; more than this is a typo, not an account.
const MaxConcurrency = 100

var (
	// savedSearchPattern: an internal id or a script id.
	savedSearchPattern = regexp.MustCompile(`^([0-9]{1,18}|customsearch[A-Za-z0-9_]{1,90})$`)
	// customFieldPattern: a custom entity field's id.
	customFieldPattern = regexp.MustCompile(`^(?i:custentity)[A-Za-z0-9_]{1,90}$`)
	certificatePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)
)

// scopeRules are NetSuite's rules for the CRM scope.
var scopeRules = connectors.ScopeRules{
	RecordTypes:  recordTypes,
	DefaultTypes: recordTypes,
	MaxLists:     50,
	List:         checkSavedSearch,
	CustomField: func(name string) error {
		// ASCII only, as the client's column check: lower-casing first
		// would let a Kelvin sign pass as a k.
		if !customFieldPattern.MatchString(name) || !identPattern.MatchString(name) {
			return fmt.Errorf("%q must be a custom entity field id (custentity...)", name)
		}
		return nil
	},
}

func checkSavedSearch(id string) error {
	if !savedSearchPattern.MatchString(id) {
		return fmt.Errorf("%q is not a saved search id (an internal id such as 123 or a script id such as customsearch_mc_sync)", id)
	}
	return nil
}

func (c *Config) tba() [4]struct {
	key string
	ref connectors.SecretRef
} {
	type pair = struct {
		key string
		ref connectors.SecretRef
	}
	return [4]pair{
		{"consumerKey", connectors.SecretRef{Env: c.ConsumerKeyEnv, File: c.ConsumerKeyFile}},
		{"consumerSecret", connectors.SecretRef{Env: c.ConsumerSecretEnv, File: c.ConsumerSecretFile}},
		{"tokenId", connectors.SecretRef{Env: c.TokenIDEnv, File: c.TokenIDFile}},
		{"tokenSecret", connectors.SecretRef{Env: c.TokenSecretEnv, File: c.TokenSecretFile}},
	}
}

func (c *Config) clientID() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientIDEnv, File: c.ClientIDFile}
}

func (c *Config) privateKey() connectors.SecretRef {
	return connectors.SecretRef{Env: c.PrivateKeyEnv, File: c.PrivateKeyFile}
}

// Validate fills in the defaults and checks every rule the account would
// otherwise refuse at run time.
func (c *Config) Validate(dev bool) error {
	var p connectors.Problems
	switch {
	case c.AccountID == "":
		p.Add("accountId", "required (e.g. 1234567 or 1234567_SB1)")
	case !accountPattern.MatchString(c.AccountID) || len(c.AccountID) > 40:
		p.Add("accountId", "%q is not a NetSuite account id such as 1234567 or 1234567_SB1", c.AccountID)
	}
	switch {
	case c.TimeZone == "":
		// A wrong guess would shift every watermark by hours and hide opt-outs.
		p.Add("timeZone", "required: the integration user's time zone (Set Preferences), e.g. America/Los_Angeles or UTC")
	case c.TimeZone == "Local":
		p.Add("timeZone", `"Local" is this machine's zone, not the NetSuite user's: give an IANA name such as America/Los_Angeles`)
	default:
		if _, err := time.LoadLocation(c.TimeZone); err != nil {
			p.Add("timeZone", "%q is not an IANA time zone such as America/Los_Angeles", c.TimeZone)
		}
	}
	switch {
	case c.Concurrency == 0:
		c.Concurrency = defaultConcurrency
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		p.Add("concurrency", "%d must be between 1 and %d", c.Concurrency, MaxConcurrency)
	}
	c.CRMScope.Check(&p, scopeRules)
	if connectors.CheckBaseURL(&p, "baseURL", c.BaseURL, dev) {
		return p.Err() // the emulator hands out its own credentials
	}
	tbaGiven := 0
	for _, s := range c.tba() {
		connectors.CheckSecret(&p, s.key, s.ref, false)
		if s.ref.Given() {
			tbaGiven++
		}
	}
	connectors.CheckSecret(&p, "clientId", c.clientID(), false)
	connectors.CheckSecret(&p, "privateKey", c.privateKey(), false)
	m2m := c.clientID().Given() || c.privateKey().Given() || c.CertificateID != ""
	switch {
	case tbaGiven > 0 && m2m:
		p.Add("consumerKeyEnv", "give either the four TBA secrets or the M2M client id, certificate id and private key, not both")
	case tbaGiven > 0 && tbaGiven < 4:
		for _, s := range c.tba() {
			if !s.ref.Given() {
				p.Add(s.key+"Env", "required for token-based auth (or %sFile)", s.key)
			}
		}
	case m2m:
		if !c.clientID().Given() {
			p.Add("clientIdEnv", "required for M2M auth (or clientIdFile)")
		}
		if c.CertificateID == "" {
			p.Add("certificateId", "required for M2M auth")
		} else if !certificatePattern.MatchString(c.CertificateID) {
			p.Add("certificateId", "%q is not a certificate id", c.CertificateID)
		}
		if !c.privateKey().Given() {
			p.Add("privateKeyFile", "required for M2M auth (or privateKeyEnv)")
		}
	case tbaGiven == 0:
		p.Add("consumerKeyEnv", "credentials are required: the four TBA secrets (consumerKey, consumerSecret, tokenId, tokenSecret) or M2M (clientId, certificateId, privateKey)")
	}
	return p.Err()
}

// Scope is what the sync reads and writes.
func (c *Config) Scope() connectors.CRMScope { return c.CRMScope }

// Emulated reports whether the base URL is the dev mode's emulator.
func (c *Config) Emulated() bool { return c.BaseURL == connectors.EmulatorURL }

// CheckField accepts what SuiteQL accepts as a column name.
func (c *Config) CheckField(name string) error {
	if !identPattern.MatchString(name) {
		return fmt.Errorf("%q is not a NetSuite field id (a letter, then letters, digits and '_')", name)
	}
	return nil
}

// Open reads the credentials and builds the client.
func (c *Config) Open(s connectors.Secrets, log *slog.Logger) (connectors.CRM, error) {
	o := Options{AccountID: c.AccountID, BaseURL: c.BaseURL, Concurrency: c.Concurrency, Logger: log.With("system", System)}
	loc, err := time.LoadLocation(c.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("timeZone: %w", err)
	}
	o.TimeZone = loc
	read := func(key string, ref connectors.SecretRef) string {
		if err != nil {
			return ""
		}
		var v string
		v, err = s.Secret(key, ref)
		return v
	}
	if c.clientID().Given() {
		o.M2M = M2M{ClientID: read("clientId", c.clientID()), CertificateID: c.CertificateID, PrivateKey: read("privateKey", c.privateKey())}
	} else {
		t := c.tba()
		o.TBA = TBA{ConsumerKey: read(t[0].key, t[0].ref), ConsumerSecret: read(t[1].key, t[1].ref),
			TokenID: read(t[2].key, t[2].ref), TokenSecret: read(t[3].key, t[3].ref)}
	}
	if err != nil {
		return nil, err
	}
	return New(o)
}

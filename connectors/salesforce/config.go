package salesforce

import (
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
)

// Config is the "crm:" block of an integration whose kind is salesforce.
// It names the credentials (environment variables or files), never holds them.
type Config struct {
	// InstanceURL is the org's My Domain URL (https://acme.my.salesforce.com),
	// where tokens come from; required unless BaseURL is set.
	InstanceURL string `yaml:"instanceURL"`
	// LoginURL overrides InstanceURL for the JWT bearer flow
	// (https://login.salesforce.com, or test.salesforce.com for a sandbox).
	LoginURL string `yaml:"loginURL"`
	// Username is the pre-approved user of the JWT bearer flow.
	Username string `yaml:"username"`
	// APIVersion is the REST version, "62.0"; default DefaultAPIVersion.
	APIVersion string `yaml:"apiVersion"`
	// BaseURL overrides both; "emulator" (dev mode only) is the in-process emulator.
	BaseURL string `yaml:"baseURL"`
	// The connected app's consumer key (both flows), and either its
	// consumer secret (client credentials flow) or the private key whose
	// certificate it holds (JWT bearer flow, with Username).
	ClientIDEnv      string `yaml:"clientIdEnv"`
	ClientIDFile     string `yaml:"clientIdFile"`
	ClientSecretEnv  string `yaml:"clientSecretEnv"`
	ClientSecretFile string `yaml:"clientSecretFile"`
	PrivateKeyEnv    string `yaml:"privateKeyEnv"`
	PrivateKeyFile   string `yaml:"privateKeyFile"`

	// MaxInFlight caps this worker's requests in flight to the org;
	// default 10 (Salesforce allows 25 long-running requests per org).
	// Workers sharing an org split it.
	MaxInFlight int `yaml:"maxInFlight"`

	connectors.CRMScope `yaml:",inline"`
}

// minAPIVersion is the oldest REST version the connector's calls exist in.
const minAPIVersion = 42.0

// maxInFlight is the org's limit of concurrent long-running requests.
const maxInFlight = 25

var _ connectors.CRMConfig = (*Config)(nil)

// RecordTypes are the objects this connector reads and writes; Account
// means person accounts.
var RecordTypes = []string{"Contact", "Lead", "Account"}

var (
	apiVersionPattern = regexp.MustCompile(`^v?[0-9]{2,3}\.[0-9]$`)
	usernamePattern   = regexp.MustCompile(`^[^\s@]+@[^\s@]+$`)
)

// scopeRules are Salesforce's rules for the CRM scope.
var scopeRules = connectors.ScopeRules{
	RecordTypes:  RecordTypes,
	DefaultTypes: []string{"Contact", "Lead"},
	MaxLists:     MaxCampaigns,
	List:         checkCampaign,
	CustomField: func(name string) error {
		if err := validFieldName(name); err != nil {
			return err
		}
		if !strings.HasSuffix(name, "__c") && !strings.HasSuffix(name, "__pc") {
			return fmt.Errorf("%q must be a custom field (...__c)", name)
		}
		return nil
	},
}

func (c *Config) clientID() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientIDEnv, File: c.ClientIDFile}
}

func (c *Config) clientSecret() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientSecretEnv, File: c.ClientSecretFile}
}

func (c *Config) privateKey() connectors.SecretRef {
	return connectors.SecretRef{Env: c.PrivateKeyEnv, File: c.PrivateKeyFile}
}

// Validate fills in the defaults and checks every rule the org would
// otherwise refuse at run time.
func (c *Config) Validate(dev bool) error {
	var p connectors.Problems
	emu := connectors.CheckBaseURL(&p, "baseURL", c.BaseURL, dev)
	switch {
	case c.InstanceURL == "" && c.BaseURL == "":
		p.Add("instanceURL", "required (your My Domain URL, e.g. https://acme.my.salesforce.com)")
	case c.InstanceURL != "":
		connectors.CheckBaseURL(&p, "instanceURL", c.InstanceURL, false)
	}
	if c.LoginURL != "" {
		connectors.CheckBaseURL(&p, "loginURL", c.LoginURL, false)
	}
	if c.APIVersion != "" {
		v, err := strconv.ParseFloat(strings.TrimPrefix(c.APIVersion, "v"), 64)
		switch {
		case !apiVersionPattern.MatchString(c.APIVersion) || err != nil:
			p.Add("apiVersion", "%q is not an API version such as 62.0", c.APIVersion)
		case v < minAPIVersion:
			// sObject Collections, which the opt-out writes use, came with 42.0.
			p.Add("apiVersion", "%q is older than %.1f, the first with sObject Collections", c.APIVersion, minAPIVersion)
		}
	}
	c.CRMScope.Check(&p, scopeRules)
	switch {
	case c.MaxInFlight == 0:
		c.MaxInFlight = 10
	case c.MaxInFlight < 1 || c.MaxInFlight > maxInFlight:
		p.Add("maxInFlight", "%d must be between 1 and %d", c.MaxInFlight, maxInFlight)
	}
	if emu {
		return p.Err() // the emulator hands out its own credentials
	}
	connectors.CheckSecret(&p, "clientId", c.clientID(), true)
	connectors.CheckSecret(&p, "clientSecret", c.clientSecret(), false)
	connectors.CheckSecret(&p, "privateKey", c.privateKey(), false)
	secret, key := c.clientSecret().Given(), c.privateKey().Given()
	switch {
	case secret && key:
		p.Add("clientSecretEnv", "give either clientSecret (client credentials flow) or privateKey with username (JWT bearer flow), not both")
	case key && c.Username == "":
		p.Add("username", "required with privateKey (the JWT bearer flow runs as that user)")
	case !secret && !key:
		p.Add("clientSecretEnv", "a credential is required: clientSecretEnv/File (client credentials) or privateKeyFile/Env with username (JWT bearer)")
	case secret && c.Username != "":
		p.Add("username", "only used with privateKey (JWT bearer flow)")
	}
	if c.Username != "" && !usernamePattern.MatchString(c.Username) {
		p.Add("username", "%q is not a Salesforce username (they look like addresses)", c.Username)
	}
	return p.Err()
}

// Scope is what the sync reads and writes.
func (c *Config) Scope() connectors.CRMScope { return c.CRMScope }

// Emulated reports whether the base URL is the dev mode's emulator.
func (c *Config) Emulated() bool { return c.BaseURL == connectors.EmulatorURL }

// CheckField accepts a field API name, as SOQL does.
func (c *Config) CheckField(name string) error { return validFieldName(name) }

// Open reads the credentials and builds the client. Tokens come from the
// My Domain URL (instanceURL), which the client credentials flow
// requires; loginURL overrides it for the JWT bearer flow.
func (c *Config) Open(s connectors.Secrets, log *slog.Logger) (connectors.CRM, error) {
	o := Options{Username: c.Username, MaxInFlight: c.MaxInFlight, Logger: log}
	for _, u := range []string{c.BaseURL, c.LoginURL, c.InstanceURL} {
		if u != "" {
			o.LoginURL = u
			break
		}
	}
	if c.APIVersion != "" {
		o.APIVersion = "v" + strings.TrimPrefix(c.APIVersion, "v")
	}
	if strings.Contains(c.LoginURL, "test.salesforce.com") {
		o.Audience = "https://test.salesforce.com" // sandboxes take the test audience in the JWT
	}
	var err error
	if o.ClientID, err = s.Secret("clientId", c.clientID()); err != nil {
		return nil, err
	}
	if c.clientSecret().Given() {
		o.ClientSecret, err = s.Secret("clientSecret", c.clientSecret())
	} else {
		var pem string
		pem, err = s.Secret("privateKey", c.privateKey())
		o.PrivateKeyPEM = []byte(pem)
	}
	if err != nil {
		return nil, err
	}
	return New(o)
}

package dynamics

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
)

// Config is the "crm:" block of an integration whose kind is dynamics.
// It names the credentials (environment variables or files), never holds them.
type Config struct {
	// OrgURL is the environment's URL, https://<org>.crm.dynamics.com
	// (crm4, crm11... by region); required unless BaseURL is set.
	OrgURL string `yaml:"orgURL"`
	// TenantID is the Entra tenant (directory) id of the app registration.
	TenantID string `yaml:"tenantId"`
	// AuthorityURL overrides Entra's https://login.microsoftonline.com
	// (a national cloud's authority).
	AuthorityURL string `yaml:"authorityURL"`
	// BaseURL overrides both; "emulator" (dev mode only) is the in-process emulator.
	BaseURL string `yaml:"baseURL"`
	// The app registration's application (client) id, and either one of
	// its client secrets or a PEM file holding the private key and the
	// certificate uploaded to it.
	ClientIDEnv      string `yaml:"clientIdEnv"`
	ClientIDFile     string `yaml:"clientIdFile"`
	ClientSecretEnv  string `yaml:"clientSecretEnv"`
	ClientSecretFile string `yaml:"clientSecretFile"`
	CertificateEnv   string `yaml:"certificateEnv"`
	CertificateFile  string `yaml:"certificateFile"`

	// EmailColumns are the address columns matched and read; default
	// [emailaddress1]. Add emailaddress2 and emailaddress3 to match those too.
	EmailColumns []string `yaml:"emailColumns"`

	// MaxInFlight caps this worker's requests in flight to the
	// environment; default 8. Service protection allows 52 concurrent
	// requests per user: workers sharing an application user split them.
	MaxInFlight int `yaml:"maxInFlight"`

	connectors.CRMScope `yaml:",inline"`
}

var _ connectors.CRMConfig = (*Config)(nil)

// scopeRules are Dynamics' rules for the CRM scope.
var scopeRules = connectors.ScopeRules{
	RecordTypes:  RecordTypes,
	DefaultTypes: []string{"contact", "lead"},
	MaxLists:     MaxLists,
	List:         checkList,
	CustomField:  checkCustomOptOut,
}

func (c *Config) clientID() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientIDEnv, File: c.ClientIDFile}
}

func (c *Config) clientSecret() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientSecretEnv, File: c.ClientSecretFile}
}

func (c *Config) certificate() connectors.SecretRef {
	return connectors.SecretRef{Env: c.CertificateEnv, File: c.CertificateFile}
}

// Validate fills in the defaults and checks every rule the environment
// would otherwise refuse at run time.
func (c *Config) Validate(dev bool) error {
	var p connectors.Problems
	emu := connectors.CheckBaseURL(&p, "baseURL", c.BaseURL, dev)
	switch {
	case c.OrgURL == "" && c.BaseURL == "":
		p.Add("orgURL", "required (your environment's URL, e.g. https://contoso.crm.dynamics.com)")
	case c.OrgURL != "":
		connectors.CheckBaseURL(&p, "orgURL", c.OrgURL, false)
		if u, err := url.Parse(c.OrgURL); err == nil && u.Host != "" && strings.Trim(u.Path, "/") != "" {
			// The token's scope is the environment's root URL.
			p.Add("orgURL", "%q: give the environment's root URL, without a path (the Web API's /api/data/v9.2 is added)", c.OrgURL)
		}
	}
	if c.AuthorityURL != "" {
		connectors.CheckBaseURL(&p, "authorityURL", c.AuthorityURL, false)
	}
	if len(c.EmailColumns) == 0 {
		c.EmailColumns = []string{"emailaddress1"}
	}
	seen := map[string]bool{}
	for i, e := range c.EmailColumns {
		key := fmt.Sprintf("emailColumns[%d]", i)
		switch {
		case !emailColumn(e):
			p.Add(key, "%q is not emailaddress1, emailaddress2 or emailaddress3", e)
		case seen[e]:
			p.Add(key, "%q is listed twice", e)
		}
		seen[e] = true
	}
	c.CRMScope.Check(&p, scopeRules)
	switch {
	case c.MaxInFlight == 0:
		c.MaxInFlight = DefaultMaxInFlight
	case c.MaxInFlight < 1 || c.MaxInFlight > MaxInFlightLimit:
		p.Add("maxInFlight", "%d must be between 1 and %d (the service-protection limit of concurrent requests)", c.MaxInFlight, MaxInFlightLimit)
	}
	if emu {
		return p.Err() // the emulator hands out its own tenant and credentials
	}
	switch {
	case c.TenantID == "":
		p.Add("tenantId", "required (the directory (tenant) id of the app registration, a GUID)")
	case !tenantPattern.MatchString(c.TenantID):
		p.Add("tenantId", "%q is not a tenant id (a GUID) or a tenant domain", c.TenantID)
	}
	connectors.CheckSecret(&p, "clientId", c.clientID(), true)
	connectors.CheckSecret(&p, "clientSecret", c.clientSecret(), false)
	connectors.CheckSecret(&p, "certificate", c.certificate(), false)
	secret, cert := c.clientSecret().Given(), c.certificate().Given()
	switch {
	case secret && cert:
		p.Add("clientSecretEnv", "give either clientSecret or certificate, not both")
	case !secret && !cert:
		p.Add("clientSecretEnv", "a credential is required: clientSecretEnv/File, or certificateEnv/File (a PEM with the private key and the certificate)")
	}
	return p.Err()
}

// Scope is what the sync reads and writes.
func (c *Config) Scope() connectors.CRMScope { return c.CRMScope }

// Emulated reports whether the base URL is the dev mode's emulator.
func (c *Config) Emulated() bool { return c.BaseURL == connectors.EmulatorURL }

// CheckField accepts a column logical name.
func (c *Config) CheckField(name string) error { return checkColumn(name) }

// Open reads the credentials and builds the client.
func (c *Config) Open(s connectors.Secrets, log *slog.Logger) (connectors.CRM, error) {
	o := Options{OrgURL: c.OrgURL, AuthorityURL: c.AuthorityURL, TenantID: c.TenantID, EmailColumns: c.EmailColumns, MaxInFlight: c.MaxInFlight, Logger: log}
	if c.BaseURL != "" {
		o.OrgURL, o.AuthorityURL = c.BaseURL, c.BaseURL
	}
	var err error
	if o.ClientID, err = s.Secret("clientId", c.clientID()); err != nil {
		return nil, err
	}
	if c.clientSecret().Given() {
		o.ClientSecret, err = s.Secret("clientSecret", c.clientSecret())
	} else {
		var pem string
		pem, err = s.Secret("certificate", c.certificate())
		o.CertificatePEM = []byte(pem)
	}
	if err != nil {
		return nil, err
	}
	return New(o)
}

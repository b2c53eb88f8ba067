package bullhorn

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
)

// Config is the "crm:" block of an integration whose kind is bullhorn. It
// names the credentials (environment variables or files), never holds them.
type Config struct {
	// LoginInfoURL is where data-centre discovery starts; default
	// DefaultLoginInfoURL. BaseURL overrides it; "emulator" (dev mode
	// only) is the in-process emulator.
	LoginInfoURL string `yaml:"loginInfoURL"`
	BaseURL      string `yaml:"baseURL"`
	// The OAuth client (id and secret from Bullhorn support) and the API
	// user (username and password) the sync signs in as.
	ClientIDEnv      string `yaml:"clientIdEnv"`
	ClientIDFile     string `yaml:"clientIdFile"`
	ClientSecretEnv  string `yaml:"clientSecretEnv"`
	ClientSecretFile string `yaml:"clientSecretFile"`
	UsernameEnv      string `yaml:"usernameEnv"`
	UsernameFile     string `yaml:"usernameFile"`
	PasswordEnv      string `yaml:"passwordEnv"`
	PasswordFile     string `yaml:"passwordFile"`

	// EmailFields are the address fields synced; default [email]. Add
	// email2 and email3 to match and opt out those addresses too.
	EmailFields []string `yaml:"emailFields"`
	// TrueText and FalseText are what a custom text opt-out, opt-in or
	// cleaned field holds for yes and no; default "Yes" and "No".
	TrueText  string `yaml:"trueText"`
	FalseText string `yaml:"falseText"`

	// MaxInFlight caps this worker's calls in flight (default 10, at most
	// 50, the newer editions' concurrent sessions); RequestsPerMinute paces
	// them (default 1,500, the newer editions' limit). Workers sharing a
	// corporation split both.
	MaxInFlight       int `yaml:"maxInFlight"`
	RequestsPerMinute int `yaml:"requestsPerMinute"`

	connectors.CRMScope `yaml:",inline"`
}

// The corporation's limits (reference B6, newer editions).
const (
	maxInFlight       = 50
	maxPerMinute      = 1500
	maxTearsheets     = 100
	maxCustomTextWord = 100
)

var _ connectors.CRMConfig = (*Config)(nil)

// scopeRules are Bullhorn's rules for the CRM scope: Tearsheets are the lists.
var scopeRules = connectors.ScopeRules{
	RecordTypes:  RecordTypes,
	DefaultTypes: []string{"Candidate", "ClientContact"},
	MaxLists:     maxTearsheets,
	List:         CheckTearsheet,
	CustomField:  CheckCustomField,
}

func (c *Config) clientID() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientIDEnv, File: c.ClientIDFile}
}
func (c *Config) clientSecret() connectors.SecretRef {
	return connectors.SecretRef{Env: c.ClientSecretEnv, File: c.ClientSecretFile}
}
func (c *Config) username() connectors.SecretRef {
	return connectors.SecretRef{Env: c.UsernameEnv, File: c.UsernameFile}
}
func (c *Config) password() connectors.SecretRef {
	return connectors.SecretRef{Env: c.PasswordEnv, File: c.PasswordFile}
}

// Validate fills in the defaults and checks every rule Bullhorn would
// otherwise refuse at run time.
func (c *Config) Validate(dev bool) error {
	var p connectors.Problems
	emu := connectors.CheckBaseURL(&p, "baseURL", c.BaseURL, dev)
	if c.LoginInfoURL != "" {
		connectors.CheckBaseURL(&p, "loginInfoURL", c.LoginInfoURL, false)
		if c.BaseURL != "" {
			p.Add("loginInfoURL", "give loginInfoURL or baseURL, not both")
		}
	}
	c.CRMScope.Check(&p, scopeRules)
	if len(c.EmailFields) == 0 {
		c.EmailFields = []string{"email"}
	}
	seen := map[string]bool{}
	for i, f := range c.EmailFields {
		key := fmt.Sprintf("emailFields[%d]", i)
		switch {
		case f != "email" && f != "email2" && f != "email3":
			p.Add(key, "%q is not email, email2 or email3", f)
		case seen[f]:
			p.Add(key, "%q is listed twice", f)
		}
		seen[f] = true
	}
	if c.TrueText == "" {
		c.TrueText = "Yes"
	}
	if c.FalseText == "" {
		c.FalseText = "No"
	}
	for _, x := range []struct{ key, v string }{{"trueText", c.TrueText}, {"falseText", c.FalseText}} {
		if strings.TrimSpace(x.v) != x.v || len(x.v) > maxCustomTextWord {
			p.Add(x.key, "%q must be at most %d characters without surrounding spaces", x.v, maxCustomTextWord)
		}
	}
	// The client reads a custom text field as yes when it holds one of
	// these words; what it writes must read back as what it meant.
	if !truthy(c.TrueText) {
		p.Add("trueText", "%q does not read as yes (yes, y, true, 1, on, x)", c.TrueText)
	}
	if truthy(c.FalseText) {
		p.Add("falseText", "%q reads as yes", c.FalseText)
	}
	switch {
	case c.MaxInFlight == 0:
		c.MaxInFlight = 10
	case c.MaxInFlight < 1 || c.MaxInFlight > maxInFlight:
		p.Add("maxInFlight", "%d must be between 1 and %d", c.MaxInFlight, maxInFlight)
	}
	switch {
	case c.RequestsPerMinute == 0:
		c.RequestsPerMinute = maxPerMinute
	case c.RequestsPerMinute < 1 || c.RequestsPerMinute > maxPerMinute:
		p.Add("requestsPerMinute", "%d must be between 1 and %d", c.RequestsPerMinute, maxPerMinute)
	}
	if emu {
		return p.Err() // the emulator hands out its own credentials
	}
	connectors.CheckSecret(&p, "clientId", c.clientID(), true)
	connectors.CheckSecret(&p, "clientSecret", c.clientSecret(), true)
	connectors.CheckSecret(&p, "username", c.username(), true)
	connectors.CheckSecret(&p, "password", c.password(), true)
	return p.Err()
}

// Scope is what the sync reads and writes.
func (c *Config) Scope() connectors.CRMScope { return c.CRMScope }

// Emulated reports whether the base URL is the dev mode's emulator.
func (c *Config) Emulated() bool { return c.BaseURL == connectors.EmulatorURL }

// CheckField accepts a field name as the client reads it.
func (c *Config) CheckField(name string) error { return CheckField(name) }

// Open reads the credentials and builds the client. When s also provides
// a TokenStore (the worker's, over the consent ledger), refresh tokens are
// kept there under the integration's name; otherwise in memory.
func (c *Config) Open(s connectors.Secrets, log *slog.Logger) (connectors.CRM, error) {
	o := Options{
		LoginInfoURL: c.LoginInfoURL, EmailFields: c.EmailFields, TrueText: c.TrueText, FalseText: c.FalseText,
		MaxInFlight: c.MaxInFlight, RequestsPerMinute: c.RequestsPerMinute, Logger: log,
	}
	if c.BaseURL != "" {
		o.LoginInfoURL = c.BaseURL
	}
	if tp, ok := s.(TokenStoreProvider); ok {
		o.Tokens, o.Integration = tp.TokenStore(), tp.Integration()
	}
	for _, x := range []struct {
		key string
		ref connectors.SecretRef
		to  *string
	}{{"clientId", c.clientID(), &o.ClientID}, {"clientSecret", c.clientSecret(), &o.ClientSecret},
		{"username", c.username(), &o.Username}, {"password", c.password(), &o.Password}} {
		v, err := s.Secret(x.key, x.ref)
		if err != nil {
			return nil, err
		}
		*x.to = v
	}
	return New(o)
}

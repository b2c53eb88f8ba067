package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
)

// Config is the worker's configuration file: the integrations it runs.
// It names credentials (environment variables or files) but never holds
// them, so the file can be committed and reviewed.
type Config struct {
	Integrations []Integration `yaml:"integrations"`
	// Ledger is where the consent ledger lives; default a SQLite file.
	Ledger ledger.Settings `yaml:"ledger"`
}

// Integration is one marketing audience kept in sync with one CRM.
type Integration struct {
	// ID names the integration in schedule and workflow ids and in the
	// OptOutIntegration search attribute.
	ID string `yaml:"id"`
	// Schedule is the interval between runs, e.g. "15m"; default 15m.
	Schedule  string          `yaml:"schedule"`
	Marketing MarketingConfig `yaml:"marketing"`
	CRM       CRMConfig       `yaml:"crm"`
	// CRMToMarketing is the Step 1 toggle: send CRM opt-outs to the
	// audience. Off by default, because it unsubscribes people.
	CRMToMarketing bool `yaml:"crmToMarketing"`
	// FieldMap maps CRM fields to merge tags (Step 3); empty turns Step 3 off.
	FieldMap map[string]string `yaml:"fieldMap"`
	// StatusIfNew is the status of members Step 3 adds; default subscribed.
	StatusIfNew string `yaml:"statusIfNew"`
	// Overlap is subtracted from each watermark; default 2m.
	Overlap string `yaml:"overlap"`
	// PageSize is asked of the connectors; default (and maximum) 1000.
	PageSize int `yaml:"pageSize"`
	// PagesPerActivity bounds one activity call; default 10.
	PagesPerActivity int `yaml:"pagesPerActivity"`

	// Parsed by Validate.
	interval, overlap time.Duration
}

// MarketingConfig is the marketing side of an integration. Exactly one
// credential source is given.
type MarketingConfig struct {
	Kind     string `yaml:"kind"`
	Audience string `yaml:"audience"`
	// APIKeyEnv / APIKeyFile name where the API key ("<key>-<dc>") is.
	APIKeyEnv  string `yaml:"apiKeyEnv"`
	APIKeyFile string `yaml:"apiKeyFile"`
	// OAuthTokenEnv / OAuthTokenFile name where an OAuth access token is; DC is then required.
	OAuthTokenEnv  string `yaml:"oauthTokenEnv"`
	OAuthTokenFile string `yaml:"oauthTokenFile"`
	DC             string `yaml:"dc"`
	// BaseURL overrides the API address; "emulator" (dev mode only) runs the in-process emulator.
	BaseURL string `yaml:"baseURL"`
}

// CRMConfig is the CRM side of an integration. Which fields apply depends
// on Kind; a field of the other kind is an error, so that a half-edited
// file does not silently use the wrong credentials.
type CRMConfig struct {
	Kind string `yaml:"kind"`

	// NetSuite.
	AccountID string `yaml:"accountId"`
	// TBA: the four OAuth 1.0a secrets.
	ConsumerKeyEnv     string `yaml:"consumerKeyEnv"`
	ConsumerKeyFile    string `yaml:"consumerKeyFile"`
	ConsumerSecretEnv  string `yaml:"consumerSecretEnv"`
	ConsumerSecretFile string `yaml:"consumerSecretFile"`
	TokenIDEnv         string `yaml:"tokenIdEnv"`
	TokenIDFile        string `yaml:"tokenIdFile"`
	TokenSecretEnv     string `yaml:"tokenSecretEnv"`
	TokenSecretFile    string `yaml:"tokenSecretFile"`
	// M2M: client id, certificate id and private key (NetSuite); also the
	// Salesforce JWT bearer flow's client id and key.
	CertificateID string `yaml:"certificateId"`
	// TimeZone is the NetSuite integration user's time zone (IANA name);
	// required, since SuiteQL dates are in it.
	TimeZone string `yaml:"timeZone"`
	// Concurrency caps requests in flight to the NetSuite account; default 5.
	Concurrency int `yaml:"concurrency"`

	// Shared by NetSuite M2M and both Salesforce flows.
	ClientIDEnv      string       `yaml:"clientIdEnv"`
	ClientIDFile     string       `yaml:"clientIdFile"`
	PrivateKeyEnv    string       `yaml:"privateKeyEnv"`
	PrivateKeyFile   string       `yaml:"privateKeyFile"`
	ClientSecretEnv  string       `yaml:"clientSecretEnv"`
	ClientSecretFile string       `yaml:"clientSecretFile"`
	InstanceURL      string       `yaml:"instanceURL"`
	LoginURL         string       `yaml:"loginURL"`
	Username         string       `yaml:"username"`
	APIVersion       string       `yaml:"apiVersion"`
	BaseURL          string       `yaml:"baseURL"`
	RecordTypes      []string     `yaml:"recordTypes"`
	Lists            []string     `yaml:"lists"`
	OptOut           OptOutConfig `yaml:"optOut"`
	CleanedField     string       `yaml:"cleanedField"`
}

// OptOutConfig says where the CRM keeps the opt-out.
type OptOutConfig struct {
	// Kind is standard (default), custom or inverted.
	Kind  string `yaml:"kind"`
	Field string `yaml:"field"`
}

// The defaults the brief fixes.
const (
	defaultSchedule         = 15 * time.Minute
	defaultOverlap          = 2 * time.Minute
	defaultPagesPerActivity = 10
	emulatorURL             = "emulator"
)

// LoadConfig reads and validates a configuration file.
// dev allows "emulator" base URLs.
func LoadConfig(path string, dev bool) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := ParseConfig(b, dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes a configuration strictly (an unknown key is an
// error: a misspelt "crmToMarketting" must not silently mean false), fills
// in the defaults and validates it; dev allows "emulator" base URLs.
func ParseConfig(b []byte, dev bool) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("configuration is empty")
		}
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if err := cfg.Validate(dev); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var (
	idPattern       = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	mergeTagPattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,9}$`)
	envNamePattern  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	campaignPattern = regexp.MustCompile(`^701[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$`)
	savedSearchPat  = regexp.MustCompile(`^([0-9]+|customsearch[A-Za-z0-9_]*)$`)
	accountIDPat    = regexp.MustCompile(`^[A-Za-z0-9]+(_[A-Za-z0-9]+)?$`)
	apiVersionPat   = regexp.MustCompile(`^v?[0-9]+\.[0-9]$`)
)

// recordTypes are the record types each CRM kind syncs, the first entry
// of each being the default set.
var recordTypes = map[string]struct{ allowed, def []string }{
	"netsuite":   {allowed: []string{"customer", "contact", "partner", "vendor"}, def: []string{"customer", "contact"}},
	"salesforce": {allowed: []string{"Contact", "Lead"}, def: []string{"Contact", "Lead"}},
}

// Validate fills in defaults and checks every integration, returning all
// the problems at once, each naming its integration and field. dev allows
// "emulator" base URLs.
func (c *Config) Validate(dev bool) error {
	var errs []error
	if len(c.Integrations) == 0 {
		errs = append(errs, errors.New("integrations: at least one integration is required"))
	}
	for _, e := range c.Ledger.Validate() {
		errs = append(errs, errors.New(e))
	}
	seen := map[string]bool{}
	for i := range c.Integrations {
		in := &c.Integrations[i]
		name := in.ID
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		for _, e := range in.validate(dev) {
			errs = append(errs, fmt.Errorf("integration %q: %s", name, e))
		}
		if in.ID != "" {
			if seen[in.ID] {
				errs = append(errs, fmt.Errorf("integration %q: id: duplicate id", in.ID))
			}
			seen[in.ID] = true
		}
	}
	return errors.Join(errs...)
}

// validate fills in in's defaults and returns its problems as "field: message".
func (in *Integration) validate(dev bool) []string {
	var p []string
	bad := func(field, format string, args ...any) { p = append(p, field+": "+fmt.Sprintf(format, args...)) }

	switch {
	case in.ID == "":
		bad("id", "required")
	case !idPattern.MatchString(in.ID):
		bad("id", "%q must be lower-case letters, digits and '-' (at most 63), starting with a letter or digit", in.ID)
	}
	in.interval = defaultSchedule
	if in.Schedule != "" {
		d, err := time.ParseDuration(in.Schedule)
		switch {
		case err != nil:
			bad("schedule", "%q is not a duration such as 15m or 1h", in.Schedule)
		case d < time.Second:
			bad("schedule", "%q must be at least 1s", in.Schedule)
		default:
			in.interval = d
		}
	}
	in.overlap = defaultOverlap
	if in.Overlap != "" {
		d, err := time.ParseDuration(in.Overlap)
		switch {
		case err != nil:
			bad("overlap", "%q is not a duration such as 2m", in.Overlap)
		case d < 0:
			bad("overlap", "%q must not be negative", in.Overlap)
		default:
			in.overlap = d
		}
	}
	switch in.StatusIfNew {
	case "":
		in.StatusIfNew = string(connectors.StatusSubscribed)
	case "subscribed", "pending", "unsubscribed", "transactional":
	default:
		bad("statusIfNew", "%q is not one of subscribed, pending, unsubscribed, transactional", in.StatusIfNew)
	}
	switch {
	case in.PageSize == 0:
		in.PageSize = connectors.MaxPageSize
	case in.PageSize < 1 || in.PageSize > connectors.MaxPageSize:
		bad("pageSize", "%d must be between 1 and %d", in.PageSize, connectors.MaxPageSize)
	}
	switch {
	case in.PagesPerActivity == 0:
		in.PagesPerActivity = defaultPagesPerActivity
	case in.PagesPerActivity < 0:
		bad("pagesPerActivity", "%d must be positive", in.PagesPerActivity)
	}
	tags := map[string]string{}
	for _, crmField := range sortedKeys(in.FieldMap) {
		tag := in.FieldMap[crmField]
		switch {
		case strings.TrimSpace(crmField) == "":
			bad("fieldMap", "a CRM field name is empty")
		case !mergeTagPattern.MatchString(tag):
			bad("fieldMap."+crmField, "%q is not a merge tag (upper-case letters, digits, '_', at most 10)", tag)
		case tags[tag] != "":
			bad("fieldMap."+crmField, "merge tag %s is also mapped from %s", tag, tags[tag])
		default:
			tags[tag] = crmField
		}
	}
	p = append(p, in.Marketing.validate(dev)...)
	p = append(p, in.CRM.validate(dev)...)
	return p
}

func (m *MarketingConfig) validate(dev bool) []string {
	var p []string
	bad := func(field, format string, args ...any) {
		p = append(p, "marketing."+field+": "+fmt.Sprintf(format, args...))
	}
	switch m.Kind {
	case "":
		bad("kind", "required (mailchimp)")
		return p
	case "mailchimp":
	default:
		bad("kind", "unknown kind %q (known: mailchimp)", m.Kind)
		return p
	}
	if m.Audience == "" {
		bad("audience", "required (the Mailchimp audience id)")
	}
	emu := checkBaseURL(m.BaseURL, dev, func(msg string) { bad("baseURL", "%s", msg) })
	if emu {
		// The emulator hands out its own credentials.
		for f, v := range map[string]string{"apiKeyEnv": m.APIKeyEnv, "apiKeyFile": m.APIKeyFile, "oauthTokenEnv": m.OAuthTokenEnv, "oauthTokenFile": m.OAuthTokenFile} {
			if v != "" {
				bad(f, "not used with baseURL: emulator")
			}
		}
		return p
	}
	sources := 0
	for _, s := range []struct{ field, v string }{
		{"apiKeyEnv", m.APIKeyEnv}, {"apiKeyFile", m.APIKeyFile},
		{"oauthTokenEnv", m.OAuthTokenEnv}, {"oauthTokenFile", m.OAuthTokenFile},
	} {
		if s.v != "" {
			sources++
			if strings.HasSuffix(s.field, "Env") && !envNamePattern.MatchString(s.v) {
				bad(s.field, "%q is not an environment variable name", s.v)
			}
		}
	}
	switch {
	case sources == 0:
		bad("apiKeyEnv", "a credential is required: one of apiKeyEnv, apiKeyFile, oauthTokenEnv, oauthTokenFile")
	case sources > 1:
		bad("apiKeyEnv", "give only one of apiKeyEnv, apiKeyFile, oauthTokenEnv, oauthTokenFile")
	}
	if (m.OAuthTokenEnv != "" || m.OAuthTokenFile != "") && m.DC == "" && m.BaseURL == "" {
		bad("dc", "required with an OAuth token (tokens carry no data center), e.g. us6")
	}
	return p
}

// checkBaseURL reports whether u asks for the emulator, calling bad when u
// is neither empty, an http(s) URL nor (in dev mode) "emulator".
func checkBaseURL(u string, dev bool, bad func(string)) bool {
	if u == "" {
		return false
	}
	if u == emulatorURL {
		if !dev {
			bad(`"emulator" is only allowed with -dev`)
		}
		return dev
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		bad(fmt.Sprintf("%q is not an http(s) URL", u))
	}
	return false
}

// secretPair is one credential named by an environment variable or a file.
type secretPair struct {
	name      string // the credential, e.g. "consumerKey"
	env, file string
}

func (s secretPair) given() bool { return s.env != "" || s.file != "" }

func (c *CRMConfig) tba() []secretPair {
	return []secretPair{
		{"consumerKey", c.ConsumerKeyEnv, c.ConsumerKeyFile},
		{"consumerSecret", c.ConsumerSecretEnv, c.ConsumerSecretFile},
		{"tokenId", c.TokenIDEnv, c.TokenIDFile},
		{"tokenSecret", c.TokenSecretEnv, c.TokenSecretFile},
	}
}

func (c *CRMConfig) clientID() secretPair {
	return secretPair{"clientId", c.ClientIDEnv, c.ClientIDFile}
}
func (c *CRMConfig) privateKey() secretPair {
	return secretPair{"privateKey", c.PrivateKeyEnv, c.PrivateKeyFile}
}
func (c *CRMConfig) clientSecret() secretPair {
	return secretPair{"clientSecret", c.ClientSecretEnv, c.ClientSecretFile}
}

func (c *CRMConfig) validate(dev bool) []string {
	var p []string
	bad := func(field, format string, args ...any) {
		p = append(p, "crm."+field+": "+fmt.Sprintf(format, args...))
	}
	checkPair := func(s secretPair) {
		switch {
		case s.env != "" && s.file != "":
			bad(s.name+"Env", "give only one of %sEnv and %sFile", s.name, s.name)
		case s.env != "" && !envNamePattern.MatchString(s.env):
			bad(s.name+"Env", "%q is not an environment variable name", s.env)
		}
	}
	notFor := func(kind string, fields map[string]bool) {
		for _, f := range sortedKeys(fields) {
			if fields[f] {
				bad(f, "not a %s setting", kind)
			}
		}
	}
	types, ok := recordTypes[c.Kind]
	switch {
	case c.Kind == "":
		bad("kind", "required (netsuite or salesforce)")
		return p
	case !ok:
		bad("kind", "unknown kind %q (known: netsuite, salesforce)", c.Kind)
		return p
	}
	emu := checkBaseURL(c.BaseURL, dev, func(msg string) { bad("baseURL", "%s", msg) })

	switch c.Kind {
	case "netsuite":
		notFor("netsuite", map[string]bool{
			"clientSecretEnv": c.ClientSecretEnv != "", "clientSecretFile": c.ClientSecretFile != "",
			"instanceURL": c.InstanceURL != "", "loginURL": c.LoginURL != "", "username": c.Username != "",
			"apiVersion": c.APIVersion != "",
		})
		switch {
		case c.AccountID == "":
			bad("accountId", "required (e.g. 1234567 or 1234567_SB1)")
		case !accountIDPat.MatchString(c.AccountID):
			bad("accountId", "%q is not a NetSuite account id such as 1234567 or 1234567_SB1", c.AccountID)
		}
		switch {
		case c.TimeZone == "" && !emu:
			// SuiteQL reads dates in the integration user's time zone: a
			// wrong guess shifts every watermark by hours and hides opt-outs.
			bad("timeZone", "required: the NetSuite integration user's time zone (Set Preferences), e.g. America/Los_Angeles or UTC")
		case c.TimeZone != "":
			if _, err := time.LoadLocation(c.TimeZone); err != nil {
				bad("timeZone", "%q is not an IANA time zone such as America/Los_Angeles", c.TimeZone)
			}
		}
		if c.Concurrency < 0 {
			bad("concurrency", "%d must not be negative", c.Concurrency)
		}
		if emu {
			break
		}
		tbaGiven := 0
		for _, s := range c.tba() {
			checkPair(s)
			if s.given() {
				tbaGiven++
			}
		}
		m2m := c.clientID().given() || c.privateKey().given() || c.CertificateID != ""
		checkPair(c.clientID())
		checkPair(c.privateKey())
		switch {
		case tbaGiven > 0 && m2m:
			bad("consumerKeyEnv", "give either the four TBA secrets or the M2M client id, certificate id and private key, not both")
		case tbaGiven > 0 && tbaGiven < 4:
			for _, s := range c.tba() {
				if !s.given() {
					bad(s.name+"Env", "required for token-based auth (or %sFile)", s.name)
				}
			}
		case m2m:
			if !c.clientID().given() {
				bad("clientIdEnv", "required for M2M auth (or clientIdFile)")
			}
			if c.CertificateID == "" {
				bad("certificateId", "required for M2M auth")
			}
			if !c.privateKey().given() {
				bad("privateKeyFile", "required for M2M auth (or privateKeyEnv)")
			}
		case tbaGiven == 0:
			bad("consumerKeyEnv", "credentials are required: the four TBA secrets (consumerKey, consumerSecret, tokenId, tokenSecret) or M2M (clientId, certificateId, privateKey)")
		}
	case "salesforce":
		fields := map[string]bool{"accountId": c.AccountID != "", "certificateId": c.CertificateID != "",
			"timeZone": c.TimeZone != "", "concurrency": c.Concurrency != 0}
		for _, s := range c.tba() {
			fields[s.name+"Env"] = s.env != ""
			fields[s.name+"File"] = s.file != ""
		}
		notFor("salesforce", fields)
		if c.InstanceURL == "" && c.BaseURL == "" {
			bad("instanceURL", "required (your My Domain URL, e.g. https://acme.my.salesforce.com)")
		} else if c.InstanceURL != "" {
			checkBaseURL(c.InstanceURL, false, func(msg string) { bad("instanceURL", "%s", msg) })
		}
		if c.LoginURL != "" {
			checkBaseURL(c.LoginURL, false, func(msg string) { bad("loginURL", "%s", msg) })
		}
		if c.APIVersion != "" && !apiVersionPat.MatchString(c.APIVersion) {
			bad("apiVersion", "%q is not an API version such as 62.0", c.APIVersion)
		}
		if emu {
			break
		}
		checkPair(c.clientID())
		checkPair(c.clientSecret())
		checkPair(c.privateKey())
		if !c.clientID().given() {
			bad("clientIdEnv", "required (the connected app's consumer key; or clientIdFile)")
		}
		secret, key := c.clientSecret().given(), c.privateKey().given()
		switch {
		case secret && key:
			bad("clientSecretEnv", "give either clientSecret (client credentials flow) or privateKey with username (JWT bearer flow), not both")
		case key && c.Username == "":
			bad("username", "required with privateKey (the JWT bearer flow runs as that user)")
		case !secret && !key:
			bad("clientSecretEnv", "a credential is required: clientSecretEnv/File (client credentials) or privateKeyFile/Env with username (JWT bearer)")
		case secret && c.Username != "":
			bad("username", "only used with privateKey (JWT bearer flow)")
		}
	}

	if len(c.RecordTypes) == 0 {
		c.RecordTypes = slices.Clone(types.def)
	}
	for i, t := range c.RecordTypes {
		if !slices.Contains(types.allowed, t) {
			bad(fmt.Sprintf("recordTypes[%d]", i), "%q is not a %s record type (known: %s)", t, c.Kind, strings.Join(types.allowed, ", "))
		}
	}
	for i, l := range c.Lists {
		switch {
		case c.Kind == "netsuite" && !savedSearchPat.MatchString(l):
			bad(fmt.Sprintf("lists[%d]", i), "%q is not a saved search id (an internal id such as 123 or a script id such as customsearch_mc_sync)", l)
		case c.Kind == "salesforce" && dev && c.BaseURL == emulatorURL && l == demoCampaignPlaceholder:
			// The emulator's demo campaign, whose id is known once it runs.
		case c.Kind == "salesforce" && !campaignPattern.MatchString(l):
			bad(fmt.Sprintf("lists[%d]", i), "%q is not a Campaign id (15 or 18 characters starting with 701)", l)
		}
	}
	customField := func(field, name string) {
		switch {
		case c.Kind == "netsuite" && !strings.HasPrefix(name, "custentity"):
			bad(field, "%q must be a custom entity field (custentity...)", name)
		case c.Kind == "salesforce" && !strings.HasSuffix(name, "__c"):
			bad(field, "%q must be a custom field (...__c)", name)
		}
	}
	switch c.OptOut.Kind {
	case "":
		c.OptOut.Kind = string(connectors.OptOutStandard)
		fallthrough
	case string(connectors.OptOutStandard):
		if c.OptOut.Field != "" {
			bad("optOut.field", "not used when kind is standard (the CRM's own opt-out field)")
		}
	case string(connectors.OptOutCustom), string(connectors.OptOutInverted):
		if c.OptOut.Field == "" {
			bad("optOut.field", "required when kind is %s", c.OptOut.Kind)
		} else {
			customField("optOut.field", c.OptOut.Field)
		}
	default:
		bad("optOut.kind", "unknown kind %q (known: standard, custom, inverted)", c.OptOut.Kind)
	}
	if c.CleanedField != "" {
		customField("cleanedField", c.CleanedField)
		if c.CleanedField == c.OptOut.Field {
			bad("cleanedField", "must differ from optOut.field: a bounce is not an opt-out")
		}
	}
	return p
}

// Settings are the integration's non-secret settings, as the workflow
// sees them. Call after Validate.
func (in *Integration) Settings() activities.Settings {
	var fm map[string]string
	if len(in.FieldMap) > 0 {
		fm = make(map[string]string, len(in.FieldMap))
		for k, v := range in.FieldMap {
			fm[k] = v
		}
	}
	return activities.Settings{
		IntegrationID:    in.ID,
		MarketingKind:    in.Marketing.Kind,
		CRMKind:          in.CRM.Kind,
		Audience:         in.Marketing.Audience,
		RecordTypes:      slices.Clone(in.CRM.RecordTypes),
		Lists:            slices.Clone(in.CRM.Lists),
		CRMToMarketing:   in.CRMToMarketing,
		OptOut:           connectors.OptOutField{Kind: connectors.OptOutKind(in.CRM.OptOut.Kind), Field: in.CRM.OptOut.Field},
		CleanedField:     in.CRM.CleanedField,
		FieldMap:         fm,
		StatusIfNew:      connectors.MemberStatus(in.StatusIfNew),
		Overlap:          in.overlap,
		PageSize:         in.PageSize,
		PagesPerActivity: in.PagesPerActivity,
	}
}

// Interval is the time between scheduled runs. Call after Validate.
func (in *Integration) Interval() time.Duration { return in.interval }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/salesforce"
)

// The systems the worker knows, by the kind a configuration names. Each
// entry is the system's package: its Config type owns the YAML keys, the
// rules and the constructor. Adding a system is one line here (and, for
// the dev mode, one in the emulators' table).
var (
	marketingKinds = map[string]func() connectors.MarketingConfig{
		"mailchimp": func() connectors.MarketingConfig { return new(mailchimp.Config) },
	}
	crmKinds = map[string]func() connectors.CRMConfig{
		"bullhorn":   func() connectors.CRMConfig { return new(bullhorn.Config) },
		"dynamics":   func() connectors.CRMConfig { return new(dynamics.Config) },
		"netsuite":   func() connectors.CRMConfig { return new(netsuite.Config) },
		"salesforce": func() connectors.CRMConfig { return new(salesforce.Config) },
	}
)

// Config is the worker's configuration file: the integrations it runs.
// It names credentials (environment variables or files) but never holds
// them, so the file can be committed and reviewed.
type Config struct {
	Integrations []Integration
	// Ledger is where the consent ledger lives; default a SQLite file.
	Ledger ledger.Settings
	// Webhooks is the webhook receiver; off unless Listen is set.
	Webhooks Webhooks
	// Codec is the payload encryption and its codec server.
	Codec CodecSettings
	// Ops is the operations listener (metrics, health); off unless Listen is set.
	Ops Ops
}

// Webhooks is the "webhooks:" block: where the receiver of the marketing
// platforms' pushed events listens, and the public address the platforms
// reach it at (given, each integration's webhook is registered at start).
type Webhooks struct {
	// Listen is the receiver's address, e.g. ":8089"; "" turns it off.
	Listen string `yaml:"listen"`
	// PublicURL is the https address the platform reaches the receiver at
	// (a reverse proxy with TLS in front of Listen), up to the path
	// /webhooks/; "" registers nothing (the webhooks are then set up by
	// hand, see the README).
	PublicURL string `yaml:"publicURL"`
}

// validate checks the block, naming the field of each problem.
func (w Webhooks) validate(c *Config, dev bool) []string {
	var p []string
	p = append(p, checkListen("webhooks.listen", w.Listen, "8089")...)
	if w.PublicURL != "" {
		var q connectors.Problems
		connectors.CheckBaseURL(&q, "publicURL", w.PublicURL, dev)
		for _, fe := range connectors.FieldErrors(q.Err()) {
			p = append(p, "webhooks."+fe.Key+": "+strings.Replace(fe.Msg, "the credentials", "the deliveries", 1))
		}
		if w.Listen == "" {
			p = append(p, "webhooks.publicURL: given without webhooks.listen, which turns the receiver on")
		}
	}
	if w.Listen != "" {
		any := false
		for _, in := range c.Integrations {
			if h, ok := in.Marketing.(connectors.WebhookConfig); ok && h.ReceivesWebhooks() {
				any = true
			}
		}
		if !any {
			p = append(p, "webhooks.listen: no integration receives webhooks (give one marketing.webhookTokenEnv or webhookTokenFile)")
		}
	}
	return p
}

// checkListen checks a listen address setting ("" is off); example is a
// port for the message.
func checkListen(key, v, example string) []string {
	if v == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(v)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || strings.ContainsAny(host, "/ ") {
		return []string{fmt.Sprintf("%s: %q is not a listen address such as :%s or 127.0.0.1:%s", key, v, example, example)}
	}
	return nil
}

// Integration is one marketing audience kept in sync with one CRM.
type Integration struct {
	// ID names the integration in schedule and workflow ids and in the
	// OptOutIntegration search attribute.
	ID string `yaml:"id"`
	// Schedule is the interval between runs, e.g. "15m"; default 15m.
	Schedule string `yaml:"schedule"`
	// MarketingKind and CRMKind name the systems; Marketing and CRM are
	// their blocks, decoded into the system's own Config.
	MarketingKind string                     `yaml:"-"`
	Marketing     connectors.MarketingConfig `yaml:"-"`
	CRMKind       string                     `yaml:"-"`
	CRM           connectors.CRMConfig       `yaml:"-"`
	// CRMToMarketing turns on the crm-to-marketing step: CRM opt-outs
	// unsubscribe the audience. Off by default, because it unsubscribes people.
	CRMToMarketing bool `yaml:"crmToMarketing"`
	// AddAbsentAsUnsubscribed: a CRM opt-out whose address the audience
	// lacks (or holds archived) is added to it as an unsubscribed member, so
	// that a later import cannot subscribe it. Default true. Mailchimp bills
	// unsubscribed members: false adds none, looks each address up first
	// (one more call per address), and unsubscribes an address that joins later.
	AddAbsentAsUnsubscribed *bool `yaml:"addAbsentAsUnsubscribed"`
	// FieldMap maps CRM fields to merge fields for the field-sync step;
	// empty turns the step off.
	FieldMap map[string]string `yaml:"fieldMap"`
	// StatusIfNew is the status of members the field-sync step adds; default subscribed.
	StatusIfNew string `yaml:"statusIfNew"`
	// Overlap is subtracted from each watermark; default 2m.
	Overlap string `yaml:"overlap"`
	// PageSize is asked of the connectors; default (and maximum) 1000.
	PageSize int `yaml:"pageSize"`
	// PagesPerActivity bounds the pages one activity call reads; default
	// 100. A call also reads no new page after two minutes.
	PagesPerActivity int `yaml:"pagesPerActivity"`

	// Parsed by Validate.
	interval, overlap time.Duration
}

// The defaults and bounds of the integration's own settings.
const (
	defaultSchedule         = 15 * time.Minute
	minSchedule             = 10 * time.Second
	maxSchedule             = 24 * time.Hour // CAN-SPAM allows ten business days; a day leaves room for failures
	defaultOverlap          = 2 * time.Minute
	maxOverlap              = 24 * time.Hour
	defaultPagesPerActivity = 100
	maxPagesPerActivity     = 100
	maxConfigFile           = 1 << 20
	maxIntegrations         = 1000
)

// ConfigError is a configuration the worker refuses: every problem, each
// a line naming its integration and key. main prints it alone, without
// the dependency-injection context around it.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string { return strings.Join(e.Problems, "\n") }

// maxProblems bounds the problems a ConfigError lists.
const maxProblems = 100

func configErr(p []string) error {
	if len(p) == 0 {
		return nil
	}
	if len(p) > maxProblems {
		p = append(p[:maxProblems:maxProblems], fmt.Sprintf("configuration: %d more problems not shown", len(p)-maxProblems))
	}
	return &ConfigError{Problems: p}
}

// LoadConfig reads, decodes and validates a configuration file. dev
// allows what only the dev mode may use ("emulator" and http:// base URLs).
func LoadConfig(path string, dev bool) (*Config, error) {
	cfg, err := ReadConfig(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(dev); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ReadConfig reads and decodes a configuration file without validating it.
func ReadConfig(path string) (*Config, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, configErr([]string{"reading configuration: " + err.Error()})
	case !fi.Mode().IsRegular():
		return nil, configErr([]string{path + ": not a regular file"})
	case fi.Size() > maxConfigFile:
		return nil, configErr([]string{fmt.Sprintf("%s: larger than %d bytes", path, maxConfigFile)})
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr([]string{"reading configuration: " + err.Error()})
	}
	return DecodeConfig(b)
}

// ParseConfig decodes and validates a configuration.
func ParseConfig(b []byte, dev bool) (*Config, error) {
	cfg, err := DecodeConfig(b)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(dev); err != nil {
		return nil, err
	}
	return cfg, nil
}

// DecodeConfig decodes a configuration strictly: an unknown key is an
// error (a misspelt "crmToMarketting" must not silently mean false), and
// each integration's marketing and crm blocks are decoded into the Config
// type of the kind they name.
func DecodeConfig(b []byte) (*Config, error) {
	if len(b) > maxConfigFile {
		return nil, configErr([]string{fmt.Sprintf("configuration: larger than %d bytes", maxConfigFile)})
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, configErr([]string{"configuration is empty"})
		}
		return nil, configErr([]string{"configuration: " + err.Error()})
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, configErr([]string{"configuration: only one YAML document is allowed (remove the second '---')"})
	}
	if len(doc.Content) == 0 {
		return nil, configErr([]string{"configuration is empty"})
	}
	if expandedSize(&doc, maxExpanded) > maxExpanded {
		return nil, configErr([]string{fmt.Sprintf("configuration: more than %d values once its YAML aliases are expanded", maxExpanded)})
	}
	var top struct {
		Integrations []yaml.Node     `yaml:"integrations"`
		Ledger       ledger.Settings `yaml:"ledger"`
		Webhooks     Webhooks        `yaml:"webhooks"`
		Codec        CodecSettings   `yaml:"codec"`
		Ops          Ops             `yaml:"ops"`
	}
	p := decodeStrict(doc.Content[0], &top, "")
	cfg := &Config{Ledger: top.Ledger, Webhooks: top.Webhooks, Codec: top.Codec, Ops: top.Ops}
	if len(top.Integrations) > maxIntegrations {
		p = append(p, fmt.Sprintf("integrations: %d integrations; at most %d per worker", len(top.Integrations), maxIntegrations))
		top.Integrations = top.Integrations[:maxIntegrations]
	}
	for i := range top.Integrations {
		in, q := decodeIntegration(&top.Integrations[i], i)
		p = append(p, q...)
		cfg.Integrations = append(cfg.Integrations, in)
	}
	if len(p) > 0 {
		return nil, configErr(p)
	}
	return cfg, nil
}

// decodeIntegration decodes the i-th integration; problems name it by id.
func decodeIntegration(n *yaml.Node, i int) (Integration, []string) {
	var raw struct {
		Integration `yaml:",inline"`
		Marketing   yaml.Node `yaml:"marketing"`
		CRM         yaml.Node `yaml:"crm"`
	}
	name := fmt.Sprintf("#%d", i+1)
	if id := scalarKey(n, "id"); id != "" {
		name = id
	}
	var p []string
	for _, q := range decodeStrict(n, &raw, "") {
		p = append(p, fmt.Sprintf("integration %q: %s", name, q))
	}
	in := raw.Integration
	side := func(key string, node *yaml.Node, known []string) (string, bool) {
		kind := scalarKey(node, "kind")
		switch {
		case node.Kind == 0:
			p = append(p, fmt.Sprintf("integration %q: %s: required (kind: %s)", name, key, strings.Join(known, ", ")))
		case kind == "":
			p = append(p, fmt.Sprintf("integration %q: %s.kind: required (%s)", name, key, strings.Join(known, ", ")))
		case !slices.Contains(known, kind):
			p = append(p, fmt.Sprintf("integration %q: %s.kind: unknown kind %q (known: %s)", name, key, kind, strings.Join(known, ", ")))
		default:
			return kind, true
		}
		return "", false
	}
	if kind, ok := side("marketing", &raw.Marketing, slices.Sorted(maps.Keys(marketingKinds))); ok {
		in.MarketingKind, in.Marketing = kind, marketingKinds[kind]()
		for _, q := range decodeStrict(&raw.Marketing, in.Marketing, "marketing", "kind") {
			p = append(p, fmt.Sprintf("integration %q: %s", name, q))
		}
	}
	if kind, ok := side("crm", &raw.CRM, slices.Sorted(maps.Keys(crmKinds))); ok {
		in.CRMKind, in.CRM = kind, crmKinds[kind]()
		for _, q := range decodeStrict(&raw.CRM, in.CRM, "crm", "kind") {
			p = append(p, fmt.Sprintf("integration %q: %s", name, q))
		}
	}
	return in, p
}

// scalarKey is the text value of key in the mapping n, or "".
func scalarKey(n *yaml.Node, key string) string {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		v := n.Content[i+1]
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if n.Content[i].Value == key && v != nil && v.Kind == yaml.ScalarNode {
			return v.Value
		}
	}
	return ""
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Validate fills in defaults and checks every integration, returning all
// the problems at once as a *ConfigError, each naming its integration and
// key. dev allows "emulator" and http:// base URLs.
func (c *Config) Validate(dev bool) error {
	var p []string
	if len(c.Integrations) == 0 {
		p = append(p, "integrations: at least one integration is required")
	}
	p = append(p, c.Ledger.Validate()...)
	p = append(p, c.Webhooks.validate(c, dev)...)
	p = append(p, c.Codec.validate()...)
	p = append(p, c.Ops.validate()...)
	seen := map[string]bool{}
	for i := range c.Integrations {
		in := &c.Integrations[i]
		name := in.ID
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		for _, e := range in.validate(dev) {
			p = append(p, fmt.Sprintf("integration %q: %s", name, e))
		}
		if in.ID != "" {
			if seen[in.ID] {
				p = append(p, fmt.Sprintf("integration %q: id: duplicate id", in.ID))
			}
			seen[in.ID] = true
		}
	}
	return configErr(p)
}

// duration parses a bounded duration setting.
func duration(p *[]string, key, v string, def, lo, hi time.Duration) time.Duration {
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		*p = append(*p, fmt.Sprintf("%s: %q is not a duration such as 15m or 1h", key, v))
	case d < lo || d > hi:
		*p = append(*p, fmt.Sprintf("%s: %q must be between %s and %s", key, v, lo, hi))
	default:
		return d
	}
	return def
}

// validate fills in in's defaults and returns its problems as "key: message".
func (in *Integration) validate(dev bool) []string {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }

	switch {
	case in.ID == "":
		bad("id", "required")
	case !idPattern.MatchString(in.ID):
		bad("id", "%q must be lower-case letters, digits and '-' (at most 63), starting with a letter or digit", in.ID)
	}
	in.interval = duration(&p, "schedule", in.Schedule, defaultSchedule, minSchedule, maxSchedule)
	in.overlap = duration(&p, "overlap", in.Overlap, defaultOverlap, 0, maxOverlap)
	switch {
	case in.PageSize == 0:
		in.PageSize = connectors.MaxPageSize
	case in.PageSize < 1 || in.PageSize > connectors.MaxPageSize:
		bad("pageSize", "%d must be between 1 and %d", in.PageSize, connectors.MaxPageSize)
	}
	switch {
	case in.PagesPerActivity == 0:
		in.PagesPerActivity = defaultPagesPerActivity
	case in.PagesPerActivity < 1 || in.PagesPerActivity > maxPagesPerActivity:
		bad("pagesPerActivity", "%d must be between 1 and %d", in.PagesPerActivity, maxPagesPerActivity)
	}
	side := func(key string, err error) {
		for _, fe := range connectors.FieldErrors(err) {
			p = append(p, join(key, fe.Key)+": "+fe.Msg)
		}
	}
	if in.Marketing == nil {
		bad("marketing", "required")
	} else {
		side("marketing", in.Marketing.Validate(dev))
		if in.StatusIfNew == "" {
			in.StatusIfNew = string(connectors.StatusSubscribed)
		}
		if err := in.Marketing.CheckStatusIfNew(connectors.MemberStatus(in.StatusIfNew)); err != nil {
			bad("statusIfNew", "%v", err)
		}
	}
	if in.CRM == nil {
		bad("crm", "required")
	} else {
		side("crm", in.CRM.Validate(dev))
	}
	tags := map[string]string{}
	for _, crmField := range sortedKeys(in.FieldMap) {
		tag := in.FieldMap[crmField]
		key := join("fieldMap", crmField)
		if in.CRM != nil {
			if err := in.CRM.CheckField(crmField); err != nil {
				bad(key, "%v", err)
				continue
			}
		}
		if in.Marketing != nil {
			if err := in.Marketing.CheckMergeField(tag); err != nil {
				bad(key, "%v", err)
				continue
			}
		}
		if tags[tag] != "" {
			bad(key, "merge field %s is also mapped from %s", tag, tags[tag])
			continue
		}
		tags[tag] = crmField
	}
	return p
}

// Settings are the integration's non-secret settings, as the workflow
// loads them at the start of a run. Call after Validate.
func (in *Integration) Settings() activities.Settings {
	scope := in.CRM.Scope()
	return activities.Settings{
		IntegrationID:    in.ID,
		MarketingKind:    in.MarketingKind,
		CRMKind:          in.CRMKind,
		Audience:         in.Marketing.Audience(),
		RecordTypes:      slices.Clone(scope.RecordTypes),
		Lists:            slices.Clone(scope.Lists),
		CRMToMarketing:   in.CRMToMarketing,
		SkipAbsent:       in.AddAbsentAsUnsubscribed != nil && !*in.AddAbsentAsUnsubscribed,
		OptOut:           scope.OptOut,
		CleanedField:     scope.CleanedField,
		FieldMap:         maps.Clone(in.FieldMap),
		StatusIfNew:      connectors.MemberStatus(in.StatusIfNew),
		Overlap:          in.overlap,
		PageSize:         in.PageSize,
		PagesPerActivity: in.PagesPerActivity,
	}
}

// Interval is the time between scheduled runs. Call after Validate.
func (in *Integration) Interval() time.Duration { return in.interval }

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

package connectors

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// MarketingConfig is one marketing platform's block of an integration's
// configuration ("marketing:"), decoded strictly from YAML into the
// platform package's own Config type. The package owns its keys, its
// defaults, every rule the platform's API would enforce later, and the
// constructor.
type MarketingConfig interface {
	// Validate fills in the defaults and returns every problem as a
	// *FieldError naming its YAML key. dev allows what only the dev mode
	// may use: the "emulator" base URL and plain http://.
	Validate(dev bool) error
	// Audience is the audience (list) the integration syncs.
	Audience() string
	// CheckMergeField says why tag cannot be a field-sync target, or nil.
	CheckMergeField(tag string) error
	// CheckStatusIfNew says why status cannot be given to members the
	// field-sync step adds, or nil.
	CheckStatusIfNew(status MemberStatus) error
	// Emulated reports whether the base URL is "emulator" (dev mode).
	Emulated() bool
	// Open reads the credentials and builds the connector. Call after Validate.
	Open(s Secrets, log *slog.Logger) (Marketing, error)
}

// CRMConfig is one CRM's block of an integration's configuration ("crm:").
// Like MarketingConfig, it is the CRM package's own type.
type CRMConfig interface {
	// Validate fills in the defaults and returns every problem as a
	// *FieldError naming its YAML key; dev as for MarketingConfig.
	Validate(dev bool) error
	// Scope is what the sync reads and writes: record types, lists, where
	// the opt-out lives and the cleaned field. Call after Validate.
	Scope() CRMScope
	// CheckField says why name cannot be read as a field-sync source, or nil.
	CheckField(name string) error
	// Emulated reports whether the base URL is "emulator" (dev mode).
	Emulated() bool
	// Open reads the credentials and builds the connector. Call after Validate.
	Open(s Secrets, log *slog.Logger) (CRM, error)
}

// CRMScope are the keys every CRM block has: which records the sync
// reads and writes, and where the opt-out and the bounce mark live. Each
// CRM's Config embeds it inline and checks it with its own ScopeRules.
type CRMScope struct {
	// RecordTypes are the record types synced, as the CRM spells them.
	RecordTypes []string `yaml:"recordTypes"`
	// Lists scope the crm-to-marketing step (and field sync) to CRM lists:
	// saved searches, campaigns, marketing lists, tearsheets.
	Lists []string `yaml:"lists"`
	// OptOut is where the CRM keeps the opt-out; default the standard field.
	OptOut OptOutField `yaml:"optOut"`
	// CleanedField, when set, is a custom boolean the sync sets on records
	// whose address the platform cleaned (a bounce, never an opt-out).
	CleanedField string `yaml:"cleanedField"`
}

// ScopeRules are one CRM's rules for its CRMScope.
type ScopeRules struct {
	// RecordTypes are the types the connector reads and writes; Default
	// those synced when none is configured.
	RecordTypes, DefaultTypes []string
	// MaxLists is how many lists one integration may scope to.
	MaxLists int
	// List says why id is not one of the CRM's list ids, or nil.
	List func(id string) error
	// CustomField says why name cannot be a custom opt-out, opt-in or
	// cleaned field, or nil.
	CustomField func(name string) error
}

// Check fills in the scope's defaults and adds its problems to p.
func (s *CRMScope) Check(p *Problems, r ScopeRules) {
	if len(s.RecordTypes) == 0 {
		s.RecordTypes = slices.Clone(r.DefaultTypes)
	}
	seen := map[string]bool{}
	for i, t := range s.RecordTypes {
		key := fmt.Sprintf("recordTypes[%d]", i)
		switch {
		case !slices.Contains(r.RecordTypes, t):
			p.Add(key, "%q is not a record type this connector syncs (known: %s)", t, strings.Join(r.RecordTypes, ", "))
		case seen[t]:
			p.Add(key, "%q is listed twice", t)
		}
		seen[t] = true
	}
	if r.MaxLists > 0 && len(s.Lists) > r.MaxLists {
		p.Add("lists", "%d lists; at most %d", len(s.Lists), r.MaxLists)
		s.Lists = s.Lists[:r.MaxLists] // the rest would only repeat the problem
	}
	lists := map[string]bool{}
	for i, l := range s.Lists {
		key := fmt.Sprintf("lists[%d]", i)
		if lists[l] {
			p.Add(key, "%q is listed twice", l)
		}
		lists[l] = true
		if r.List != nil {
			if err := r.List(l); err != nil {
				p.Add(key, "%v", err)
			}
		}
	}
	custom := func(key, name string) {
		if r.CustomField != nil {
			if err := r.CustomField(name); err != nil {
				p.Add(key, "%v", err)
			}
		}
	}
	switch s.OptOut.Kind {
	case "":
		s.OptOut.Kind = OptOutStandard
		fallthrough
	case OptOutStandard:
		if s.OptOut.Field != "" {
			p.Add("optOut.field", "not used when kind is standard (the CRM's own opt-out field)")
		}
	case OptOutCustom, OptOutInverted:
		if s.OptOut.Field == "" {
			p.Add("optOut.field", "required when kind is %s", s.OptOut.Kind)
		} else {
			custom("optOut.field", s.OptOut.Field)
		}
	default:
		p.Add("optOut.kind", "unknown kind %q (known: standard, custom, inverted)", s.OptOut.Kind)
	}
	if s.CleanedField != "" {
		custom("cleanedField", s.CleanedField)
		if strings.EqualFold(s.CleanedField, s.OptOut.Field) {
			p.Add("cleanedField", "must differ from optOut.field: a bounce is not an opt-out")
		}
	}
}

// FieldError is one problem of a configuration, under its YAML key
// relative to the block that reported it ("timeZone", "lists[2]").
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// Problems collects a block's FieldErrors.
type Problems struct{ errs []error }

// Add records a problem under key.
func (p *Problems) Add(key, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Err is every problem joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// FieldErrors flattens an error returned by Validate; an error that is not
// a FieldError becomes one with an empty key.
func FieldErrors(err error) []*FieldError {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*FieldError
		for _, e := range j.Unwrap() {
			out = append(out, FieldErrors(e)...)
		}
		return out
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return []*FieldError{fe}
	}
	return []*FieldError{{Msg: err.Error()}}
}

// EmulatorURL is the base URL that, in dev mode, stands for the system's
// in-process emulator.
const EmulatorURL = "emulator"

// CheckBaseURL checks an API address: empty (the vendor's own), an https
// URL with a host (and at most a valid port and a path), or in dev mode
// "emulator" or plain http. It reports whether u asks for the emulator.
func CheckBaseURL(p *Problems, key, u string, dev bool) bool {
	if u == "" {
		return false
	}
	if u == EmulatorURL {
		if !dev {
			p.Add(key, `"emulator" is only allowed with -dev`)
		}
		return dev
	}
	pu, err := url.Parse(u)
	switch {
	case err != nil || pu.Hostname() == "" || (pu.Scheme != "https" && pu.Scheme != "http"):
		p.Add(key, "%q is not an https URL with a host", u)
	case pu.Scheme == "http" && !dev:
		p.Add(key, "%q: plain http would send the credentials in clear; use https (http only with -dev)", u)
	case pu.User != nil || strings.ContainsAny(u, "?# \t\r\n"):
		p.Add(key, "%q: give only the scheme, host, port and path (no user, query, fragment or space)", u)
	case pu.Port() != "" && !validPort(pu.Port()):
		p.Add(key, "%q: the port must be between 1 and 65535", u)
	}
	return false
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

// SecretRef names where one credential is: an environment variable or a
// file. The configuration names credentials and never holds them.
type SecretRef struct{ Env, File string }

// Given reports whether the credential is named at all.
func (r SecretRef) Given() bool { return r.Env != "" || r.File != "" }

// Secrets reads the credentials a configuration names. key is the
// credential's YAML stem ("apiKey"), for errors that name "apiKeyEnv" or
// "apiKeyFile" and never the value.
type Secrets interface {
	Secret(key string, ref SecretRef) (string, error)
}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// CheckSecret checks that ref names one credential well; required says
// whether it must be given.
func CheckSecret(p *Problems, key string, ref SecretRef, required bool) {
	switch {
	case ref.Env != "" && ref.File != "":
		p.Add(key+"Env", "give only one of %sEnv and %sFile", key, key)
	case ref.Env != "" && !envNamePattern.MatchString(ref.Env):
		p.Add(key+"Env", "%q is not an environment variable name", ref.Env)
	case ref.File != "" && strings.TrimSpace(ref.File) != ref.File:
		p.Add(key+"File", "%q has leading or trailing spaces", ref.File)
	case required && !ref.Given():
		p.Add(key+"Env", "required (or %sFile)", key)
	}
}

// MaxSecretFile bounds a credential file: a key, token or PEM is a few
// kilobytes, and a path pointing at a device or a huge file must fail
// rather than exhaust memory.
const MaxSecretFile = 64 << 10

// ReadSecretFile reads a credential file: a regular file of at most
// MaxSecretFile bytes, trimmed. A FIFO, a device or a directory is refused
// before it is opened, so that reading can neither hang nor run away.
func ReadSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > MaxSecretFile {
		return "", fmt.Errorf("%s is larger than %d bytes: not a credential", path, MaxSecretFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > MaxSecretFile {
		return "", fmt.Errorf("%s is larger than %d bytes: not a credential", path, MaxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

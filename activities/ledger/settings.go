package ledger

import (
	"fmt"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
)

// DemoKey keys the dev mode's ledger (and `starter explain` on it) when
// $OPTOUT_LEDGER_KEY is not set. It is public: a ledger keyed with it
// protects nothing, so it is for the demo's emulated data only.
const DemoKey = "optout-sync demo ledger key: public, dev mode only"

// DefaultKeyEnv is the variable the key is read from when the file names none.
const DefaultKeyEnv = "OPTOUT_LEDGER_KEY"

// Settings are the ledger's block of the worker's configuration file
// ("ledger:"). Like every credential, the PostgreSQL URL (it may carry a
// password) and the key are named by an environment variable or a file,
// never written in the file.
type Settings struct {
	// Driver is "sqlite" (default: one file, for the demo and a single
	// worker) or "postgres" (production, several workers).
	Driver Dialect `yaml:"driver"`
	// Path is the SQLite file; default "ledger.db" in the working directory.
	Path string `yaml:"path"`
	// URLEnv / URLFile name where the PostgreSQL URL is.
	URLEnv  string `yaml:"urlEnv"`
	URLFile string `yaml:"urlFile"`
	// KeyEnv / KeyFile name where the key is (at least 16 bytes, e.g.
	// `openssl rand -hex 32`); default the variable OPTOUT_LEDGER_KEY.
	KeyEnv  string `yaml:"keyEnv"`
	KeyFile string `yaml:"keyFile"`
}

// Validate checks the settings, naming the field of each problem.
func (s Settings) Validate() []string {
	var p []string
	switch s.Driver {
	case "", SQLite:
		if s.URLEnv != "" || s.URLFile != "" {
			p = append(p, "ledger.urlEnv: only with driver postgres")
		}
	case Postgres:
		if (s.URLEnv == "") == (s.URLFile == "") {
			p = append(p, "ledger.urlEnv: driver postgres needs exactly one of urlEnv, urlFile")
		}
		if s.Path != "" {
			p = append(p, "ledger.path: only with driver sqlite")
		}
	default:
		p = append(p, fmt.Sprintf("ledger.driver: unknown driver %q (sqlite or postgres)", s.Driver))
	}
	var names connectors.Problems
	connectors.CheckSecret(&names, "url", connectors.SecretRef{Env: s.URLEnv, File: s.URLFile}, false)
	connectors.CheckSecret(&names, "key", connectors.SecretRef{Env: s.KeyEnv, File: s.KeyFile}, false)
	for _, fe := range connectors.FieldErrors(names.Err()) {
		p = append(p, "ledger."+fe.Key+": "+fe.Msg)
	}
	return p
}

// Resolve reads the URL and the key the settings name and returns the
// Config to Open. Errors name the field, never the value.
func (s Settings) Resolve(lookup func(string) (string, bool)) (Config, error) {
	read := func(field, env, file string) (string, error) {
		switch {
		case env != "":
			v, ok := lookup(env)
			if !ok || strings.TrimSpace(v) == "" {
				return "", fmt.Errorf("ledger.%sEnv: environment variable %s is not set", field, env)
			}
			return strings.TrimSpace(v), nil
		case file != "":
			v, err := connectors.ReadSecretFile(file)
			if err != nil {
				return "", fmt.Errorf("ledger.%sFile: %w", field, err)
			}
			return v, nil
		}
		return "", nil
	}
	cfg := Config{Dialect: s.Driver, DSN: s.Path}
	if cfg.Dialect == "" {
		cfg.Dialect = SQLite
	}
	if cfg.Dialect == SQLite && cfg.DSN == "" {
		cfg.DSN = "ledger.db"
	}
	if cfg.Dialect == Postgres {
		u, err := read("url", s.URLEnv, s.URLFile)
		if err != nil {
			return Config{}, err
		}
		cfg.DSN = u
	}
	keyEnv := s.KeyEnv
	if keyEnv == "" && s.KeyFile == "" {
		keyEnv = DefaultKeyEnv
	}
	key, err := read("key", keyEnv, s.KeyFile)
	if err != nil {
		return Config{}, err
	}
	if len(key) < MinKeyLen {
		return Config{}, fmt.Errorf("ledger.key: the key must be at least %d bytes (e.g. openssl rand -hex 32)", MinKeyLen)
	}
	cfg.Key = []byte(key)
	return cfg, nil
}

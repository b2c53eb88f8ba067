package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
)

// LookupEnv reads an environment variable; os.LookupEnv in production, a
// map in tests and in dev mode (where the emulators' credentials live).
type LookupEnv func(name string) (string, bool)

// envSecrets reads credentials from the environment and from files. Its
// errors name the key and the variable or path, never the value.
type envSecrets struct{ env LookupEnv }

var _ connectors.Secrets = envSecrets{}

// Secret returns the credential ref names, trimmed (a private key keeps
// its inner newlines).
func (s envSecrets) Secret(key string, ref connectors.SecretRef) (string, error) {
	switch {
	case ref.Env != "":
		v, ok := s.env(ref.Env)
		if !ok || strings.TrimSpace(v) == "" {
			return "", &connectors.FieldError{Key: key + "Env", Msg: fmt.Sprintf("environment variable %s is not set", ref.Env)}
		}
		return strings.TrimSpace(v), nil
	case ref.File != "":
		v, err := connectors.ReadSecretFile(ref.File)
		if err != nil {
			// The path is configuration, not a secret.
			return "", &connectors.FieldError{Key: key + "File", Msg: err.Error()}
		}
		return v, nil
	}
	return "", &connectors.FieldError{Key: key + "Env", Msg: "not given"}
}

// BuildRegistry reads every integration's credentials and builds its
// connectors. A missing credential is an error (the worker does not
// start); a rejected one is found only by a run (or by CheckCredentials),
// which then fails that integration alone.
func BuildRegistry(cfg *Config, env LookupEnv, log *slog.Logger) (activities.MapRegistry, error) {
	return BuildRegistryWithTokens(cfg, env, log, nil)
}

// tokenSecrets are one integration's Secrets with a durable store of the
// OAuth refresh tokens that rotate (Bullhorn's): a connector that needs
// one finds it here (bullhorn.TokenStoreProvider), keyed by the integration.
type tokenSecrets struct {
	envSecrets
	store       bullhorn.TokenStore
	integration string
}

func (s tokenSecrets) TokenStore() bullhorn.TokenStore { return s.store }
func (s tokenSecrets) Integration() string             { return s.integration }

// BuildRegistryWithTokens is BuildRegistry with tokens (the consent
// ledger) keeping refresh tokens across restarts and workers; nil keeps
// them in memory.
func BuildRegistryWithTokens(cfg *Config, env LookupEnv, log *slog.Logger, tokens bullhorn.TokenStore) (activities.MapRegistry, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := activities.MapRegistry{}
	var p []string
	s := envSecrets{env: env}
	for i := range cfg.Integrations {
		in := &cfg.Integrations[i]
		l := log.With("integration", in.ID)
		report := func(side string, err error) {
			for _, fe := range connectors.FieldErrors(err) {
				p = append(p, fmt.Sprintf("integration %q: %s: %s", in.ID, join(side, fe.Key), fe.Msg))
			}
		}
		mk, err := in.Marketing.Open(s, l)
		report("marketing", err)
		var cs connectors.Secrets = s
		if tokens != nil {
			cs = tokenSecrets{envSecrets: s, store: tokens, integration: in.ID}
		}
		crm, cerr := in.CRM.Open(cs, l)
		report("crm", cerr)
		if err == nil && cerr == nil {
			reg[in.ID] = &activities.Integration{Settings: in.Settings(), Marketing: mk, CRM: crm}
		}
	}
	if err := configErr(p); err != nil {
		return nil, err
	}
	return reg, nil
}

// CheckCredentials pings every integration's connectors that can be
// pinged and logs a warning for each that fails. It never fails the
// worker: a rejected credential fails that integration's runs, with a
// non-retryable error, and leaves the others running.
func CheckCredentials(ctx context.Context, reg activities.MapRegistry, log *slog.Logger) {
	for _, id := range sortedKeys(reg) {
		in := reg[id]
		for _, side := range []struct {
			name, kind string
			c          any
		}{{"marketing", in.Settings.MarketingKind, in.Marketing}, {"crm", in.Settings.CRMKind, in.CRM}} {
			p, ok := side.c.(connectors.Pinger)
			if !ok {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err := p.Ping(pctx)
			cancel()
			if err != nil {
				log.Warn("credential check failed; this integration's runs will fail until it is fixed",
					"integration", id, "side", side.name, "kind", side.kind, "error", err)
			}
		}
	}
}

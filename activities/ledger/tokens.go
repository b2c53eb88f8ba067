package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The ledger keeps OAuth refresh tokens that rotate (Bullhorn's may be
// single-use: each refresh answers a new one and spends the old), so that
// a restarted worker, or a second one, signs in with the newest one
// instead of a spent one. It implements bullhorn.TokenStore. A token is
// sealed with AES-256-GCM under a key derived from the ledger's (see
// aead), bound to its integration, so a copy of the database alone does
// not give it away and a row moved to another integration does not open.

// The webhook signing secret Mailchimp answers once, when the worker
// creates the webhook, is kept the same way, under a key no integration
// id can take.

const (
	tokenLabel         = "optout-sync refresh token v1"
	webhookSecretLabel = "optout-sync webhook signing secret v1"
)

// RefreshToken returns the refresh token kept for integration, or "".
func (s *SQL) RefreshToken(ctx context.Context, integration string) (string, error) {
	return s.sealedSecret(ctx, integration, tokenLabel, "the refresh token of "+strconv.Quote(integration))
}

// SaveRefreshToken keeps token for integration, replacing the one before.
func (s *SQL) SaveRefreshToken(ctx context.Context, integration, token string) error {
	return s.keepSecret(ctx, integration, token, tokenLabel, "the refresh token of "+strconv.Quote(integration))
}

// webhookSecretKey: "#" is not allowed in an integration id.
func webhookSecretKey(integration string) string { return integration + "#webhook" }

// WebhookSecret returns the webhook signing secret kept for integration, or "".
func (s *SQL) WebhookSecret(ctx context.Context, integration string) (string, error) {
	return s.sealedSecret(ctx, webhookSecretKey(integration), webhookSecretLabel, "the webhook signing secret of "+strconv.Quote(integration))
}

// SaveWebhookSecret keeps the webhook signing secret of integration.
func (s *SQL) SaveWebhookSecret(ctx context.Context, integration, secret string) error {
	return s.keepSecret(ctx, webhookSecretKey(integration), secret, webhookSecretLabel, "the webhook signing secret of "+strconv.Quote(integration))
}

// sealedSecret opens the secret kept under key, sealed with label and
// bound to key; "" when there is none. what names it in errors.
func (s *SQL) sealedSecret(ctx context.Context, key, label, what string) (string, error) {
	var sealed string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT sealed FROM refresh_tokens WHERE integration = ?`), key).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: reading %s: %w", what, err)
	}
	aead, err := s.aead(label)
	if err != nil {
		return "", err
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < aead.NonceSize() {
		return "", fmt.Errorf("ledger: %s is not sealed", what)
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(key))
	if err != nil {
		return "", fmt.Errorf("ledger: %s does not open with this ledger's key", what)
	}
	return string(plain), nil
}

// keepSecret seals value with label, bound to key, and keeps it under
// key, replacing the one before.
func (s *SQL) keepSecret(ctx context.Context, key, value, label, what string) error {
	if key == "" || value == "" {
		return fmt.Errorf("ledger: %s needs a key and a value", what)
	}
	aead, err := s.aead(label)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(value), []byte(key)))
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO refresh_tokens (integration, sealed, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (integration) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at`),
		key, sealed, micros(time.Now()))
	if err != nil {
		return fmt.Errorf("ledger: keeping %s: %w", what, err)
	}
	return nil
}

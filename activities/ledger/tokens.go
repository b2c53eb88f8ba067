package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// The ledger keeps OAuth refresh tokens that rotate (Bullhorn's may be
// single-use: each refresh answers a new one and spends the old), so that
// a restarted worker, or a second one, signs in with the newest one
// instead of a spent one. It implements bullhorn.TokenStore. A token is
// sealed with AES-256-GCM under a key derived from the ledger's (see
// aead), bound to its integration, so a copy of the database alone does
// not give it away and a row moved to another integration does not open.

const tokenLabel = "optout-sync refresh token v1"

// RefreshToken returns the refresh token kept for integration, or "".
func (s *SQL) RefreshToken(ctx context.Context, integration string) (string, error) {
	var sealed string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT sealed FROM refresh_tokens WHERE integration = ?`), integration).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: reading the refresh token of %q: %w", integration, err)
	}
	aead, err := s.aead(tokenLabel)
	if err != nil {
		return "", err
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < aead.NonceSize() {
		return "", fmt.Errorf("ledger: the refresh token of %q is not sealed", integration)
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(integration))
	if err != nil {
		return "", fmt.Errorf("ledger: the refresh token of %q does not open with this ledger's key", integration)
	}
	return string(plain), nil
}

// SaveRefreshToken keeps token for integration, replacing the one before.
func (s *SQL) SaveRefreshToken(ctx context.Context, integration, token string) error {
	if integration == "" || token == "" {
		return errors.New("ledger: a refresh token needs an integration and a value")
	}
	aead, err := s.aead(tokenLabel)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(token), []byte(integration)))
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO refresh_tokens (integration, sealed, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (integration) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at`),
		integration, sealed, micros(time.Now()))
	if err != nil {
		return fmt.Errorf("ledger: keeping the refresh token of %q: %w", integration, err)
	}
	return nil
}

package ledger_test

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
)

// The ledger is the worker's durable store of Bullhorn's refresh tokens.
var _ bullhorn.TokenStore = (*ledger.SQL)(nil)

func TestRefreshTokensAreKeptSealedPerIntegration(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		dsn := ledgertest.DSN(t, d)
		l, err := ledger.Open(t.Context(), ledger.Config{Dialect: d, DSN: dsn, Key: ledgertest.TestKey})
		require.NoError(t, err)
		ctx := t.Context()

		got, err := l.RefreshToken(ctx, "bh")
		require.NoError(t, err)
		require.Empty(t, got, "none kept yet")
		require.NoError(t, l.SaveRefreshToken(ctx, "bh", "5:first"))
		require.NoError(t, l.SaveRefreshToken(ctx, "bh", "5:second"), "a rotation replaces it")
		require.NoError(t, l.SaveRefreshToken(ctx, "other", "5:other"))
		got, err = l.RefreshToken(ctx, "bh")
		require.NoError(t, err)
		require.Equal(t, "5:second", got)
		got, err = l.RefreshToken(ctx, "other")
		require.NoError(t, err)
		require.Equal(t, "5:other", got)
		require.Error(t, l.SaveRefreshToken(ctx, "bh", ""))

		// At rest the token is sealed, not in the clear.
		driver, raw := "pgx", dsn
		if d == ledger.SQLite {
			driver, raw = "sqlite", "file:"+dsn
		}
		db, err := sql.Open(driver, raw)
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		var sealed string
		require.NoError(t, db.QueryRowContext(ctx, `SELECT sealed FROM refresh_tokens WHERE integration = 'bh'`).Scan(&sealed))
		require.NotContains(t, sealed, "second")
		// Bound to its integration: a row copied to another does not open.
		_, err = db.ExecContext(ctx, `UPDATE refresh_tokens SET sealed = (SELECT sealed FROM refresh_tokens WHERE integration = 'bh') WHERE integration = 'other'`)
		require.NoError(t, err)
		_, err = l.RefreshToken(ctx, "other")
		require.ErrorContains(t, err, "does not open")
		require.NoError(t, l.Close())

		// The same database under another key: the token does not open.
		other, err := ledger.Open(t.Context(), ledger.Config{Dialect: d, DSN: dsn, Key: []byte(strings.Repeat("k", 32))})
		require.NoError(t, err)
		t.Cleanup(func() { _ = other.Close() })
		_, err = other.RefreshToken(ctx, "bh")
		require.ErrorContains(t, err, "does not open with this ledger's key")
	})
}

// The webhook signing secret is kept like a refresh token, under a key no
// integration id can take: the two never meet.
func TestWebhookSigningSecretsAreKeptApartFromRefreshTokens(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		l := ledgertest.Open(t, d)
		ctx := t.Context()
		got, err := l.WebhookSecret(ctx, "mc")
		require.NoError(t, err)
		require.Empty(t, got)
		require.NoError(t, l.SaveRefreshToken(ctx, "mc", "token"))
		require.NoError(t, l.SaveWebhookSecret(ctx, "mc", "whsec"))
		got, err = l.WebhookSecret(ctx, "mc")
		require.NoError(t, err)
		require.Equal(t, "whsec", got)
		tok, err := l.RefreshToken(ctx, "mc")
		require.NoError(t, err)
		require.Equal(t, "token", tok)
		_, err = l.RefreshToken(ctx, "mc#webhook")
		require.ErrorContains(t, err, "does not open", "sealed for another use")
		require.Error(t, l.SaveWebhookSecret(ctx, "mc", ""))
	})
}

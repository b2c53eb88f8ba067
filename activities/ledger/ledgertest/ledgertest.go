// Package ledgertest opens fresh consent ledgers for tests, on SQLite and
// on PostgreSQL.
package ledgertest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/optoutsync/optoutsync/activities/ledger"
)

// PostgresURLEnv names the variable holding a PostgreSQL server URL for
// the tests (CI sets it; see .ci/run).
const PostgresURLEnv = "OPTOUT_TEST_POSTGRES_URL"

// TestKey is a fixed key for tests and the demo; never for real data.
var TestKey = []byte("optout-sync test key, not a secret")

// Open opens a fresh ledger for a test: a SQLite file in the test's
// temporary directory, or (dialect ledger.Postgres) a new database on the server
// named by $OPTOUT_TEST_POSTGRES_URL, dropped when the test ends. Without
// that variable a Postgres test is skipped with a message, unless $CI is
// set, where it fails: CI must run it.
func Open(t testing.TB, dialect ledger.Dialect) *ledger.SQL {
	t.Helper()
	dsn := DSN(t, dialect)
	l, err := ledger.Open(t.Context(), ledger.Config{Dialect: dialect, DSN: dsn, Key: TestKey})
	if err != nil {
		t.Fatalf("opening the %s ledger: %v", dialect, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// DSN returns where a fresh test ledger of dialect lives (see Open).
func DSN(t testing.TB, dialect ledger.Dialect) string {
	t.Helper()
	if dialect != ledger.Postgres {
		return filepath.Join(t.TempDir(), "ledger.db")
	}
	base := os.Getenv(PostgresURLEnv)
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: CI must run the ledger tests on PostgreSQL", PostgresURLEnv)
		}
		t.Skipf("no PostgreSQL: set %s (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)", PostgresURLEnv)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v", PostgresURLEnv, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "optoutsync_test_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("creating a test database on PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", PostgresURLEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

package ledger

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSQLiteCachesAreSizedPerConnection: the writer keeps a 16 MiB page
// cache, each reader SQLite's default 2 MiB (four readers of 16 MiB took
// a worker's memory past its budget), and the readers cannot write.
func TestSQLiteCachesAreSizedPerConnection(t *testing.T) {
	l, err := Open(t.Context(), Config{Dialect: SQLite, DSN: filepath.Join(t.TempDir(), "ledger.db"), Key: []byte("a test ledger key of 32 bytes!!!")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	cache := func(db *sql.DB) int {
		var n int
		require.NoError(t, db.QueryRowContext(context.Background(), `PRAGMA cache_size`).Scan(&n))
		return n
	}
	require.Equal(t, -16384, cache(l.db))
	require.Equal(t, -2000, cache(l.rd))
	_, err = l.rd.ExecContext(t.Context(), `CREATE TABLE x (y INTEGER)`)
	require.Error(t, err, "a reader is query-only")
}

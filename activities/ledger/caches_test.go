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

// TestSQLiteReadersStayOpen: lookups on every reader at once close none
// of them when they end (database/sql keeps two idle by default; a reader
// closed takes its page cache with it, to be read again by the next).
func TestSQLiteReadersStayOpen(t *testing.T) {
	l, err := Open(t.Context(), Config{Dialect: SQLite, DSN: filepath.Join(t.TempDir(), "ledger.db"), Key: []byte("a test ledger key of 32 bytes!!!")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	for range 3 {
		var held []*sql.Conn
		for range readers {
			c, err := l.rd.Conn(t.Context())
			require.NoError(t, err)
			var n int
			require.NoError(t, c.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM people`).Scan(&n))
			held = append(held, c)
		}
		for _, c := range held {
			require.NoError(t, c.Close())
		}
	}
	st := l.rd.Stats()
	require.Equal(t, readers, st.OpenConnections)
	require.Zero(t, st.MaxIdleClosed, "readers closed for being idle")
}

// TestWriteLookupsSeekTheUniqueKey: with writes_target dropped (migration
// 10), the lookup of a list of targets' writes still seeks an index on
// SQLite instead of scanning the integration's writes.
func TestWriteLookupsSeekTheUniqueKey(t *testing.T) {
	l, err := Open(t.Context(), Config{Dialect: SQLite, DSN: filepath.Join(t.TempDir(), "ledger.db"), Key: []byte("a test ledger key of 32 bytes!!!")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	rows, err := l.rd.QueryContext(t.Context(), `EXPLAIN QUERY PLAN SELECT target, MAX(at) FROM writes
		WHERE integration = ? AND system = ? AND action = ? AND result IN (?) AND target IN (?, ?) GROUP BY target`,
		"i", "mailchimp", "unsubscribe", "refused", "a", "b")
	require.NoError(t, err)
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
		plan = append(plan, detail)
	}
	require.NoError(t, rows.Err())
	require.Contains(t, plan, "SEARCH writes USING INDEX sqlite_autoindex_writes_1 (integration=? AND system=? AND target=? AND action=? AND result=?)", "%q", plan)
}

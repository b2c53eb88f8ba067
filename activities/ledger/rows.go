package ledger

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// How the ledger writes and reads many rows at once, per dialect.
//
// PostgreSQL: round trips cost, so multi-row statements of rowChunk rows
// and IN lists of inChunk items, each statement sent as text.
//
// SQLite (modernc.org/sqlite, in process): round trips are free and
// statements are not, so each shape is prepared once and run row by row
// (BenchmarkLedger, crm-to-marketing: 6,600 → see the README). A
// multi-row INSERT costs SQLite a statement journal (a copy of every page
// it changes, kept in case the statement fails halfway inside the
// transaction), a parse, and in this driver a binding quadratic in its
// parameters; a single-row statement needs none of them.

// prepared holds the statements prepared once for the life of the
// ledger, and those prepared inside the open transaction.
//
// The SQLite pool has one connection, which an open transaction holds:
// a statement first needed inside one is prepared on the transaction,
// and again on the database once it ends (afterTx), for the next ones.
type prepared struct {
	mu    sync.Mutex
	m     map[string]*sql.Stmt
	inTx  map[*sql.Tx]map[string]*sql.Stmt
	later []string
}

// stmt returns query prepared for on: the writer's transaction, or one
// of the two databases. No lock is held while a statement is prepared on
// a database: that may wait for the connection an open transaction holds.
func (s *SQL) stmt(ctx context.Context, on querier, query string) (*sql.Stmt, error) {
	tx, inTx := on.(*sql.Tx)
	p := &s.prep
	if on == querier(s.rd) && s.rd != s.db {
		p = &s.rprep
	}
	p.mu.Lock()
	st, ok := p.m[query]
	if !inTx {
		p.mu.Unlock()
		if ok {
			return st, nil
		}
		st, err := on.(*sql.DB).PrepareContext(ctx, query)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if held, ok := p.m[query]; ok { // prepared meanwhile
			_ = st.Close()
			return held, nil
		}
		if p.m == nil {
			p.m = map[string]*sql.Stmt{}
		}
		p.m[query] = st
		return st, nil
	}
	defer p.mu.Unlock()
	if st, ok := p.inTx[tx][query]; ok {
		return st, nil
	}
	if ok {
		st = tx.StmtContext(ctx, st)
	} else {
		var err error
		if st, err = tx.PrepareContext(ctx, query); err != nil {
			return nil, err
		}
		p.later = append(p.later, query)
	}
	if p.inTx == nil {
		p.inTx = map[*sql.Tx]map[string]*sql.Stmt{}
	}
	if p.inTx[tx] == nil {
		p.inTx[tx] = map[string]*sql.Stmt{}
	}
	p.inTx[tx][query] = st
	return st, nil
}

// afterTx forgets tx's statements (database/sql closes them with it) and
// prepares on the database those first needed in it.
func (s *SQL) afterTx(ctx context.Context, tx *sql.Tx) {
	p := &s.prep
	p.mu.Lock()
	delete(p.inTx, tx)
	later := p.later
	p.later = nil
	p.mu.Unlock()
	for _, q := range later {
		// A statement that fails to prepare here is prepared again when
		// next needed: this is only a saving.
		_, _ = s.stmt(ctx, s.db, q)
	}
}

// close closes the prepared statements.
func (p *prepared) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.m {
		_ = st.Close()
	}
	p.m = nil
}

// insertRows runs "head VALUES (...) tail" for n rows of width values
// each, row(i) appending row i's values to args: multi-row statements on
// PostgreSQL, one prepared single-row statement on SQLite. changed, when
// not nil, is called with each row the statement inserted or updated
// (SQLite only: PostgreSQL callers that need it use RETURNING).
func (s *SQL) insertRows(ctx context.Context, tx *sql.Tx, head, tail string, width, n int, row func(i int, args []any) []any, changed func(i int)) error {
	if n == 0 {
		return nil
	}
	if s.dialect == SQLite {
		st, err := s.stmt(ctx, tx, head+" VALUES ("+placeholders(width)+") "+tail)
		if err != nil {
			return err
		}
		args := make([]any, 0, width)
		// A row takes microseconds: the context is checked between rows,
		// not watched during each, which costs the driver a goroutine.
		rowCtx := context.WithoutCancel(ctx)
		for i := range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			res, err := st.ExecContext(rowCtx, row(i, args[:0])...)
			if err != nil {
				return err
			}
			if changed != nil {
				if k, err := res.RowsAffected(); err != nil {
					return err
				} else if k > 0 {
					changed(i)
				}
			}
		}
		return nil
	}
	for start := 0; start < n; start += s.rowChunk() {
		end := min(start+s.rowChunk(), n)
		args := make([]any, 0, (end-start)*width)
		for i := start; i < end; i++ {
			args = row(i, args)
		}
		if _, err := tx.ExecContext(ctx, s.q(head+" VALUES "+values(end-start, width)+" "+tail), args...); err != nil {
			return err
		}
	}
	return nil
}

// querier is a database or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// inList is the marker a statement given to queryIn and execIn holds
// where the IN list goes: "person IN " + inList.
const inList = "(/*in*/)"

// inStatement is query with its IN list for n items and the arguments:
// args, then the items. On SQLite a short list is padded with "", which
// names no row (no key the ledger stores is empty), so that one prepared
// statement serves every chunk.
func (s *SQL) inStatement(query string, args []any, items []string) (string, []any) {
	n := len(items)
	if s.dialect == SQLite {
		n = s.inChunk()
	}
	all := make([]any, 0, len(args)+n)
	all = append(all, args...)
	for _, it := range items {
		all = append(all, it)
	}
	for len(all) < len(args)+n {
		all = append(all, "")
	}
	return strings.Replace(query, inList, "("+placeholders(n)+")", 1), all
}

// queryIn runs query over items in chunks of inChunk, each chunk's items
// in the query's IN list (see inList) after args, and calls scan on each
// row it returns. db is the database or the transaction to read in.
func (s *SQL) queryIn(ctx context.Context, db querier, query string, args []any, items []string, scan func(*sql.Rows) error) error {
	for start := 0; start < len(items); start += s.inChunk() {
		q, all := s.inStatement(query, args, items[start:min(start+s.inChunk(), len(items))])
		var rows *sql.Rows
		var err error
		if s.dialect == SQLite {
			var st *sql.Stmt
			if st, err = s.stmt(ctx, db, q); err != nil {
				return err
			}
			rows, err = st.QueryContext(ctx, all...)
		} else {
			rows, err = db.QueryContext(ctx, s.q(q), all...)
		}
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// execIn runs statement over items in chunks, as queryIn does.
func (s *SQL) execIn(ctx context.Context, tx *sql.Tx, statement string, args []any, items []string) error {
	for start := 0; start < len(items); start += s.inChunk() {
		q, all := s.inStatement(statement, args, items[start:min(start+s.inChunk(), len(items))])
		var err error
		if s.dialect == SQLite {
			var st *sql.Stmt
			if st, err = s.stmt(ctx, tx, q); err == nil {
				_, err = st.ExecContext(ctx, all...)
			}
		} else {
			_, err = tx.ExecContext(ctx, s.q(q), all...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

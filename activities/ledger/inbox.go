package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Stash inserts the events not taken before and forgets applied ones past
// their time. An entry without a delivery key is refused: it could not be
// told from its own retry.
func (s *SQL) Stash(ctx context.Context, integration string, es []InboxEntry, forgetBefore time.Time) (int, error) {
	for _, e := range es {
		if e.Delivery == "" {
			return 0, fmt.Errorf("ledger: stashing events of %s: an event without a delivery key", integration)
		}
	}
	added := 0
	now := micros(time.Now())
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM inbox WHERE integration = ? AND applied_at > 0 AND applied_at < ?`),
			integration, micros(forgetBefore)); err != nil {
			return err
		}
		const perStatement = 50 // the SQLite driver binds in quadratic time
		for start := 0; start < len(es); start += perStatement {
			part := es[start:min(start+perStatement, len(es))]
			args := make([]any, 0, 4*len(part))
			for _, e := range part {
				args = append(args, integration, e.Delivery, e.Data, now)
			}
			res, err := tx.ExecContext(ctx, s.q(`INSERT INTO inbox (integration, delivery, data, received_at) VALUES `+
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", len(part)), ", ")+
				` ON CONFLICT (integration, delivery) DO NOTHING`), args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			added += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: stashing events of %s: %w", integration, err)
	}
	return added, nil
}

// Inbox returns the oldest events of integration not yet applied.
func (s *SQL) Inbox(ctx context.Context, integration string, limit int) ([]InboxEntry, int, error) {
	var total int
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM inbox WHERE integration = ? AND applied_at = 0`),
		integration).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("ledger: reading the inbox of %s: %w", integration, err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, delivery, data FROM inbox
		WHERE integration = ? AND applied_at = 0 ORDER BY id LIMIT `+strconv.Itoa(max(limit, 0))), integration)
	if err != nil {
		return nil, 0, fmt.Errorf("ledger: reading the inbox of %s: %w", integration, err)
	}
	defer rows.Close()
	var out []InboxEntry
	for rows.Next() {
		var e InboxEntry
		if err := rows.Scan(&e.ID, &e.Delivery, &e.Data); err != nil {
			return nil, 0, fmt.Errorf("ledger: reading the inbox of %s: %w", integration, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("ledger: reading the inbox of %s: %w", integration, err)
	}
	return out, total, nil
}

// MarkApplied marks the events with ids applied at at.
func (s *SQL) MarkApplied(ctx context.Context, integration string, ids []int64, at time.Time) error {
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		for start := 0; start < len(ids); start += s.inChunk() {
			part := ids[start:min(start+s.inChunk(), len(ids))]
			args := []any{micros(at), integration}
			for _, id := range part {
				args = append(args, id)
			}
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE inbox SET applied_at = ? WHERE integration = ? AND id IN (`+
				placeholders(len(part))+`)`), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: marking events of %s applied: %w", integration, err)
	}
	return nil
}

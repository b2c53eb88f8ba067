package ledger

import (
	"context"
	"errors"
	"fmt"
)

// RecordRun records r as its integration's last successful run, unless a
// later one is already recorded (two workers finishing runs out of order).
func (s *SQL) RecordRun(ctx context.Context, r Run) error {
	if r.Integration == "" || r.FinishedAt.IsZero() {
		return errors.New("ledger: a run needs an integration and the time it finished")
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO last_runs (integration, finished_at, workflow_id, run_id) VALUES (?, ?, ?, ?)
		ON CONFLICT (integration) DO UPDATE SET
			finished_at = excluded.finished_at, workflow_id = excluded.workflow_id, run_id = excluded.run_id
		WHERE excluded.finished_at > last_runs.finished_at`),
		r.Integration, micros(r.FinishedAt), r.WorkflowID, r.RunID)
	if err != nil {
		return fmt.Errorf("ledger: recording the run of %q: %w", r.Integration, err)
	}
	return nil
}

// LastRuns returns the last successful run of each integration that had one.
func (s *SQL) LastRuns(ctx context.Context) (map[string]Run, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT integration, finished_at, workflow_id, run_id FROM last_runs`)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading the last runs: %w", err)
	}
	defer rows.Close()
	out := map[string]Run{}
	for rows.Next() {
		var r Run
		var at int64
		if err := rows.Scan(&r.Integration, &at, &r.WorkflowID, &r.RunID); err != nil {
			return nil, fmt.Errorf("ledger: reading the last runs: %w", err)
		}
		r.FinishedAt = fromMicros(at)
		out[r.Integration] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: reading the last runs: %w", err)
	}
	return out, nil
}

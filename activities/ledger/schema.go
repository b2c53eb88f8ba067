package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// migrations are applied in order, each once, in its own transaction;
// schema_migrations records which ran. Never edit one that has shipped:
// add the next. "{{id}}" is the dialect's auto-increment key.
var migrations = []string{
	// 1: the append-only record, and the state derived from it.
	`CREATE TABLE observations (
		id          {{id}},
		integration TEXT    NOT NULL,
		system      TEXT    NOT NULL,
		subject     TEXT    NOT NULL,
		person      TEXT    NOT NULL,
		contact     TEXT    NOT NULL DEFAULT '',
		kind        TEXT    NOT NULL,
		via         TEXT    NOT NULL DEFAULT '',
		episode     BIGINT  NOT NULL DEFAULT 0,
		occurred_at BIGINT  NOT NULL,
		observed_at BIGINT  NOT NULL,
		workflow_id TEXT    NOT NULL,
		run_id      TEXT    NOT NULL,
		UNIQUE (integration, system, subject, person, kind, episode, occurred_at)
	);
	CREATE INDEX observations_person ON observations (person, integration);

	CREATE TABLE writes (
		id          {{id}},
		integration TEXT   NOT NULL,
		system      TEXT   NOT NULL,
		target      TEXT   NOT NULL,
		person      TEXT   NOT NULL,
		action      TEXT   NOT NULL,
		result      TEXT   NOT NULL,
		code        TEXT   NOT NULL DEFAULT '',
		rule        TEXT   NOT NULL DEFAULT '',
		cause       TEXT   NOT NULL DEFAULT '',
		at          BIGINT NOT NULL,
		workflow_id TEXT   NOT NULL,
		run_id      TEXT   NOT NULL,
		UNIQUE (integration, system, target, action, result, run_id)
	);
	CREATE INDEX writes_person ON writes (person, integration);
	CREATE INDEX writes_target ON writes (integration, system, action, target);

	CREATE TABLE people (
		integration         TEXT    NOT NULL,
		person              TEXT    NOT NULL,
		opted_out           INTEGER NOT NULL DEFAULT 0,
		opt_out_kind        TEXT    NOT NULL DEFAULT '',
		opt_out_source      TEXT    NOT NULL DEFAULT '',
		via                 TEXT    NOT NULL DEFAULT '',
		opt_out_at          BIGINT  NOT NULL DEFAULT 0,
		marketing_opt_out_at BIGINT NOT NULL DEFAULT 0,
		resubscribed_at     BIGINT  NOT NULL DEFAULT 0,
		marketing_status    TEXT    NOT NULL DEFAULT '',
		marketing_status_at BIGINT  NOT NULL DEFAULT 0,
		PRIMARY KEY (integration, person)
	);

	CREATE TABLE contacts (
		integration TEXT   NOT NULL,
		system      TEXT   NOT NULL,
		contact     TEXT   NOT NULL,
		person      TEXT   NOT NULL,
		first_seen  BIGINT NOT NULL,
		PRIMARY KEY (integration, system, contact, person)
	);
	CREATE INDEX contacts_person ON contacts (integration, person);

	CREATE TABLE pending (
		integration TEXT   NOT NULL,
		person      TEXT   NOT NULL,
		system      TEXT   NOT NULL,
		since       BIGINT NOT NULL,
		PRIMARY KEY (integration, person, system)
	);
	CREATE INDEX pending_since ON pending (integration, since);`,

	// 2: the audience as field sync needs it, so that it looks members up
	// in the ledger instead of with one platform call each.
	`CREATE TABLE members (
		integration TEXT   NOT NULL,
		audience    TEXT   NOT NULL,
		person      TEXT   NOT NULL,
		status      TEXT   NOT NULL,
		fields      TEXT   NOT NULL DEFAULT '',
		changed_at  BIGINT NOT NULL,
		PRIMARY KEY (integration, audience, person)
	);`,

	// 3: the earlier addresses of a person who changed address (a
	// marketing upemail), sealed, so that an opt-out of the new address
	// reaches the CRM records of the earlier ones.
	`CREATE TABLE aliases (
		integration TEXT   NOT NULL,
		person      TEXT   NOT NULL,
		alias       TEXT   NOT NULL,
		sealed      TEXT   NOT NULL,
		changed_at  BIGINT NOT NULL,
		PRIMARY KEY (integration, person, alias)
	);`,

	// 4: OAuth refresh tokens that rotate (Bullhorn's), one per
	// integration, sealed under a key derived from the ledger's, so that a
	// restarted or second worker signs in with the newest one.
	`CREATE TABLE refresh_tokens (
		integration TEXT   NOT NULL PRIMARY KEY,
		sealed      TEXT   NOT NULL,
		updated_at  BIGINT NOT NULL
	);`,

	// 5: the audience mirror looks a page's contacts up by contact id
	// without the system: without this index each page scanned every
	// contact of the integration, and a first mirror grew with the square
	// of the audience.
	`CREATE INDEX contacts_contact ON contacts (integration, contact);`,

	// 6: pushed events (webhooks) taken and not yet applied, and those
	// applied lately, so that the platform's retries of a delivery are
	// applied once. The events workflow keeps none of them in its own
	// state, which would outgrow a payload in a long CRM outage.
	`CREATE TABLE inbox (
		id          {{id}},
		integration TEXT   NOT NULL,
		delivery    TEXT   NOT NULL,
		data        TEXT   NOT NULL,
		received_at BIGINT NOT NULL,
		applied_at  BIGINT NOT NULL DEFAULT 0,
		UNIQUE (integration, delivery)
	);
	CREATE INDEX inbox_pending ON inbox (integration, applied_at, id);`,

	// 7: the last successful run of each integration, whichever worker ran
	// it, so that every worker's metrics say how long ago it was.
	`CREATE TABLE last_runs (
		integration TEXT   NOT NULL PRIMARY KEY,
		finished_at BIGINT NOT NULL,
		workflow_id TEXT   NOT NULL,
		run_id      TEXT   NOT NULL
	);`,

	// 8, 9: migration 5's index did not do its work on SQLite: without
	// statistics its planner preferred the primary key, which covers the
	// lookup but seeks by the integration alone, so each page of the
	// audience mirror still read every contact of the integration (1.5 s
	// of a 20,000-member mirror's 2.4 s of CPU). This index covers the
	// lookup by contact, and SQLite takes it; it replaces 5's.
	`CREATE INDEX contacts_contact_person ON contacts (integration, contact, person);`,
	`DROP INDEX contacts_contact;`,

	// 10: writes_target repeats the unique key's columns in another order,
	// and the lookups it was for (integration, system, action and a list of
	// targets, all equalities) seek the unique key as well: one B-tree
	// less to update for every write recorded.
	`DROP INDEX writes_target;`,

	// 11: the audience a person's marketing status was learnt in. A status
	// learnt in one audience says nothing of another: an integration
	// pointed at a new audience must not skip a CRM opt-out because the
	// person unsubscribed from, or was absent from, the old one. '' (rows
	// from before) is taken as the integration's audience.
	`ALTER TABLE people ADD COLUMN marketing_audience TEXT NOT NULL DEFAULT '';`,

	// 12: which audience a marketing observation was made in, and which an
	// unsubscribe was written to (or not written to): the proof names it.
	`ALTER TABLE observations ADD COLUMN audience TEXT NOT NULL DEFAULT '';
	ALTER TABLE writes ADD COLUMN audience TEXT NOT NULL DEFAULT '';`,
}

// migrate brings the schema up to date. Two processes starting at once
// are serialised: PostgreSQL by an advisory lock, SQLite by its write lock.
func (s *SQL) migrate(ctx context.Context) error {
	lock := func(tx *sql.Tx) error {
		if s.dialect != Postgres {
			return nil
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7370021)`)
		return err
	}
	// Under the lock too: two CREATE TABLE IF NOT EXISTS at once collide in
	// PostgreSQL's catalog (duplicate key in pg_type_typname_nsp_index).
	if err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := lock(tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at BIGINT  NOT NULL)`)
		return err
	}); err != nil {
		return fmt.Errorf("ledger: creating schema_migrations: %w", err)
	}
	for i, m := range migrations {
		version := i + 1
		err := s.tx(ctx, func(tx *sql.Tx) error {
			if err := lock(tx); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range strings.Split(s.dialectSQL(m), ";") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%w in %q", err, strings.TrimSpace(stmt))
				}
			}
			_, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), version, micros(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("ledger: migration %d: %w", version, err)
		}
	}
	return nil
}

func (s *SQL) dialectSQL(stmt string) string {
	id := "INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.dialect == Postgres {
		id = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
	}
	return strings.ReplaceAll(stmt, "{{id}}", id)
}

package ledger

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver

	"github.com/optoutsync/optoutsync/connectors"
)

// Dialect is the database behind the ledger.
type Dialect string

// The dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Config opens a ledger.
type Config struct {
	// Dialect is SQLite (default) or Postgres.
	Dialect Dialect
	// DSN is the SQLite file path, or the PostgreSQL URL
	// ("postgres://user@host:5432/db?sslmode=disable").
	DSN string
	// Key is the secret the person hashes are keyed with: at least 16
	// bytes, the same on every worker and for the whole life of the ledger
	// (a new key makes every earlier row unmatchable).
	Key []byte
}

// SQL is the Ledger over database/sql.
type SQL struct {
	db      *sql.DB
	dialect Dialect
	key     []byte
}

var _ Ledger = (*SQL)(nil)

// MinKeyLen is the shortest key Open accepts.
const MinKeyLen = 16

// Open connects, applies the migrations and returns the ledger.
func Open(ctx context.Context, cfg Config) (*SQL, error) {
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("ledger: the key must be at least %d bytes", MinKeyLen)
	}
	if cfg.Dialect == "" {
		cfg.Dialect = SQLite
	}
	var (
		db  *sql.DB
		err error
	)
	switch cfg.Dialect {
	case SQLite:
		if cfg.DSN == "" {
			return nil, errors.New("ledger: the SQLite file path is required")
		}
		// WAL lets readers (explain) run beside a writer; the busy timeout
		// and immediate transactions let two workers share one file.
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(15000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Set("_txlock", "immediate")
		db, err = sql.Open("sqlite", "file:"+cfg.DSN+"?"+q.Encode())
		if err == nil {
			// One connection: SQLite has one writer anyway, and this keeps
			// a transaction from waiting on another of the same process.
			db.SetMaxOpenConns(1)
		}
	case Postgres:
		if cfg.DSN == "" {
			return nil, errors.New("ledger: the PostgreSQL URL is required")
		}
		db, err = sql.Open("pgx", cfg.DSN)
		if err == nil {
			db.SetMaxOpenConns(10)
		}
	default:
		return nil, fmt.Errorf("ledger: unknown dialect %q (sqlite or postgres)", cfg.Dialect)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	s := &SQL{db: db, dialect: cfg.Dialect, key: slices.Clone(cfg.Key)}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: connecting to %s: %w", cfg.Dialect, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Person is the keyed hash that names the person with this address in
// the ledger: HMAC-SHA256 of the normalised address, hex. It is "" for
// something that is not an address.
func (s *SQL) Person(email string) string {
	norm, ok := connectors.NormalizeEmail(email)
	if !ok {
		return ""
	}
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(norm))
	return hex.EncodeToString(m.Sum(nil))
}

// Ping checks the database answers.
func (s *SQL) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Close closes the database.
func (s *SQL) Close() error { return s.db.Close() }

// q rewrites "?" placeholders into the dialect's.
func (s *SQL) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *SQL) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// Observe records observations and updates each person's state, in one
// transaction.
func (s *SQL) Observe(ctx context.Context, obs []Observation) ([]Seen, error) {
	out := make([]Seen, len(obs))
	if len(obs) == 0 {
		return out, nil
	}
	now := micros(time.Now())
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for i, o := range obs {
			if o.Integration == "" || o.Person == "" || o.Subject == "" || o.System == "" {
				return fmt.Errorf("ledger: observation %d lacks integration, system, subject or person", i)
			}
			at, first, isNew, err := s.insertObservation(ctx, tx, o, "", now)
			if err != nil {
				return err
			}
			out[i] = Seen{At: fromMicros(at), New: isNew}
			if err := s.apply(ctx, tx, o.Integration, o.Person, o.System, o.Kind, "", at); err != nil {
				return err
			}
			if o.PendingFor != "" {
				if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO pending (integration, person, system, since) VALUES (?, ?, ?, ?)
					ON CONFLICT (integration, person, system) DO NOTHING`), o.Integration, o.Person, o.PendingFor, first); err != nil {
					return err
				}
			}
			if o.Contact == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO contacts (integration, system, contact, person, first_seen) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (integration, system, contact, person) DO NOTHING`), o.Integration, o.System, o.Contact, o.Person, now); err != nil {
				return err
			}
			if !o.Kind.OptOut() || !o.Kind.Marketing() {
				continue
			}
			// The contact's other addresses (an address changed before the
			// opt-out) are the same person: they are suppressed too.
			others, err := s.contactPeople(ctx, tx, o.Integration, o.System, o.Contact, o.Person)
			if err != nil {
				return err
			}
			for _, p := range others {
				linked := o
				linked.Person = p
				if _, _, _, err := s.insertObservation(ctx, tx, linked, "contact", now); err != nil {
					return err
				}
				if err := s.apply(ctx, tx, o.Integration, p, o.System, o.Kind, "contact", at); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: recording observations: %w", err)
	}
	return out, nil
}

// insertObservation appends o unless it is already there and returns the
// time it counts from (the vendor's, or the first sighting) and the first
// sighting, and whether it is new.
func (s *SQL) insertObservation(ctx context.Context, tx *sql.Tx, o Observation, via string, now int64) (at, first int64, isNew bool, err error) {
	occurred := micros(o.OccurredAt)
	r, err := tx.ExecContext(ctx, s.q(`INSERT INTO observations
		(integration, system, subject, person, contact, kind, via, occurred_at, observed_at, workflow_id, run_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (integration, system, subject, person, kind, occurred_at) DO NOTHING`),
		o.Integration, o.System, o.Subject, o.Person, o.Contact, string(o.Kind), via, occurred, now, o.WorkflowID, o.RunID)
	if err != nil {
		return 0, 0, false, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, 0, false, err
	}
	if err := tx.QueryRowContext(ctx, s.q(`SELECT observed_at FROM observations
		WHERE integration = ? AND system = ? AND subject = ? AND person = ? AND kind = ? AND occurred_at = ?`),
		o.Integration, o.System, o.Subject, o.Person, string(o.Kind), occurred).Scan(&first); err != nil {
		return 0, 0, false, err
	}
	if occurred != 0 {
		return occurred, first, n > 0, nil
	}
	return first, first, n > 0, nil
}

// apply updates a person's state with one observation that counts from at.
// The rule: the latest choice wins, and an opt-out wins a tie.
func (s *SQL) apply(ctx context.Context, tx *sql.Tx, integration, person, system string, kind Kind, via string, at int64) error {
	p, err := s.person(ctx, tx, integration, person)
	if err != nil {
		return err
	}
	optOutAt, resubAt := micros(p.OptOutAt), micros(p.ResubscribedAt)
	switch {
	case kind.OptOut():
		if at >= resubAt {
			if !p.OptedOut || at >= optOutAt {
				p.OptOutKind, p.OptOutSource, p.Via, p.OptOutAt = kind, system, via, fromMicros(at)
			}
			p.OptedOut = true
		}
	case kind == KindResubscribe:
		if at > optOutAt && at > resubAt {
			p.OptedOut, p.ResubscribedAt = false, fromMicros(at)
		}
	}
	if kind.Marketing() && at >= micros(p.MarketingStatusAt) {
		p.MarketingStatus, p.MarketingStatusAt = marketingStatus(kind), fromMicros(at)
	}
	return s.savePerson(ctx, tx, integration, p)
}

func marketingStatus(k Kind) string {
	switch k {
	case KindCleaned:
		return string(connectors.StatusCleaned)
	case KindResubscribe:
		return string(connectors.StatusSubscribed)
	}
	return string(connectors.StatusUnsubscribed)
}

func (s *SQL) contactPeople(ctx context.Context, tx *sql.Tx, integration, system, contact, except string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, s.q(`SELECT person FROM contacts WHERE integration = ? AND system = ? AND contact = ? AND person <> ? ORDER BY person`),
		integration, system, contact, except)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

const personColumns = `person, opted_out, opt_out_kind, opt_out_source, via, opt_out_at, resubscribed_at, marketing_status, marketing_status_at`

type scanner interface{ Scan(...any) error }

func scanPerson(r scanner) (Person, error) {
	var (
		p                        Person
		optedOut                 int
		kind                     string
		optOutAt, resubAt, mktAt int64
	)
	err := r.Scan(&p.Person, &optedOut, &kind, &p.OptOutSource, &p.Via, &optOutAt, &resubAt, &p.MarketingStatus, &mktAt)
	p.OptedOut, p.OptOutKind = optedOut != 0, Kind(kind)
	p.OptOutAt, p.ResubscribedAt, p.MarketingStatusAt = fromMicros(optOutAt), fromMicros(resubAt), fromMicros(mktAt)
	return p, err
}

func (s *SQL) person(ctx context.Context, tx *sql.Tx, integration, person string) (Person, error) {
	p, err := scanPerson(tx.QueryRowContext(ctx, s.q(`SELECT `+personColumns+` FROM people WHERE integration = ? AND person = ?`), integration, person))
	if errors.Is(err, sql.ErrNoRows) {
		return Person{Person: person}, nil
	}
	return p, err
}

func (s *SQL) savePerson(ctx context.Context, tx *sql.Tx, integration string, p Person) error {
	optedOut := 0
	if p.OptedOut {
		optedOut = 1
	}
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO people (integration, `+personColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (integration, person) DO UPDATE SET
			opted_out = excluded.opted_out, opt_out_kind = excluded.opt_out_kind,
			opt_out_source = excluded.opt_out_source, via = excluded.via, opt_out_at = excluded.opt_out_at,
			resubscribed_at = excluded.resubscribed_at, marketing_status = excluded.marketing_status,
			marketing_status_at = excluded.marketing_status_at`),
		integration, p.Person, optedOut, string(p.OptOutKind), p.OptOutSource, p.Via, micros(p.OptOutAt),
		micros(p.ResubscribedAt), p.MarketingStatus, micros(p.MarketingStatusAt))
	return err
}

// RecordWrites appends writes (a write already recorded by the same run
// is not recorded twice, so a retried activity adds nothing) and settles
// the pending opt-outs of each person and target system unless one of
// their writes in ws failed.
func (s *SQL) RecordWrites(ctx context.Context, ws []Write) error {
	if len(ws) == 0 {
		return nil
	}
	now := micros(time.Now())
	type key struct{ integration, person, system string }
	failed := map[key]bool{}
	var order []key
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for i, w := range ws {
			if w.Integration == "" || w.Person == "" || w.Target == "" || w.System == "" {
				return fmt.Errorf("ledger: write %d lacks integration, system, target or person", i)
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO writes
				(integration, system, target, person, action, result, code, rule, cause, at, workflow_id, run_id)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (integration, system, target, action, result, run_id) DO NOTHING`),
				w.Integration, w.System, w.Target, w.Person, string(w.Action), string(w.Result), w.Code, w.Rule, w.Cause,
				now, w.WorkflowID, w.RunID); err != nil {
				return err
			}
			k := key{w.Integration, w.Person, w.System}
			if _, seen := failed[k]; !seen {
				order = append(order, k)
			}
			failed[k] = failed[k] || !w.Result.Settles()
			if w.Action == ActionUnsubscribe && (w.Result == ResultWritten || w.Result == ResultAdded || w.Result == ResultAlready) {
				p, err := s.person(ctx, tx, w.Integration, w.Person)
				if err != nil {
					return err
				}
				if now >= micros(p.MarketingStatusAt) {
					p.MarketingStatus, p.MarketingStatusAt = string(connectors.StatusUnsubscribed), fromMicros(now)
					if err := s.savePerson(ctx, tx, w.Integration, p); err != nil {
						return err
					}
				}
			}
		}
		for _, k := range order {
			var err error
			if failed[k] {
				_, err = tx.ExecContext(ctx, s.q(`INSERT INTO pending (integration, person, system, since) VALUES (?, ?, ?, ?)
					ON CONFLICT (integration, person, system) DO NOTHING`), k.integration, k.person, k.system, now)
			} else {
				_, err = tx.ExecContext(ctx, s.q(`DELETE FROM pending WHERE integration = ? AND person = ? AND system = ?`),
					k.integration, k.person, k.system)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: recording writes: %w", err)
	}
	return nil
}

// inChunk bounds the IN lists of one query.
const inChunk = 500

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// People returns the known state of each of persons.
func (s *SQL) People(ctx context.Context, integration string, persons []string) (map[string]Person, error) {
	out := map[string]Person{}
	for start := 0; start < len(persons); start += inChunk {
		part := persons[start:min(start+inChunk, len(persons))]
		args := []any{integration}
		for _, p := range part {
			args = append(args, p)
		}
		rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+personColumns+` FROM people WHERE integration = ? AND person IN (`+placeholders(len(part))+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading people: %w", err)
		}
		for rows.Next() {
			p, err := scanPerson(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: reading people: %w", err)
			}
			out[p.Person] = p
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("ledger: reading people: %w", err)
		}
	}
	return out, nil
}

// Written returns the targets with a recorded write of action with one of results.
func (s *SQL) Written(ctx context.Context, integration, system string, action Action, targets []string, results ...Result) (map[string]bool, error) {
	out := map[string]bool{}
	if len(results) == 0 {
		return out, nil
	}
	for start := 0; start < len(targets); start += inChunk {
		part := targets[start:min(start+inChunk, len(targets))]
		args := []any{integration, system, string(action)}
		for _, r := range results {
			args = append(args, string(r))
		}
		for _, t := range part {
			args = append(args, t)
		}
		rows, err := s.db.QueryContext(ctx, s.q(`SELECT DISTINCT target FROM writes
			WHERE integration = ? AND system = ? AND action = ? AND result IN (`+placeholders(len(results))+`)
			AND target IN (`+placeholders(len(part))+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading writes: %w", err)
		}
		for rows.Next() {
			var t string
			if err := rows.Scan(&t); err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: reading writes: %w", err)
			}
			out[t] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("ledger: reading writes: %w", err)
		}
	}
	return out, nil
}

// Attempted returns the targets with a write of action recorded by runID.
func (s *SQL) Attempted(ctx context.Context, integration, system string, action Action, runID string, targets []string) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(targets); start += inChunk {
		part := targets[start:min(start+inChunk, len(targets))]
		args := []any{integration, system, string(action), runID}
		for _, t := range part {
			args = append(args, t)
		}
		rows, err := s.db.QueryContext(ctx, s.q(`SELECT DISTINCT target FROM writes
			WHERE integration = ? AND system = ? AND action = ? AND run_id = ? AND target IN (`+placeholders(len(part))+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading writes: %w", err)
		}
		for rows.Next() {
			var t string
			if err := rows.Scan(&t); err != nil {
				rows.Close()
				return nil, fmt.Errorf("ledger: reading writes: %w", err)
			}
			out[t] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("ledger: reading writes: %w", err)
		}
	}
	return out, nil
}

// LinkContacts remembers which marketing contact each person's address
// belongs to. A person linked to a contact whose standing choice is a
// marketing opt-out is suppressed as well.
func (s *SQL) LinkContacts(ctx context.Context, integration, system string, links map[string]string) error {
	if len(links) == 0 {
		return nil
	}
	now := micros(time.Now())
	persons := make([]string, 0, len(links))
	for p := range links {
		persons = append(persons, p)
	}
	slices.Sort(persons)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, p := range persons {
			if links[p] == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO contacts (integration, system, contact, person, first_seen) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (integration, system, contact, person) DO NOTHING`), integration, system, links[p], p, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: linking contacts: %w", err)
	}
	return nil
}

// OldestPending returns the first sighting of the oldest opt-out not yet
// propagated.
func (s *SQL) OldestPending(ctx context.Context, integration string) (time.Time, bool, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT MIN(since) FROM pending WHERE integration = ?`), integration).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("ledger: reading pending opt-outs: %w", err)
	}
	if !v.Valid {
		return time.Time{}, false, nil
	}
	return fromMicros(v.Int64), true, nil
}

// History returns every observation and write about person, oldest first.
func (s *SQL) History(ctx context.Context, person string) ([]Entry, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`
		SELECT observed_at, integration, 'observed', system, subject, kind, '', '', '', '', via, occurred_at, workflow_id, run_id, id
		  FROM observations WHERE person = ?
		UNION ALL
		SELECT at, integration, 'wrote', system, target, action, result, code, rule, cause, '', 0, workflow_id, run_id, id
		  FROM writes WHERE person = ?
		ORDER BY 1, 3, 15`), person, person)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading history: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var (
			e            Entry
			at, occurred int64
			id           int64
		)
		if err := rows.Scan(&at, &e.Integration, &e.Type, &e.System, &e.Subject, &e.Kind, &e.Result, &e.Code, &e.Rule,
			&e.Cause, &e.Via, &occurred, &e.WorkflowID, &e.RunID, &id); err != nil {
			return nil, fmt.Errorf("ledger: reading history: %w", err)
		}
		e.At, e.OccurredAt = fromMicros(at), fromMicros(occurred)
		out = append(out, e)
	}
	return out, rows.Err()
}

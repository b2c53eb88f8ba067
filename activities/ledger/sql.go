package ledger

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

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
	db *sql.DB
	// rd reads outside transactions: on SQLite a pool of its own, whose
	// connections read (WAL) while the one writer writes; on PostgreSQL
	// the same pool as db.
	rd      *sql.DB
	dialect Dialect
	key     []byte
	prep    prepared // statements prepared on db
	rprep   prepared // and on rd
	// stopCheckpoints stops the SQLite checkpoints (see checkpoints).
	stopCheckpoints func()
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
		db        *sql.DB
		readerDSN string
		err       error
	)
	switch cfg.Dialect {
	case SQLite:
		if cfg.DSN == "" {
			return nil, errors.New("ledger: the SQLite file path is required")
		}
		// The demo's data directory may not exist yet on a first start.
		if err := os.MkdirAll(filepath.Dir(cfg.DSN), 0o755); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		// WAL lets readers (explain) run beside a writer; the busy timeout
		// and immediate transactions let two workers share one file.
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(15000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		// The writer's cache holds the indexes a page of opt-outs touches
		// (their keys are hashes: every page touches most of their leaves),
		// up to 16 MiB; checkpoints run beside it (see checkpoints), the
		// writer's own only past 10,000 pages of WAL.
		q.Add("_pragma", "wal_autocheckpoint(10000)")
		q.Set("_txlock", "immediate")
		// The readers' caches are SQLite's default size, 2 MiB each: given
		// the writer's 16 MiB, four of them took a worker through a
		// 1,000,000-member first run from 73 MB to 165 MB (WorkerRSS), and
		// their lookups read what the OS caches anyway.
		rq, _ := url.ParseQuery(q.Encode()) // a copy: Values share their slices
		rq.Add("_pragma", "cache_size(-2000)")
		rq.Add("_pragma", "query_only(1)")
		readerDSN = "file:" + cfg.DSN + "?" + rq.Encode()
		q.Add("_pragma", "cache_size(-16384)")
		cfg.DSN = "file:" + cfg.DSN + "?" + q.Encode()
		db, err = sql.Open("sqlite", cfg.DSN)
		if err == nil {
			// One connection: SQLite has one writer anyway, and this keeps
			// a transaction from waiting on another of the same process.
			db.SetMaxOpenConns(1)
		}
	case Postgres:
		if cfg.DSN == "" {
			return nil, errors.New("ledger: the PostgreSQL URL is required")
		}
		var pc *pgx.ConnConfig
		if pc, err = pgx.ParseConfig(cfg.DSN); err == nil {
			// The ledger's statements are few and batched, each with its
			// own number of rows: preparing and caching every shape costs
			// more than it saves (measured: twice the throughput without).
			if !strings.Contains(cfg.DSN, "default_query_exec_mode") {
				pc.DefaultQueryExecMode = pgx.QueryExecModeExec
			}
			db = sql.OpenDB(stdlib.GetConnector(*pc))
			db.SetMaxOpenConns(10)
		}
	default:
		return nil, fmt.Errorf("ledger: unknown dialect %q (sqlite or postgres)", cfg.Dialect)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	s := &SQL{db: db, rd: db, dialect: cfg.Dialect, key: slices.Clone(cfg.Key)}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: connecting to %s: %w", cfg.Dialect, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if s.dialect == SQLite {
		// Readers beside the writer: a step's lookups for one page run
		// while another page's observations and writes are committed.
		if s.rd, err = sql.Open("sqlite", readerDSN); err != nil {
			db.Close()
			return nil, fmt.Errorf("ledger: %w", err)
		}
		// All of them stay open: database/sql keeps two idle by default,
		// and a third or fourth reader closed after its lookup took its
		// page cache with it, to be opened and read into again by the next
		// (TestSQLiteReadersStayOpen).
		s.rd.SetMaxOpenConns(readers)
		s.rd.SetMaxIdleConns(readers)
		s.stopCheckpoints = s.checkpoints()
	}
	return s, nil
}

// checkpoints copies the WAL into the database every checkpointEvery,
// from a reader connection, so that the writer's commits rarely pay for
// it (a checkpoint ends in an fsync, which a busy disk makes slow); the
// writer still checkpoints itself past wal_autocheckpoint pages, should
// this fall behind. It returns the function that stops it.
func (s *SQL) checkpoints() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// PASSIVE never waits for the writer or the readers; what
				// it cannot copy now is copied next time.
				_, _ = s.rd.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// checkpointEvery is how often the WAL is copied into the database.
const checkpointEvery = time.Second

// readers is how many SQLite connections read at once beside the writer.
const readers = 4

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
func (s *SQL) Close() error {
	if s.stopCheckpoints != nil {
		s.stopCheckpoints()
	}
	s.prep.close()
	s.rprep.close()
	if s.rd != s.db {
		_ = s.rd.Close()
	}
	return s.db.Close()
}

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
	return s.writeTx(ctx, "", fn)
}

// writeTx runs fn in a transaction that, for a non-empty integration, holds
// the integration's write lock: each person's state is read, updated and
// written back, and two runs of one integration at once must not lose each
// other's update. SQLite's immediate transactions already serialise
// writers; PostgreSQL takes a transaction-scoped advisory lock.
func (s *SQL) writeTx(ctx context.Context, integration string, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if integration != "" && s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7370022, hashtext($1))`, integration); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	defer s.afterTx(context.WithoutCancel(ctx), tx)
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
// transaction and a handful of statements whatever the batch size. The
// observations of one call belong to one integration.
func (s *SQL) Observe(ctx context.Context, obs []Observation) ([]Seen, error) {
	out := make([]Seen, len(obs))
	if len(obs) == 0 {
		return out, nil
	}
	integration := obs[0].Integration
	for i, o := range obs {
		if o.Integration == "" || o.Person == "" || o.Subject == "" || o.System == "" {
			return nil, fmt.Errorf("ledger: observation %d lacks integration, system, subject or person", i)
		}
		if o.Integration != integration {
			return nil, fmt.Errorf("ledger: observation %d is of integration %q, not %q: one integration per call", i, o.Integration, integration)
		}
	}
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		now := micros(time.Now()) // under the lock: sightings are in commit order
		inserted, err := s.insertObservations(ctx, tx, obs, "", now)
		if err != nil {
			return err
		}
		first, err := s.firstSightings(ctx, tx, integration, obs, inserted, now)
		if err != nil {
			return err
		}
		// The contacts: remembered, and a marketing opt-out of a contact
		// reaches every address the ledger knows for it (an address changed
		// before the opt-out is the same person).
		links := map[string]map[string]string{} // system -> person -> contact
		var optOutContacts []contactKey
		for _, o := range obs {
			if o.Contact == "" {
				continue
			}
			if links[o.System] == nil {
				links[o.System] = map[string]string{}
			}
			links[o.System][o.Person] = o.Contact
			if o.Kind.OptOut() && o.Kind.Marketing() {
				optOutContacts = append(optOutContacts, contactKey{o.System, o.Contact})
			}
		}
		for _, system := range slices.Sorted(maps.Keys(links)) {
			if err := s.insertContacts(ctx, tx, integration, system, links[system], now); err != nil {
				return err
			}
		}
		linked, err := s.contactPersons(ctx, tx, integration, optOutContacts)
		if err != nil {
			return err
		}
		persons := map[string]bool{}
		for _, o := range obs {
			persons[o.Person] = true
			for _, p := range linked[contactKey{o.System, o.Contact}] {
				persons[p] = true
			}
		}
		people, err := peopleIn(ctx, tx, s, integration, slices.Sorted(maps.Keys(persons)))
		if err != nil {
			return err
		}
		before := maps.Clone(people)
		var viaContact []Observation
		pending := map[string]map[string]int64{} // system -> person -> first sighting
		for i, o := range obs {
			k := keyOf(o)
			at := micros(o.OccurredAt)
			if at == 0 {
				at = first[k]
			}
			out[i] = Seen{At: fromMicros(at), New: inserted[k]}
			apply(people, o.Person, o.System, o.Audience, o.Kind, "", at)
			if o.PendingFor != "" {
				if pending[o.PendingFor] == nil {
					pending[o.PendingFor] = map[string]int64{}
				}
				if f, ok := pending[o.PendingFor][o.Person]; !ok || first[k] < f {
					pending[o.PendingFor][o.Person] = first[k]
				}
			}
			if !o.Kind.OptOut() || !o.Kind.Marketing() {
				continue
			}
			for _, p := range linked[contactKey{o.System, o.Contact}] {
				if p == o.Person {
					continue
				}
				apply(people, p, o.System, o.Audience, o.Kind, "contact", at)
				l := o
				l.Person, l.PendingFor = p, ""
				viaContact = append(viaContact, l)
			}
		}
		if _, err := s.insertObservations(ctx, tx, viaContact, "contact", now); err != nil {
			return err
		}
		// Only the people this batch changed (or made known) are written:
		// a list read again every run observes what the ledger holds.
		changed := map[string]Person{}
		for person, p := range people {
			if b, known := before[person]; !known || !slices.Equal(personRow(b), personRow(p)) {
				changed[person] = p
			}
		}
		if err := s.savePeople(ctx, tx, integration, changed); err != nil {
			return err
		}
		for i, o := range obs {
			out[i].State = people[o.Person]
		}
		for _, system := range slices.Sorted(maps.Keys(pending)) {
			if err := s.insertPending(ctx, tx, integration, system, pending[system]); err != nil {
				return err
			}
		}
		// A re-subscribe is the person's later choice: an earlier opt-out
		// still waiting to be written is no longer to be written.
		var resubscribed []string
		for _, o := range obs {
			if o.Kind == KindResubscribe && !people[o.Person].OptedOut {
				resubscribed = append(resubscribed, o.Person)
			}
		}
		return s.execIn(ctx, tx, `DELETE FROM pending WHERE integration = ? AND person IN `+inList,
			[]any{integration}, slices.Compact(slices.Sorted(slices.Values(resubscribed))))
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: recording observations: %w", err)
	}
	return out, nil
}

// obsKey is an observation's identity: the table's unique key.
type obsKey struct {
	system, subject, person, kind string
	episode, occurred             int64
}

func keyOf(o Observation) obsKey {
	return obsKey{o.System, o.Subject, o.Person, string(o.Kind), micros(o.Episode), micros(o.OccurredAt)}
}

type contactKey struct{ system, contact string }

// rowChunk bounds the rows of one multi-row statement: 400 on PostgreSQL,
// where fewer round trips win; 50 on SQLite, whose Go driver matches each
// parameter to its argument by a linear scan, quadratic in the parameters
// of a statement (measured with BenchmarkLedger: 7,200 → 10,200
// opt-outs/s). Both stay far under the databases' parameter limits.
func (s *SQL) rowChunk() int {
	if s.dialect == SQLite {
		return 50
	}
	return 400
}

// values is "(?, ?, ...), (...)" for n rows of width parameters.
func values(n, width int) string {
	row := "(" + placeholders(width) + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

// insertObservations appends obs, skipping those already recorded, and
// returns the ones it added.
func (s *SQL) insertObservations(ctx context.Context, tx *sql.Tx, obs []Observation, via string, now int64) (map[obsKey]bool, error) {
	added := map[obsKey]bool{}
	const head = `INSERT INTO observations
			(integration, system, subject, person, contact, kind, via, episode, occurred_at, observed_at, workflow_id, run_id, audience)`
	const tail = `ON CONFLICT (integration, system, subject, person, kind, episode, occurred_at) DO NOTHING`
	if s.dialect == SQLite {
		// Row by row, each row's count of changes says whether it was new:
		// RETURNING would cost SQLite a statement journal per row.
		err := s.insertRows(ctx, tx, head, tail, 13, len(obs), func(i int, args []any) []any {
			o := obs[i]
			return append(args, o.Integration, o.System, o.Subject, o.Person, o.Contact, string(o.Kind), via,
				micros(o.Episode), micros(o.OccurredAt), now, o.WorkflowID, o.RunID, o.Audience)
		}, func(i int) { added[keyOf(obs[i])] = true })
		return added, err
	}
	for start := 0; start < len(obs); start += s.rowChunk() {
		part := obs[start:min(start+s.rowChunk(), len(obs))]
		args := make([]any, 0, len(part)*13)
		for _, o := range part {
			args = append(args, o.Integration, o.System, o.Subject, o.Person, o.Contact, string(o.Kind), via,
				micros(o.Episode), micros(o.OccurredAt), now, o.WorkflowID, o.RunID, o.Audience)
		}
		rows, err := tx.QueryContext(ctx, s.q(head+` VALUES `+values(len(part), 13)+` `+tail+`
			RETURNING system, subject, person, kind, episode, occurred_at`), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k obsKey
			if err := rows.Scan(&k.system, &k.subject, &k.person, &k.kind, &k.episode, &k.occurred); err != nil {
				rows.Close()
				return nil, err
			}
			added[k] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return added, nil
}

// firstSightings returns when each observation was first recorded: now
// for those this transaction inserted, as read for the others.
func (s *SQL) firstSightings(ctx context.Context, tx *sql.Tx, integration string, obs []Observation, inserted map[obsKey]bool, now int64) (map[obsKey]int64, error) {
	out := map[obsKey]int64{}
	want := map[obsKey]bool{}
	persons := map[string]bool{}
	for _, o := range obs {
		if k := keyOf(o); inserted[k] {
			out[k] = now
		} else {
			want[k] = true
			persons[o.Person] = true
		}
	}
	err := s.queryIn(ctx, tx, `SELECT system, subject, person, kind, episode, occurred_at, observed_at FROM observations
			WHERE integration = ? AND person IN `+inList, []any{integration}, slices.Sorted(maps.Keys(persons)), func(rows *sql.Rows) error {
		var k obsKey
		var at int64
		if err := rows.Scan(&k.system, &k.subject, &k.person, &k.kind, &k.episode, &k.occurred, &at); err != nil {
			return err
		}
		if want[k] {
			out[k] = at
		}
		return nil
	})
	return out, err
}

func (s *SQL) insertContacts(ctx context.Context, tx *sql.Tx, integration, system string, links map[string]string, now int64) error {
	persons := slices.Sorted(maps.Keys(links))
	return s.insertRows(ctx, tx, `INSERT INTO contacts (integration, system, contact, person, first_seen)`,
		`ON CONFLICT (integration, system, contact, person) DO NOTHING`, 5, len(persons), func(i int, args []any) []any {
			return append(args, integration, system, links[persons[i]], persons[i], now)
		}, nil)
}

// contactPersons returns every person the ledger knows for each contact.
func (s *SQL) contactPersons(ctx context.Context, tx *sql.Tx, integration string, contacts []contactKey) (map[contactKey][]string, error) {
	out := map[contactKey][]string{}
	bySystem := map[string][]string{}
	for _, c := range contacts {
		bySystem[c.system] = append(bySystem[c.system], c.contact)
	}
	for _, system := range slices.Sorted(maps.Keys(bySystem)) {
		ids := slices.Compact(slices.Sorted(slices.Values(bySystem[system])))
		err := s.queryIn(ctx, tx, `SELECT contact, person FROM contacts
				WHERE integration = ? AND system = ? AND contact IN `+inList+` ORDER BY contact, person`,
			[]any{integration, system}, ids, func(rows *sql.Rows) error {
				var c, p string
				if err := rows.Scan(&c, &p); err != nil {
					return err
				}
				k := contactKey{system, c}
				out[k] = append(out[k], p)
				return nil
			})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *SQL) insertPending(ctx context.Context, tx *sql.Tx, integration, system string, since map[string]int64) error {
	persons := slices.Sorted(maps.Keys(since))
	return s.insertRows(ctx, tx, `INSERT INTO pending (integration, person, system, since)`,
		`ON CONFLICT (integration, person, system) DO NOTHING`, 4, len(persons), func(i int, args []any) []any {
			return append(args, integration, persons[i], system, since[persons[i]])
		}, nil)
}

// apply updates a person's state (in people, created if new) with one
// observation that counts from at. The rule: the latest choice wins, and
// an opt-out wins a tie.
func apply(people map[string]Person, person, system, audience string, kind Kind, via string, at int64) {
	p, ok := people[person]
	if !ok {
		p = Person{Person: person}
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
		if kind.Marketing() && at >= micros(p.MarketingOptOutAt) {
			p.MarketingOptOutAt = fromMicros(at)
		}
	case kind == KindResubscribe:
		if at > resubAt {
			p.ResubscribedAt = fromMicros(at)
		}
		if at > optOutAt {
			p.OptedOut = false
		}
	}
	if kind.Marketing() && (at >= micros(p.MarketingStatusAt) || !p.InAudience(audience)) {
		// A status learnt in another audience is replaced whatever its time.
		p.MarketingStatus, p.MarketingStatusAt, p.MarketingAudience = marketingStatus(kind), fromMicros(at), audience
	}
	people[person] = p
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

const personColumns = `person, opted_out, opt_out_kind, opt_out_source, via, opt_out_at, marketing_opt_out_at, resubscribed_at, marketing_status, marketing_status_at, marketing_audience`

type scanner interface{ Scan(...any) error }

func scanPerson(r scanner) (Person, error) {
	var (
		p                                     Person
		optedOut                              int
		kind                                  string
		optOutAt, mktOptOutAt, resubAt, mktAt int64
	)
	err := r.Scan(&p.Person, &optedOut, &kind, &p.OptOutSource, &p.Via, &optOutAt, &mktOptOutAt, &resubAt, &p.MarketingStatus, &mktAt, &p.MarketingAudience)
	p.OptedOut, p.OptOutKind = optedOut != 0, Kind(kind)
	p.OptOutAt, p.MarketingOptOutAt = fromMicros(optOutAt), fromMicros(mktOptOutAt)
	p.ResubscribedAt, p.MarketingStatusAt = fromMicros(resubAt), fromMicros(mktAt)
	return p, err
}

// peopleIn reads the known state of persons.
func peopleIn(ctx context.Context, db querier, s *SQL, integration string, persons []string) (map[string]Person, error) {
	out := map[string]Person{}
	err := s.queryIn(ctx, db, `SELECT `+personColumns+` FROM people WHERE integration = ? AND person IN `+inList,
		[]any{integration}, persons, func(rows *sql.Rows) error {
			p, err := scanPerson(rows)
			if err != nil {
				return err
			}
			out[p.Person] = p
			return nil
		})
	return out, err
}

// savePeople writes people's states back.
func (s *SQL) savePeople(ctx context.Context, tx *sql.Tx, integration string, people map[string]Person) error {
	persons := slices.Sorted(maps.Keys(people))
	return s.insertRows(ctx, tx, `INSERT INTO people (integration, `+personColumns+`)`, `ON CONFLICT (integration, person) DO UPDATE SET
				opted_out = excluded.opted_out, opt_out_kind = excluded.opt_out_kind,
				opt_out_source = excluded.opt_out_source, via = excluded.via, opt_out_at = excluded.opt_out_at,
				marketing_opt_out_at = excluded.marketing_opt_out_at, resubscribed_at = excluded.resubscribed_at, marketing_status = excluded.marketing_status,
				marketing_status_at = excluded.marketing_status_at, marketing_audience = excluded.marketing_audience`, 12, len(persons), func(i int, args []any) []any {
		return append(append(args, integration), personRow(people[persons[i]])...)
	}, nil)
}

// personRow is p as the columns personColumns names.
func personRow(p Person) []any {
	optedOut := 0
	if p.OptedOut {
		optedOut = 1
	}
	return []any{p.Person, optedOut, string(p.OptOutKind), p.OptOutSource, p.Via, micros(p.OptOutAt),
		micros(p.MarketingOptOutAt), micros(p.ResubscribedAt), p.MarketingStatus, micros(p.MarketingStatusAt), p.MarketingAudience}
}

// RecordWrites appends writes (a write already recorded by the same run
// is not recorded twice, so a retried activity adds nothing) and settles
// the pending opt-outs of each person and target system unless one of
// their writes in ws failed. The writes of one call belong to one
// integration.
func (s *SQL) RecordWrites(ctx context.Context, ws []Write) error {
	if len(ws) == 0 {
		return nil
	}
	integration := ws[0].Integration
	for i, w := range ws {
		if w.Integration == "" || w.Person == "" || w.Target == "" || w.System == "" {
			return fmt.Errorf("ledger: write %d lacks integration, system, target or person", i)
		}
		if w.Integration != integration {
			return fmt.Errorf("ledger: write %d is of integration %q, not %q: one integration per call", i, w.Integration, integration)
		}
	}
	failed := map[string]map[string]bool{} // system -> person -> any write failed
	status := map[string]string{}          // person -> marketing status our write left
	audience := map[string]string{}        // person -> the audience it was left in
	from := map[string]int64{}             // person -> the latest StatusFrom of its writes

	for _, w := range ws {
		if failed[w.System] == nil {
			failed[w.System] = map[string]bool{}
		}
		failed[w.System][w.Person] = failed[w.System][w.Person] || !w.Result.Settles()
		if w.Action == ActionUnsubscribe && micros(w.StatusFrom) > from[w.Person] {
			from[w.Person] = micros(w.StatusFrom)
		}
		switch {
		case w.Action != ActionUnsubscribe:
		case w.Result == ResultWritten || w.Result == ResultAlready:
			status[w.Person] = string(connectors.StatusUnsubscribed)
		case w.Result == ResultRefused && status[w.Person] == "":
			// Refused for good (forgotten, fake, compliance): a later
			// subscribe of the address is the person's new choice.
			status[w.Person] = MarketingRefused
		case w.Result == ResultAbsent && status[w.Person] == "":
			status[w.Person] = MarketingAbsent
		}
		if status[w.Person] != "" && audience[w.Person] == "" {
			audience[w.Person] = w.Audience
		}
	}
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		now := micros(time.Now())
		if err := s.insertRows(ctx, tx, `INSERT INTO writes
				(integration, system, target, person, action, result, code, rule, cause, at, workflow_id, run_id, audience)`,
			`ON CONFLICT (integration, system, target, action, result, run_id) DO NOTHING`, 13, len(ws), func(i int, args []any) []any {
				w := ws[i]
				return append(args, w.Integration, w.System, w.Target, w.Person, string(w.Action), string(w.Result), w.Code, w.Rule, w.Cause,
					now, w.WorkflowID, w.RunID, w.Audience)
			}, nil); err != nil {
			return err
		}
		// Dated a minute early: the member's last_changed comes from the
		// vendor's clock, in whole seconds, and a re-subscribe just after
		// our write must still read as newer; never earlier than a write's
		// StatusFrom, though. A status known as of later is kept.
		at := now - ownWriteSkew.Microseconds()
		persons := slices.Sorted(maps.Keys(status))
		// A status of another audience is replaced whatever its time.
		if err := s.insertRows(ctx, tx, `INSERT INTO people (integration, person, marketing_status, marketing_status_at, marketing_audience)`,
			`ON CONFLICT (integration, person) DO UPDATE SET
				marketing_status = excluded.marketing_status, marketing_status_at = excluded.marketing_status_at,
				marketing_audience = excluded.marketing_audience
			WHERE excluded.marketing_status_at >= people.marketing_status_at
				OR people.marketing_audience NOT IN ('', excluded.marketing_audience)`, 5, len(persons), func(i int, args []any) []any {
				return append(args, integration, persons[i], status[persons[i]], max(at, from[persons[i]]), audience[persons[i]])
			}, nil); err != nil {
			return err
		}
		for _, system := range slices.Sorted(maps.Keys(failed)) {
			keep := map[string]int64{}
			var settled []string
			for person, f := range failed[system] {
				if f {
					keep[person] = now
				} else {
					settled = append(settled, person)
				}
			}
			if err := s.insertPending(ctx, tx, integration, system, keep); err != nil {
				return err
			}
			slices.Sort(settled)
			if err := s.execIn(ctx, tx, `DELETE FROM pending WHERE integration = ? AND system = ? AND person IN `+inList,
				[]any{integration, system}, settled); err != nil {
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
func (s *SQL) inChunk() int {
	if s.dialect == SQLite {
		return 100
	}
	return 500
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// People returns the known state of each of persons.
func (s *SQL) People(ctx context.Context, integration string, persons []string) (map[string]Person, error) {
	out, err := peopleIn(ctx, s.rd, s, integration, persons)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading people: %w", err)
	}
	return out, nil
}

// Written returns the targets with a recorded write of action with one of
// results, and the time of the latest.
func (s *SQL) Written(ctx context.Context, integration, system string, action Action, targets []string, results ...Result) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if len(results) == 0 {
		return out, nil
	}
	args := []any{integration, system, string(action)}
	for _, r := range results {
		args = append(args, string(r))
	}
	err := s.latestWrites(ctx, `result IN (`+placeholders(len(results))+`)`, args, targets, func(t string, at int64) {
		out[t] = fromMicros(at)
	})
	return out, err
}

// latestWrites calls found with each of targets that has a write matching
// integration, system, action and cond (args fill them in that order),
// and the time of its latest such write.
func (s *SQL) latestWrites(ctx context.Context, cond string, args []any, targets []string, found func(target string, at int64)) error {
	err := s.queryIn(ctx, s.rd, `SELECT target, MAX(at) FROM writes
			WHERE integration = ? AND system = ? AND action = ? AND `+cond+` AND target IN `+inList+`
			GROUP BY target`, args, targets, func(rows *sql.Rows) error {
		var t string
		var at int64
		if err := rows.Scan(&t, &at); err != nil {
			return err
		}
		found(t, at)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: reading writes: %w", err)
	}
	return nil
}

// Records returns what the ledger knows of each CRM record's opt-out.
func (s *SQL) Records(ctx context.Context, integration, system string, targets []string) (map[string]RecordHistory, error) {
	written, err := s.Written(ctx, integration, system, ActionCRMOptOut, targets, ResultWritten)
	if err != nil {
		return nil, err
	}
	out := map[string]RecordHistory{}
	for t, at := range written {
		out[t] = RecordHistory{LastWritten: at}
	}
	err = s.queryIn(ctx, s.rd, `SELECT subject, kind, MAX(observed_at) FROM observations
			WHERE integration = ? AND system = ? AND kind IN (?, ?) AND subject IN `+inList+`
			GROUP BY subject, kind`, []any{integration, system, string(KindCRMOptOut), string(KindCRMOptIn)}, targets, func(rows *sql.Rows) error {
		var subject, kind string
		var at int64
		if err := rows.Scan(&subject, &kind, &at); err != nil {
			return err
		}
		h := out[subject]
		if Kind(kind) == KindCRMOptIn {
			h.LastCleared = fromMicros(at)
		} else {
			h.LastOptOutSeen = fromMicros(at)
		}
		out[subject] = h
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading records: %w", err)
	}
	return out, nil
}

// Settle ends the pending opt-outs of persons towards system.
func (s *SQL) Settle(ctx context.Context, integration, system string, persons []string) error {
	persons = slices.Compact(slices.Sorted(slices.Values(persons)))
	if len(persons) == 0 {
		return nil
	}
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		return s.execIn(ctx, tx, `DELETE FROM pending WHERE integration = ? AND system = ? AND person IN `+inList,
			[]any{integration, system}, persons)
	})
	if err != nil {
		return fmt.Errorf("ledger: settling pending opt-outs: %w", err)
	}
	return nil
}

// Attempted returns the targets with a write of action recorded by runID.
func (s *SQL) Attempted(ctx context.Context, integration, system string, action Action, runID string, targets []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.latestWrites(ctx, `run_id = ?`, []any{integration, system, string(action), runID}, targets, func(t string, _ int64) {
		out[t] = true
	})
	return out, err
}

// LinkContacts remembers which marketing contact each person's address
// belongs to.
func (s *SQL) LinkContacts(ctx context.Context, integration, system string, links map[string]string) error {
	clean := map[string]string{}
	for p, c := range links {
		if p != "" && c != "" {
			clean[p] = c
		}
	}
	if len(clean) == 0 {
		return nil
	}
	now := micros(time.Now())
	if err := s.tx(ctx, func(tx *sql.Tx) error {
		return s.insertContacts(ctx, tx, integration, system, clean, now)
	}); err != nil {
		return fmt.Errorf("ledger: linking contacts: %w", err)
	}
	return nil
}

// OldestPending returns the first sighting of the oldest opt-out not yet
// propagated.
func (s *SQL) OldestPending(ctx context.Context, integration string) (time.Time, bool, error) {
	var v sql.NullInt64
	if err := s.rd.QueryRowContext(ctx, s.q(`SELECT MIN(since) FROM pending WHERE integration = ?`), integration).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("ledger: reading pending opt-outs: %w", err)
	}
	if !v.Valid {
		return time.Time{}, false, nil
	}
	return fromMicros(v.Int64), true, nil
}

// History returns every observation and write about person, oldest first.
func (s *SQL) History(ctx context.Context, person string) ([]Entry, error) {
	rows, err := s.rd.QueryContext(ctx, s.q(`
		SELECT observed_at, integration, 'observed', system, subject, kind, '', '', '', '', via, occurred_at, workflow_id, run_id, audience, id
		  FROM observations WHERE person = ?
		UNION ALL
		SELECT at, integration, 'wrote', system, target, action, result, code, rule, cause, '', 0, workflow_id, run_id, audience, id
		  FROM writes WHERE person = ?
		ORDER BY 1, 3, 16`), person, person)
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
			&e.Cause, &e.Via, &occurred, &e.WorkflowID, &e.RunID, &e.Audience, &id); err != nil {
			return nil, fmt.Errorf("ledger: reading history: %w", err)
		}
		e.At, e.OccurredAt = fromMicros(at), fromMicros(occurred)
		out = append(out, e)
	}
	return out, rows.Err()
}

// SizeBytes is the space the ledger's database takes: SQLite's pages in
// use, PostgreSQL's whole database.
func (s *SQL) SizeBytes(ctx context.Context) (int64, error) {
	var n int64
	var err error
	if s.dialect == Postgres {
		err = s.db.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
	} else {
		err = s.db.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("ledger: reading its size: %w", err)
	}
	return n, nil
}

// SaveMembers upserts members; a state older than the one held is ignored.
func (s *SQL) SaveMembers(ctx context.Context, integration, audience string, ms []MemberState) error {
	latest := map[string]MemberState{}
	for _, m := range ms {
		if m.Person == "" {
			continue
		}
		if held, ok := latest[m.Person]; !ok || !m.Changed.Before(held.Changed) {
			latest[m.Person] = m
		}
	}
	persons := slices.Sorted(maps.Keys(latest))
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		if err := s.insertRows(ctx, tx, `INSERT INTO members (integration, audience, person, status, fields, changed_at)`,
			`ON CONFLICT (integration, audience, person) DO UPDATE SET
					status = excluded.status, fields = excluded.fields, changed_at = excluded.changed_at
				WHERE excluded.changed_at >= members.changed_at`, 6, len(persons), func(i int, args []any) []any {
				m := latest[persons[i]]
				return append(args, integration, audience, persons[i], m.Status, m.Fields, micros(m.Changed))
			}, nil); err != nil {
			return err
		}
		// The contacts' earlier addresses left the audience with the person.
		var withContact, contacts []string
		for _, p := range persons {
			if c := latest[p].Contact; c != "" {
				withContact, contacts = append(withContact, p), append(contacts, c)
			}
		}
		// A contact's other addresses are marked moved only when their
		// state is no newer than the one saved now: the audience is read
		// in parts at once, and a later address may be saved first.
		if s.dialect == SQLite {
			return s.markMoved(ctx, tx, integration, audience, latest, withContact, contacts)
		}
		size := s.inChunk() / 2
		for start := 0; start < len(withContact); start += size {
			ps, cs := withContact[start:min(start+size, len(withContact))], contacts[start:min(start+size, len(contacts))]
			args := []any{StatusMoved}
			for i, c := range cs {
				args = append(args, c, micros(latest[ps[i]].Changed))
			}
			args = append(args, integration, integration, audience)
			for _, p := range persons {
				args = append(args, p)
			}
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE members SET status = ?
				FROM contacts c, (VALUES `+strings.TrimSuffix(strings.Repeat("(?, CAST(? AS BIGINT)), ", len(cs)), ", ")+`) AS v (contact, changed)
				WHERE c.integration = ? AND c.contact = v.contact
				AND members.integration = ? AND members.audience = ? AND members.person = c.person
				AND members.changed_at <= v.changed AND members.person NOT IN (`+placeholders(len(persons))+`)`), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: saving members: %w", err)
	}
	return nil
}

// markMoved is SaveMembers' marking of the contacts' earlier addresses on
// SQLite, with statements prepared once and run row by row (see rows.go):
// each contact's persons are read by the contacts index, and those not
// saved now, and no newer, are marked moved by the members' key. Most contacts have one
// person, the one just saved, and cost one lookup.
func (s *SQL) markMoved(ctx context.Context, tx *sql.Tx, integration, audience string, saved map[string]MemberState, persons, contacts []string) error {
	sel, err := s.stmt(ctx, tx, `SELECT person FROM contacts WHERE integration = ? AND contact = ?`)
	if err != nil {
		return err
	}
	upd, err := s.stmt(ctx, tx, `UPDATE members SET status = ? WHERE integration = ? AND audience = ? AND person = ? AND changed_at <= ?`)
	if err != nil {
		return err
	}
	rowCtx := context.WithoutCancel(ctx)
	var others []string
	for i := range persons {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, err := sel.QueryContext(rowCtx, integration, contacts[i])
		if err != nil {
			return err
		}
		others = others[:0]
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				_ = rows.Close()
				return err
			}
			if _, now := saved[p]; !now {
				others = append(others, p)
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, p := range others {
			if _, err := upd.ExecContext(rowCtx, StatusMoved, integration, audience, p, micros(saved[persons[i]].Changed)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Members returns the mirrored members among persons.
func (s *SQL) Members(ctx context.Context, integration, audience string, persons []string) (map[string]MemberState, error) {
	out := map[string]MemberState{}
	err := s.queryIn(ctx, s.rd, `SELECT person, status, fields, changed_at FROM members
			WHERE integration = ? AND audience = ? AND person IN `+inList, []any{integration, audience}, persons, func(rows *sql.Rows) error {
		var m MemberState
		var at int64
		if err := rows.Scan(&m.Person, &m.Status, &m.Fields, &at); err != nil {
			return err
		}
		m.Changed = fromMicros(at)
		out[m.Person] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading members: %w", err)
	}
	return out, nil
}

// AddAliases records address changes, each new address inheriting the
// earlier addresses of the one it replaced.
func (s *SQL) AddAliases(ctx context.Context, integration string, as []Alias) error {
	err := s.writeTx(ctx, integration, func(tx *sql.Tx) error {
		for _, a := range as {
			if a.Person == "" || a.Alias == "" || a.Person == a.Alias {
				continue
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO aliases (integration, person, alias, sealed, changed_at)
				VALUES (?, ?, ?, ?, ?) ON CONFLICT (integration, person, alias) DO NOTHING`),
				integration, a.Person, a.Alias, a.Sealed, micros(a.Changed)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO aliases (integration, person, alias, sealed, changed_at)
				SELECT integration, ?, alias, sealed, changed_at FROM aliases
				 WHERE integration = ? AND person = ? AND alias <> ?
				ON CONFLICT (integration, person, alias) DO NOTHING`),
				a.Person, integration, a.Alias, a.Person); err != nil {
				return err
			}
			// And every later address of the person inherits them too: a
			// change recorded after a later one (a late delivery) still
			// extends the chain from the newest address.
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO aliases (integration, person, alias, sealed, changed_at)
				SELECT later.integration, later.person, mine.alias, mine.sealed, mine.changed_at
				  FROM aliases later JOIN aliases mine ON mine.integration = later.integration AND mine.person = ?
				 WHERE later.integration = ? AND later.alias = ? AND mine.alias <> later.person
				ON CONFLICT (integration, person, alias) DO NOTHING`),
				a.Person, integration, a.Person); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: recording address changes: %w", err)
	}
	return nil
}

// Aliases returns the earlier addresses of persons.
func (s *SQL) Aliases(ctx context.Context, integration string, persons []string) (map[string][]Alias, error) {
	out := map[string][]Alias{}
	err := s.queryIn(ctx, s.rd, `SELECT person, alias, sealed, changed_at FROM aliases
			WHERE integration = ? AND person IN `+inList+` ORDER BY person, changed_at, alias`, []any{integration}, persons, func(rows *sql.Rows) error {
		var a Alias
		var at int64
		if err := rows.Scan(&a.Person, &a.Alias, &a.Sealed, &at); err != nil {
			return err
		}
		a.Changed = fromMicros(at)
		out[a.Person] = append(out[a.Person], a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading address changes: %w", err)
	}
	return out, nil
}

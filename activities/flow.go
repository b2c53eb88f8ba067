package activities

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/optoutsync/optoutsync/connectors"
)

// How a paging activity keeps the vendors busy.
//
// A page is handled by its own goroutine, and up to pagesInFlight pages
// are handled at once, while the next pages are read: a page's ledger
// work (on SQLite, one writer) runs while other pages' vendor calls are in
// flight, and the vendors' slots stay full across page boundaries.
//
// Pages take turns in page order only to claim their people (the ledger
// person hashes they read and write: work.claim). A page claiming a
// person an earlier page still in flight holds waits for that page to
// finish before it looks them up: it then sees what the earlier page did,
// as if the pages had run one after the other. Pages with no person in
// common share no ledger state a step reads, so the rest of their work
// runs in any order.
//
// A page's counts are its own until it and every page before it are
// done; then they join the activity's result and the heartbeat records
// the cursor after it, so a retried attempt resumes after the last page
// finished, with its counts, and a page handled only in part is handled
// again (every write is idempotent, and the ledger records each once).

// pagesInFlight bounds the pages one activity handles at once: enough
// for every part of a split read to have a page handled while its next
// one is read.
const pagesInFlight = 8

// callBudget bounds the time one activity call starts reading pages for;
// the pages under way are then finished and the call returns the cursor
// after them. With PagesPerActivity it keeps a call well inside its
// start-to-close timeout (15 minutes) at any vendor's pace, while a step
// that goes fast is not cut into many calls, each starting with one read
// and draining at its end.
var callBudget = 2 * time.Minute // a variable for the tests

// work is one page being handled.
type work struct {
	res  PageResult
	next string
	// prev is the page dispatched before this one, until that page and
	// every page before it are done and counted (see pages' complete):
	// the pages of a call are not all kept until it ends.
	prev atomic.Pointer[work]
	// turn is closed when this page has had its turn (see inTurn).
	turn chan struct{}
	// done is closed when the handler has returned, err its error.
	done chan struct{}
	err  error
	// persons are the people this page claimed, set in its turn.
	persons map[string]bool
	// part is the part of the read the page belongs to; spawn, the parts
	// the rest of the read was split into after it.
	part  int
	spawn map[int]string
}

func newWork(prev *work, next string) *work {
	w := &work{next: next, turn: make(chan struct{}), done: make(chan struct{})}
	w.prev.Store(prev)
	return w
}

// inTurn runs fn once the page before has had its turn.
func (w *work) inTurn(ctx context.Context, fn func() error) error {
	if prev := w.prev.Load(); prev != nil {
		select {
		case <-prev.turn:
		case <-ctx.Done():
			return ctx.Err()
		}
		// A page that failed gives up its turn at once (see finish),
		// after cancelling ctx: the pages before it may not be done with
		// theirs.
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	defer close(w.turn)
	return fn()
}

// finish gives up the page's turn if it did not take it: after the page
// before, or at once after an error (which cancelled the activity's
// context).
func (w *work) finish(ctx context.Context) {
	select {
	case <-w.turn:
		return
	default:
	}
	if prev := w.prev.Load(); prev != nil && w.err == nil {
		select {
		case <-prev.turn:
		case <-ctx.Done():
		}
	}
	close(w.turn)
}

// claim marks persons as this page's, in its turn, and then waits until
// no page before it that is still in flight holds one of them.
func (w *work) claim(ctx context.Context, persons func() ([]string, error)) error {
	err := w.inTurn(ctx, func() error {
		ps, err := persons()
		w.persons = make(map[string]bool, len(ps))
		for _, p := range ps {
			w.persons[p] = true
		}
		return err
	})
	if err != nil {
		return err
	}
	for p := w.prev.Load(); p != nil; p = p.prev.Load() {
		select {
		case <-p.done:
			continue
		default:
		}
		for q := range p.persons {
			if w.persons[q] {
				select {
				case <-p.done:
				case <-ctx.Done():
					return ctx.Err()
				}
				break
			}
		}
	}
	return nil
}

// serial adapts a handler that does all its work in its turn: its pages
// are handled one at a time, in order, while the next ones are read.
func serial[P any](handle func(context.Context, P, *PageResult) error) func(context.Context, P, *work) error {
	return func(ctx context.Context, page P, w *work) error {
		return w.inTurn(ctx, func() error { return handle(ctx, page, &w.res) })
	}
}

// alone runs fn on a work of its own, outside any paging, and adds its
// result to res.
func alone(res *PageResult, fn func(*work) error) error {
	w := newWork(nil, "")
	err := fn(w)
	res.merge(w.res)
	return err
}

// merge adds a page's result to the activity's.
func (r *PageResult) merge(o PageResult) {
	r.Counts.Add(o.Counts)
	r.HoldWatermark = r.HoldWatermark || o.HoldWatermark
	for _, f := range o.Failures {
		if len(r.Failures) < MaxFailureReports {
			r.Failures = append(r.Failures, f)
		}
	}
	for _, h := range o.LaterConsent {
		if len(r.LaterConsent) < MaxFailureReports {
			r.LaterConsent = append(r.LaterConsent, h)
		}
	}
	r.KnownRefused += o.KnownRefused
}

// beat is the last heartbeat, recorded again by keepAlive from any of the
// activity's goroutines.
//
// Every heartbeat is recorded with the activity's own context, never a
// page's: the SDK holds back heartbeats that come faster than it sends
// them and sends the last one later with the context it came with, and a
// page's context is cancelled when an error or a stop ends the page.
type beat struct {
	ctx context.Context
	mu  sync.Mutex
	hb  heartbeat
}

// set records hb. The lock is held while it is recorded, so that a
// keep-alive of an older one cannot be recorded after it.
func (b *beat) set(hb heartbeat) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hb = hb
	activity.RecordHeartbeat(b.ctx, hb)
}

// again records the last heartbeat again.
func (b *beat) again() {
	b.mu.Lock()
	defer b.mu.Unlock()
	activity.RecordHeartbeat(b.ctx, b.hb)
}

// pages reads page after page from cursor (or from the cursor this
// activity heartbeated before a retry) and handles each, several at once,
// heartbeating the cursor after each page it finished with every page
// before it, until the step is done, PagesPerActivity pages were read or
// callBudget has passed. The next pages are read while pages are handled.
//
// With split (the CRM's CursorSplitter), a read whose first page is full
// goes on in the parts split makes, read at once; the cursor then names
// every part not finished (see encodeParts). split answers nil for a read
// that goes on as it is, and otherwise the parts the rest is read in:
// none when nothing is left (only the audience split knows that; the
// connectors' splits are taken as nil when they answer no part).
//
// When the worker is told to stop, no further page is read or started,
// the pages under way are finished and the cursor after them returned:
// the workflow hands the rest to a worker that goes on, instead of this
// attempt being cut off mid-page.
func pages[P any](ctx context.Context, a *Activities, integ *Integration, step Step, cursor string,
	read func(context.Context, string) (P, string, error), split func(context.Context, string) []string,
	handle func(context.Context, P, *work) error) (PageResult, error) {
	var res PageResult
	last := heartbeat{Cursor: cursor}
	if activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &last); err == nil {
			cursor, res = last.Cursor, last.Partial
		}
	}
	hb := &beat{ctx: ctx, hb: last}
	ctx = context.WithValue(ctx, heartbeatKey{}, hb)
	limit := max(integ.Settings.PagesPerActivity, 1)
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	defer cancel()

	// open holds, by part, the cursor a retry resumes the part from: the
	// one after its last finished page.
	open := map[int]string{}
	if !last.Done {
		for i, c := range decodeParts(cursor, split != nil) {
			open[i] = c
		}
	}
	nextPart := len(open)
	type ahead struct {
		part  int
		page  P
		next  string
		err   error
		spawn map[int]string
	}
	// Room for every read that can be in flight (at most limit, after the
	// parts the cursor names): a read finishing after the activity stopped
	// taking pages never blocks, and none is dropped before.
	results := make(chan ahead, limit+len(open))
	// ready are pages read and not yet dispatched (pagesInFlight are being
	// handled); parked, the parts whose next read waits for room in ready,
	// in the order they parked. The room is taken by the pages in ready
	// and the reads in flight, which all go there: however many parts the
	// read has, at most pagesInFlight pages wait for a handler.
	// A part's next page is read as soon as its page arrives, not when
	// that page is dispatched: pages held back by busy handlers must not
	// hold back the reads too, or each part's chain of reads, one vendor
	// round trip after another, stretches by the time pages wait.
	type parkedRead struct {
		part int
		c    string
	}
	var (
		ready  []ahead
		parked []parkedRead
	)
	reading, received, dispatched := 0, 0, 0
	quit := workerStop(ctx)
	began := time.Now()
	startRead := func(part int, c string) {
		taken := dispatched + len(ready) + reading
		if taken >= limit {
			return // read by the next call
		}
		if stopping(quit) && taken > 0 {
			return // a stopping worker reads one page at most
		}
		if time.Since(began) >= callBudget && taken > 0 {
			return // read by the next call
		}
		if len(ready)+reading >= pagesInFlight {
			parked = append(parked, parkedRead{part, c})
			return
		}
		reading++
		go func() {
			p, next, err := read(ctx, c)
			results <- ahead{part: part, page: p, next: next, err: err}
		}()
	}
	var (
		inFlight []*work
		prev     *work
	)
	// complete takes the oldest page in flight, which is done, and, when
	// it was handled, adds its result and heartbeats the cursors after it.
	complete := func() error {
		w := inFlight[0]
		inFlight = inFlight[1:]
		<-w.done
		if w.err != nil {
			return w.err
		}
		if len(inFlight) > 0 {
			// w had its turn and is done: nothing waits for it any more.
			inFlight[0].prev.Store(nil)
		}
		res.merge(w.res)
		switch {
		case w.spawn != nil:
			delete(open, w.part)
			maps.Copy(open, w.spawn)
		case w.next == "":
			delete(open, w.part)
		default:
			open[w.part] = w.next
		}
		cursor = encodeParts(open)
		hb.set(heartbeat{Cursor: cursor, Partial: res, Done: cursor == ""})
		return nil
	}
	// stop cancels the reads and pages in flight and waits for the pages.
	stop := func(err error) (PageResult, error) {
		// The error that cancelled the rest, not what the cancelling
		// made of the reads and pages in flight.
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		cancel()
		for _, w := range inFlight {
			<-w.done
		}
		return PageResult{}, err
	}
	// dispatch hands the oldest page read to a handler of its own.
	dispatch := func() {
		got := ready[0]
		ready = ready[1:]
		dispatched++
		w := newWork(prev, got.next)
		w.part, w.spawn = got.part, got.spawn
		prev = w
		inFlight = append(inFlight, w)
		go func() {
			defer close(w.done)
			if w.err = handle(ctx, got.page, w); w.err != nil {
				cancelCause(w.err)
			}
			w.finish(ctx)
		}()
		for len(parked) > 0 && len(ready)+reading < pagesInFlight {
			p := parked[0]
			parked = parked[1:]
			startRead(p.part, p.c)
		}
	}
	for _, part := range slices.Sorted(maps.Keys(open)) {
		startRead(part, open[part])
	}
	// A heartbeat is recorded after each finished page, so a resumed
	// attempt whose last page was the step's last has nothing left to do.
	for reading > 0 || len(ready) > 0 || len(inFlight) > 0 {
		if stopping(quit) && dispatched > 0 {
			// A stopping worker starts no page it read ahead: each is
			// read again by the next call, from its part's cursor in open.
			ready, parked = nil, nil
		}
		for len(ready) > 0 && len(inFlight) < pagesInFlight {
			dispatch()
		}
		var arrived chan ahead
		if reading > 0 {
			arrived = results
		}
		var oldest chan struct{}
		if len(inFlight) > 0 {
			oldest = inFlight[0].done
		}
		select {
		case <-oldest:
			if err := complete(); err != nil {
				return stop(err)
			}
			continue
		case got := <-arrived:
			reading--
			if got.err != nil {
				return stop(got.err)
			}
			if stopping(quit) && dispatched+len(ready) > 0 {
				continue // read again by the next call
			}
			received++
			// A full first page of a single read: the rest goes in parts.
			if got.next != "" && split != nil && len(open) == 1 && received == 1 {
				if cs := split(ctx, got.next); cs != nil {
					got.spawn = map[int]string{}
					for _, c := range cs {
						got.spawn[nextPart] = c
						nextPart++
					}
				}
			}
			ready = append(ready, got)
			switch {
			case got.spawn != nil:
				for _, part := range slices.Sorted(maps.Keys(got.spawn)) {
					startRead(part, got.spawn[part])
				}
			case got.next != "":
				startRead(got.part, got.next)
			}
		}
	}
	res.Next = cursor
	a.log.Debug("pages synced", "integration", integ.Settings.IntegrationID, "pages", res.Counts.Pages,
		"read", res.Counts.Read, "failed", res.Counts.Failed, "more", cursor != "")
	if at, ok, err := a.ledger.OldestPending(ctx, integ.Settings.IntegrationID); err != nil {
		return PageResult{}, err
	} else if ok {
		res.OldestPending = &at
	}
	if u, ok := integ.CRM.(connectors.UsageReporter); ok {
		if used, limit, ok := u.APIUsage(); ok {
			res.CRMAPIUsage = &APIUsage{Used: used, Max: limit}
		}
	}
	observe(integ.Settings.IntegrationID, step, res.Counts)
	return res, nil
}

// partsPrefix starts the cursor of a read that goes on in several parts:
// the prefix, then the parts' cursors as a JSON array. The cursor of a
// read in one part is that part's, as the connector made it.
const partsPrefix = "parts:"

// encodeParts is the cursor naming every part not finished, in order.
func encodeParts(open map[int]string) string {
	switch len(open) {
	case 0:
		return ""
	case 1:
		for _, c := range open {
			return c
		}
	}
	cs := make([]string, 0, len(open))
	for _, part := range slices.Sorted(maps.Keys(open)) {
		cs = append(cs, open[part])
	}
	b, _ := json.Marshal(cs)
	return partsPrefix + string(b)
}

// decodeParts is the cursors a cursor names: itself, or, for a read that
// can be split (whose connector's cursors never start with partsPrefix),
// its parts. "" is the start of a read.
func decodeParts(cursor string, splits bool) []string {
	if rest, ok := strings.CutPrefix(cursor, partsPrefix); ok && splits {
		var cs []string
		if json.Unmarshal([]byte(rest), &cs) == nil && len(cs) > 0 {
			return cs
		}
	}
	return []string{cursor}
}

// crmSplit is the CRM's CursorSplitter, or nil. A split that fails (its
// calls are only an optimisation) leaves the read in one part.
func (a *Activities) crmSplit(integ *Integration) func(context.Context, string) []string {
	s, ok := integ.CRM.(connectors.CursorSplitter)
	if !ok {
		return nil
	}
	return func(ctx context.Context, c string) []string {
		cs, err := s.SplitCursor(ctx, c, pagesInFlight)
		if err != nil {
			a.log.Info("the CRM read goes on in one part", "integration", integ.Settings.IntegrationID, "error", scrubAddresses(err.Error()))
			return nil
		}
		if len(cs) == 0 {
			return nil // no part is not "nothing left" (see pages)
		}
		return cs
	}
}

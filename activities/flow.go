package activities

import (
	"context"
	"sync"

	"go.temporal.io/sdk/activity"
)

// How a paging activity keeps the vendors busy.
//
// A page is handled by its own goroutine, and up to pagesInFlight pages
// are handled at once, while the next page is read. A handler alternates
// ledger work and vendor calls; its ledger work is cut into stages
// (work.inOrder), and each stage runs for one page at a time, in page
// order: page 2's stage 0 (observing what it read) runs after page 1's,
// possibly while page 1's vendor calls are in flight, and page 1's stage
// 1 (recording what they did) runs before page 2's. So the ledger, one
// connection on SQLite, works while the vendors answer, and the vendors'
// slots stay full across page boundaries.
//
// A page whose people (ledger person hashes) an earlier page still in
// flight is writing to waits for that page to finish before it looks
// them up (work.claim): it then sees what the earlier page did, as if the
// pages had run one after the other.
//
// A page's counts are its own until it and every page before it are
// done; then they join the activity's result and the heartbeat records
// the cursor after it, so a retried attempt resumes after the last page
// finished, with its counts, and a page handled only in part is handled
// again (every write is idempotent, and the ledger records each once).

// pagesInFlight bounds the pages one activity handles at once.
const pagesInFlight = 4

// stages is how many ordered stages a handler may use.
const stages = 3

// work is one page being handled.
type work struct {
	res  PageResult
	next string
	prev *work
	// turns[k] is closed when this page has left stage k.
	turns [stages]chan struct{}
	// done is closed when the handler has returned, err its error.
	done chan struct{}
	err  error
	// persons are the people this page writes to, set in its stage 0.
	persons map[string]bool
}

func newWork(prev *work, next string) *work {
	w := &work{prev: prev, next: next, done: make(chan struct{})}
	for k := range w.turns {
		w.turns[k] = make(chan struct{})
	}
	return w
}

// inOrder runs fn as this page's stage k: after the page before it left
// stage k. Stages are entered in increasing k; one skipped is passed
// when a later one is entered or the handler returns.
func (w *work) inOrder(ctx context.Context, k int, fn func() error) error {
	if err := w.pass(ctx, k); err != nil {
		return err
	}
	defer close(w.turns[k])
	return fn()
}

// pass waits for the turns of stages before k to come, and gives them up,
// and then for the page before to leave stage k.
func (w *work) pass(ctx context.Context, k int) error {
	for j := range k + 1 {
		if w.left(j) {
			continue
		}
		if w.prev != nil {
			select {
			case <-w.prev.turns[j]:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if j < k {
			close(w.turns[j])
		}
	}
	return nil
}

func (w *work) left(k int) bool {
	select {
	case <-w.turns[k]:
		return true
	default:
		return false
	}
}

// finish gives up every stage not yet left, in order; after an error,
// which cancelled the activity's context, without waiting.
func (w *work) finish(ctx context.Context) {
	for k := range w.turns {
		if w.left(k) {
			continue
		}
		if w.prev != nil && w.err == nil {
			select {
			case <-w.prev.turns[k]:
			case <-ctx.Done():
			}
		}
		close(w.turns[k])
	}
}

// claim marks persons as this page's and waits until no page before it
// that is still in flight holds one of them. It is called in stage 0,
// where every page before has made its claim.
func (w *work) claim(ctx context.Context, persons []string) error {
	w.persons = make(map[string]bool, len(persons))
	for _, p := range persons {
		w.persons[p] = true
	}
	for p := w.prev; p != nil; p = p.prev {
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

// serial adapts a handler that does all its work in one stage: its pages
// are handled one at a time, in order, while the next ones are read.
func serial[P any](handle func(context.Context, P, *PageResult) error) func(context.Context, P, *work) error {
	return func(ctx context.Context, page P, w *work) error {
		return w.inOrder(ctx, 0, func() error { return handle(ctx, page, &w.res) })
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
type beat struct {
	mu sync.Mutex
	hb heartbeat
}

func (b *beat) set(ctx context.Context, hb heartbeat) {
	b.mu.Lock()
	b.hb = hb
	b.mu.Unlock()
	activity.RecordHeartbeat(ctx, hb)
}

func (b *beat) get() heartbeat {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hb
}

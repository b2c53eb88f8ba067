package connectors

import (
	"sync"
	"time"
)

// Leftovers keeps what a page of a read did not take of a vendor's answer
// (a query batch larger than a page), under the cursor of the next page,
// so that the next page costs no call: a read that is a chain of calls
// (each needs the link the one before answered) is as many times shorter
// as a batch holds pages. A cursor whose batch is not kept (used in
// another process, or after LeftoverTTL) must read it again: the cursor
// itself says from where.
type Leftovers[T any] struct {
	mu sync.Mutex
	m  map[string]leftover[T]
}

type leftover[T any] struct {
	v  T
	at time.Time
}

const (
	// maxLeftovers bounds the batches kept: one per read in progress.
	maxLeftovers = 16
	// LeftoverTTL is how long a batch is kept.
	LeftoverTTL = 5 * time.Minute
)

// Put keeps v for cursor, dropping what has expired and, past
// maxLeftovers, the oldest.
func (l *Leftovers[T]) Put(cursor string, v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]leftover[T]{}
	}
	now := time.Now()
	for k, e := range l.m {
		if now.Sub(e.at) > LeftoverTTL {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxLeftovers {
		var oldest string
		for k, e := range l.m {
			if oldest == "" || e.at.Before(l.m[oldest].at) {
				oldest = k
			}
		}
		delete(l.m, oldest)
	}
	l.m[cursor] = leftover[T]{v: v, at: now}
}

// Take returns and forgets what is kept for cursor.
func (l *Leftovers[T]) Take(cursor string) (T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[cursor]
	delete(l.m, cursor)
	if !ok || time.Since(e.at) > LeftoverTTL {
		var zero T
		return zero, false
	}
	return e.v, true
}

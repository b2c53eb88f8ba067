package salesforce

import (
	"sync"
	"time"
)

// A query answers in batches of up to 2,000 records (Sforce-Query-Options:
// batchSize), and a page holds at most connectors.MaxPageSize (1,000), so
// a batch usually fills two pages. The rest of a batch a page did not take
// is kept here, under the cursor of the next page, so that the next page
// costs no call: the chain of queryMore calls a read is (each needs the
// locator the one before answered) is half as long. Without it (a cursor
// used in another process, or after leftoverTTL) the next page reads the
// batch again from its locator, or the keyset, as before.
type leftovers struct {
	mu sync.Mutex
	m  map[string]leftover
}

// leftover is the batch a cursor resumes in: the answer, the locator it
// came from ("" for a query's first batch) and the records of it already
// returned.
type leftover struct {
	res  queryResult
	url  string
	skip int
	at   time.Time
}

const (
	// maxLeftovers bounds the batches kept: one per read in progress.
	maxLeftovers = 16
	// leftoverTTL is how long a batch is kept; a query locator itself
	// lasts 15 minutes idle.
	leftoverTTL = 5 * time.Minute
)

func (l *leftovers) put(cursor string, b leftover) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]leftover{}
	}
	now := time.Now()
	for k, v := range l.m {
		if now.Sub(v.at) > leftoverTTL {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxLeftovers {
		var oldest string
		for k, v := range l.m {
			if oldest == "" || v.at.Before(l.m[oldest].at) {
				oldest = k
			}
		}
		delete(l.m, oldest)
	}
	b.at = now
	l.m[cursor] = b
}

// take returns and forgets the batch kept for cursor.
func (l *leftovers) take(cursor string) (leftover, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[cursor]
	delete(l.m, cursor)
	if ok && time.Since(b.at) > leftoverTTL {
		return leftover{}, false
	}
	return b, ok
}

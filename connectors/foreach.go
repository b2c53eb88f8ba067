package connectors

import (
	"context"
	"sync"
)

// ForEach runs fn(ctx, i) for each i in [0, n) on at most workers
// goroutines (workers < 1: one per item). The vendor's in-flight limiter,
// which every call of a client passes, is the real cap on requests; the
// workers only keep hundreds of goroutines from waiting on it. The first
// error fn returns cancels the context the others run with, no new item
// starts, and that error is returned.
//
// A per-item answer that concerns only its item (a record refused, a
// member not found) is not an error here: fn records it and returns nil.
func ForEach(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return ctx.Err()
	}
	if workers < 1 {
		workers = n
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		next     = make(chan int)
	)
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if ctx.Err() != nil {
					continue // handed over as the cancel came: not started
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

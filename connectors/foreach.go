package connectors

import (
	"context"
	"errors"
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

// WriteEach writes each of refs with its own call of write, on at most
// workers goroutines (ForEach), and counts the outcome: Written for each
// call that succeeded, a Failure naming the record for each that failed
// (RecordFailure). Rejected credentials, or the context ending, stop the
// whole call with that error: no record would be written after them.
func WriteEach(ctx context.Context, workers int, refs []RecordRef, write func(ctx context.Context, ref RecordRef) error) (BatchResult, error) {
	var (
		mu  sync.Mutex
		res BatchResult
	)
	err := ForEach(ctx, workers, len(refs), func(ctx context.Context, i int) error {
		err := write(ctx, refs[i])
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnauthorized):
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.Failed = append(res.Failed, RecordFailure(refs[i], err))
		} else {
			res.Written++
		}
		return nil
	})
	return res, err
}

// RecordFailure is the Failure of one record's write: the vendor's code
// and detail when it answered with an error, retryable unless the answer
// is final (Permanent).
func RecordFailure(ref RecordRef, err error) Failure {
	f := Failure{Record: ref, Message: err.Error(), Retryable: true}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		f.Code, f.Message = apiErr.Code, apiErr.Detail
		f.Retryable = !Permanent(err)
	}
	return f
}

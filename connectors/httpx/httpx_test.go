package httpx_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/httpx"
)

func TestRetriesTransientAnswersAndPassesTheLastOneThrough(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"title":"TooManyRequests"}`)
	}))
	defer srv.Close()
	c := httpx.New(httpx.Options{RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
	resp, err := c.Get(srv.URL)
	require.NoError(t, err, "the final answer is passed through, not turned into an error")
	defer resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	require.JSONEq(t, `{"title":"TooManyRequests"}`, string(body))
	require.EqualValues(t, 3, calls.Load())
}

func TestDoesNotRetryAnUnauthorizedAnswer(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	resp, err := httpx.New(httpx.Options{RetryWaitMin: time.Millisecond}).Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.EqualValues(t, 1, calls.Load())
}

func TestSignsEveryAttemptAnew(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		n := len(seen)
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	var n atomic.Int32
	c := httpx.New(httpx.Options{RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond,
		Sign: func(r *http.Request) error {
			r.Header.Set("Authorization", "nonce-"+strconv.Itoa(int(n.Add(1))))
			return nil
		}})
	req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader([]byte(`{}`)))
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, []string{"nonce-1", "nonce-2", "nonce-3"}, seen)
	require.Empty(t, req.Header.Get("Authorization"), "the caller's request is not modified")
}

func TestLimiterCapsRequestsInFlightUntilBodiesAreClosed(t *testing.T) {
	var inFlight, peak atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}))
	defer srv.Close()
	// Two clients of one account share one limiter.
	lim := httpx.SharedLimiter("test:"+t.Name(), 3)
	require.Same(t, lim, httpx.SharedLimiter("test:"+t.Name(), 99))
	clients := []*http.Client{httpx.New(httpx.Options{Limiter: lim}), httpx.New(httpx.Options{Limiter: lim})}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			resp, err := clients[i%2].Get(srv.URL)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, peak.Load(), int32(3))
	require.Equal(t, int32(3), peak.Load(), "the cap is used, not just respected")
}

func TestCappedBackoffFollowsRetryAfterUpToTheCap(t *testing.T) {
	resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"1"}}}
	require.Equal(t, time.Second, httpx.CappedBackoff(10*time.Millisecond, 2*time.Second, 0, resp))
	resp.Header.Set("Retry-After", "3600")
	require.Equal(t, 2*time.Second, httpx.CappedBackoff(10*time.Millisecond, 2*time.Second, 0, resp))
	require.Equal(t, 40*time.Millisecond, httpx.CappedBackoff(10*time.Millisecond, 2*time.Second, 2, nil))
}

func TestLogLinesCarryNoAddressOrQuery(t *testing.T) {
	require.Equal(t, "j***@example.com and a***%40example.org", httpx.Redact("jane.doe@example.com and a.b%40example.org"))
	var buf bytes.Buffer
	l := httpx.NewLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "mailchimp")
	l.Debug("retrying request", "request", "GET https://us6.api.mailchimp.com/3.0/lists/x/members/jane@example.com?apikey=secret")
	require.NotContains(t, buf.String(), "jane@")
	require.NotContains(t, buf.String(), "secret")
	require.Contains(t, buf.String(), "j***@example.com")
}

// TestBoundedBody: an answer over the limit fails with an error naming
// the endpoint; one at the limit is read whole.
func TestBoundedBody(t *testing.T) {
	b, err := httpx.ReadBody(strings.NewReader("12345"), 5, "GET /x")
	require.NoError(t, err)
	require.Equal(t, "12345", string(b))
	_, err = httpx.ReadBody(strings.NewReader("123456"), 5, "GET /x")
	require.ErrorIs(t, err, httpx.ErrBodyTooLarge)
	require.EqualError(t, err, "GET /x: answer larger than the limit of 5 bytes")
}

// TestLimiterBacksOffAndRecovers: a limit answer halves the requests
// allowed at once (once for a burst of them), and answers that are not
// limit answers bring the account's limit back, a slot at a time.
func TestLimiterBacksOffAndRecovers(t *testing.T) {
	l := httpx.NewLimiter(8)
	require.Equal(t, 8, l.Allowed())
	l.Throttled()
	l.Throttled() // the same burst
	require.Equal(t, 4, l.Allowed())
	for range 4 {
		require.NoError(t, l.Acquire(t.Context()))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.Acquire(ctx), context.DeadlineExceeded, "a fifth request waits while four are allowed")
	served := 0
	for l.Allowed() < 8 {
		l.Served()
		served++
	}
	require.Equal(t, 8, l.Cap())
	require.Less(t, served, 30, "the limit comes back within a few rounds")
	require.NoError(t, l.Acquire(t.Context()), "a slot freed by the increase is taken")
}

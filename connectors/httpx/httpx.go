// Package httpx is the HTTP layer every connector shares: go-retryablehttp
// with short capped retries, the final response passed through for the
// connector to classify, per-attempt signing inside the transport, a
// per-account concurrency limit, and a log/slog adapter that never writes a
// secret or a full email address.
package httpx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/optoutsync/optoutsync/connectors/metrics"
)

// Options configures a client.
type Options struct {
	// Name is the system name used in log lines ("mailchimp").
	Name string
	// Limiter caps requests in flight; share one per vendor account (see
	// SharedLimiter). Nil means no cap.
	Limiter *Limiter
	// Sign is called on every attempt, retries included, just before the
	// request is sent (OAuth 1.0a needs a fresh nonce and timestamp each time).
	Sign func(*http.Request) error
	// Base is the underlying transport; nil means a pooled default.
	Base http.RoundTripper
	// Logger receives retry and failure lines at debug/warn; nil discards them.
	Logger *slog.Logger
	// RetryMax is the number of retries after the first attempt; 0 means 3.
	// Negative means none.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff; 0 means 100ms and 2s.
	// A Retry-After longer than RetryWaitMax is capped: long waits belong
	// to Temporal's retry policy, not to a sleeping activity.
	RetryWaitMin, RetryWaitMax time.Duration
	// Timeout bounds one whole call including retries; 0 means 2 minutes
	// (Mailchimp's own server timeout is 120 s).
	Timeout time.Duration
}

// New returns a standard *http.Client that retries transient failures (
// connection errors, 429, 5xx) a few times and then returns the last
// response unchanged, for the caller to classify and close.
func New(o Options) *http.Client {
	base := o.Base
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		base = t
	}
	vendor := o.Name
	if vendor == "" {
		vendor = "unknown"
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: &transport{base: base, sign: o.Sign, limiter: o.Limiter, vendor: vendor,
		inFlight: metrics.VendorInFlight.WithLabelValues(vendor), limited: metrics.VendorLimited.WithLabelValues(vendor)}}
	retries := metrics.VendorRetries.WithLabelValues(vendor)
	rc.RequestLogHook = func(_ retryablehttp.Logger, _ *http.Request, attempt int) {
		if attempt > 0 {
			retries.Inc()
		}
	}
	rc.RetryMax = o.RetryMax
	switch {
	case o.RetryMax == 0:
		rc.RetryMax = 3
	case o.RetryMax < 0:
		rc.RetryMax = 0
	}
	rc.RetryWaitMin, rc.RetryWaitMax = o.RetryWaitMin, o.RetryWaitMax
	if rc.RetryWaitMin == 0 {
		rc.RetryWaitMin = 100 * time.Millisecond
	}
	if rc.RetryWaitMax == 0 {
		rc.RetryWaitMax = 2 * time.Second
	}
	rc.Backoff = CappedBackoff
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.Logger = NewLogger(o.Logger, o.Name)
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	return &http.Client{Transport: &retryablehttp.RoundTripper{Client: rc}, Timeout: timeout}
}

// CappedBackoff is retryablehttp's exponential backoff, following a
// Retry-After header but never waiting longer than max.
func CappedBackoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := RetryAfter(resp.Header); ok {
			if d > max {
				return max
			}
			if d < min {
				return min
			}
			return d
		}
	}
	d := time.Duration(math.Pow(2, float64(attempt)) * float64(min))
	if d > max || d <= 0 {
		d = max
	}
	return d
}

// RetryAfter parses a Retry-After header given in seconds or as an HTTP date.
func RetryAfter(h http.Header) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// transport signs each attempt, holds a limiter slot from sending the
// request until its response body is closed or read to the end (which is
// how long the vendor counts the request as in flight), and counts each
// attempt in the vendor series: one place for every connector.
type transport struct {
	base     http.RoundTripper
	sign     func(*http.Request) error
	limiter  *Limiter
	vendor   string
	inFlight prometheus.Gauge
	limited  prometheus.Counter
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.sign != nil {
		// RoundTrippers must not modify the caller's request.
		req = req.Clone(req.Context())
		if err := t.sign(req); err != nil {
			return nil, err
		}
	}
	if t.limiter != nil {
		if err := t.limiter.Acquire(req.Context()); err != nil {
			return nil, err
		}
	}
	release := func() {
		t.inFlight.Dec()
		if t.limiter != nil {
			t.limiter.Release()
		}
	}
	endpoint := endpointClass(t.vendor, req)
	t.inFlight.Inc()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		release()
		metrics.VendorRequests.WithLabelValues(t.vendor, endpoint, "error").Inc()
		return nil, err
	}
	metrics.VendorRequests.WithLabelValues(t.vendor, endpoint, strconv.Itoa(resp.StatusCode)).Inc()
	if resp.StatusCode == http.StatusTooManyRequests {
		t.limited.Inc()
		if t.limiter != nil {
			t.limiter.Throttled()
		}
	} else if t.limiter != nil {
		t.limiter.Served()
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// Limiter caps the requests in flight to one vendor account. The cap
// adapts to the vendor's answers (additive increase, multiplicative
// decrease): a limit answer (429) halves the requests allowed at once, at
// most once per cutEvery, and every answer that is not one adds back a
// slot's worth over about one round of requests, up to the account's
// limit. So the client slows down to what the vendor serves instead of
// hammering it, and climbs back when the pressure is gone.
type Limiter struct {
	mu      sync.Mutex
	max     int
	allowed float64 // requests allowed at once now, 1..max
	inUse   int
	lastCut time.Time
	wake    chan struct{} // closed, and replaced, when a slot may have freed
}

// cutEvery spaces the decreases: the answers to requests sent together
// arrive together, and count as one signal.
const cutEvery = time.Second

// NewLimiter returns a limiter with n slots.
func NewLimiter(n int) *Limiter {
	n = max(n, 1)
	return &Limiter{max: n, allowed: float64(n), wake: make(chan struct{})}
}

// Acquire waits for a free slot or for ctx to end.
func (l *Limiter) Acquire(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.inUse < int(l.allowed) {
			l.inUse++
			l.mu.Unlock()
			return nil
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Release frees a slot taken by Acquire.
func (l *Limiter) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inUse--
	l.signal()
}

// Throttled records a limit answer from the vendor: the allowed requests
// are halved (not below one).
func (l *Limiter) Throttled() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.lastCut) >= cutEvery {
		l.allowed = max(1, l.allowed/2)
		l.lastCut = now
	}
}

// Served records an answer that was not a limit answer: one more request
// is allowed after about as many answers as are allowed now.
func (l *Limiter) Served() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.allowed < float64(l.max) {
		before := int(l.allowed)
		l.allowed = min(float64(l.max), l.allowed+1/l.allowed)
		if int(l.allowed) > before {
			l.signal()
		}
	}
}

// Allowed is the number of requests allowed at once now.
func (l *Limiter) Allowed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.allowed)
}

func (l *Limiter) signal() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// Cap is the account's limit: the most slots the limiter ever allows.
func (l *Limiter) Cap() int { return l.max }

var (
	sharedMu       sync.Mutex
	sharedLimiters = map[string]*Limiter{}
)

// SharedLimiter returns the process-wide limiter for one vendor account
// (key names system and account, e.g. "mailchimp:us6:<account>"), creating it
// with n slots the first time, so that everything in the process talking to
// that account shares one cap.
func SharedLimiter(key string, n int) *Limiter {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	l, ok := sharedLimiters[key]
	if !ok {
		l = NewLimiter(n)
		sharedLimiters[key] = l
	}
	return l
}

// emailPattern matches an email address, raw or URL-encoded.
var emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+\-]+(@|%40)([A-Za-z0-9\-]+\.)+[A-Za-z]{2,}`)

// Redact hides email addresses in s, keeping the first character and the
// domain: "jane@example.com" becomes "j***@example.com".
func Redact(s string) string {
	return emailPattern.ReplaceAllStringFunc(s, func(m string) string {
		at := strings.Index(m, "@")
		if at < 0 {
			at = strings.Index(m, "%40")
		}
		return m[:1] + "***" + m[at:]
	})
}

// logger adapts slog to retryablehttp.LeveledLogger, redacting every value.
type logger struct {
	l    *slog.Logger
	name string
}

// NewLogger returns a retryablehttp.LeveledLogger over l that writes no secret
// and no full address; nil l discards everything.
func NewLogger(l *slog.Logger, name string) retryablehttp.LeveledLogger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &logger{l: l.With("system", name), name: name}
}

func (g *logger) Error(msg string, kv ...any) { g.log(slog.LevelWarn, msg, kv) }
func (g *logger) Warn(msg string, kv ...any)  { g.log(slog.LevelWarn, msg, kv) }
func (g *logger) Info(msg string, kv ...any)  { g.log(slog.LevelDebug, msg, kv) }
func (g *logger) Debug(msg string, kv ...any) { g.log(slog.LevelDebug, msg, kv) }

func (g *logger) log(level slog.Level, msg string, kv []any) {
	if !g.l.Enabled(context.Background(), level) {
		return
	}
	out := make([]any, 0, len(kv))
	for i, v := range kv {
		if i%2 == 1 {
			v = redactValue(v)
		}
		out = append(out, v)
	}
	g.l.Log(context.Background(), level, msg, out...)
}

var queryPattern = regexp.MustCompile(`\?[^\s"]*`)

func redactValue(v any) any {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case error:
		s = x.Error()
	case interface{ String() string }:
		s = x.String()
	default:
		return v
	}
	return Redact(queryPattern.ReplaceAllString(s, "?…"))
}

// MaxBody bounds any answer a connector reads: a page of a thousand members
// or records with their fields is a few megabytes, and an answer far larger
// than asked for (a vendor bug, a proxy, an attack) must fail the call, not
// the worker's memory.
const MaxBody = 32 << 20

// ErrBodyTooLarge is returned by a BoundedBody read past its limit.
var ErrBodyTooLarge = errors.New("answer larger than the limit")

// BoundedBody wraps r so that reading more than limit bytes fails with an
// error naming what (the method and the endpoint, with no address in it)
// instead of silently truncating.
func BoundedBody(r io.Reader, limit int64, what string) io.Reader {
	return &boundedReader{r: io.LimitReader(r, limit+1), left: limit, limit: limit, what: what}
}

type boundedReader struct {
	r           io.Reader
	left, limit int64
	what        string
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, fmt.Errorf("%s: %w of %d bytes", b.what, ErrBodyTooLarge, b.limit)
	}
	return n, err
}

// ReadBody reads a whole answer of at most limit bytes.
func ReadBody(r io.Reader, limit int64, what string) ([]byte, error) {
	return io.ReadAll(BoundedBody(r, limit, what))
}

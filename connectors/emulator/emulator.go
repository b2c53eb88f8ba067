// Package emulator holds what the vendor API emulators (mailchimptest,
// netsuitetest, salesforcetest) share: fault injection, per-request
// latency, a cap on requests in flight, and counters of requests served by
// endpoint. Each emulator supplies its own vendor-faithful error bodies.
package emulator

import (
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"
)

// Faults configures what an emulator injects into the requests it serves.
// Rates are probabilities in [0, 1] drawn per request.
type Faults struct {
	// Rate429 answers with the vendor's rate-limit body.
	Rate429 float64
	// Rate5xx answers with the vendor's server-error body.
	Rate5xx float64
	// RateReset closes the connection without an answer.
	RateReset float64
	// RateHang holds the request without an answer until the client gives
	// up (its context ends) or HangFor passes, then closes the connection.
	RateHang float64
	// HangFor bounds a hang; 0 means 30 seconds.
	HangFor time.Duration
	// Latency is added to every request before it is served.
	Latency time.Duration
}

// Vendor writes a vendor's own answers for the faults and limits.
type Vendor struct {
	// TooMany writes the rate-limit answer (429 and its body).
	TooMany func(w http.ResponseWriter, r *http.Request)
	// ServerError writes a 5xx answer.
	ServerError func(w http.ResponseWriter, r *http.Request)
	// OverLimit writes the answer to a request over the in-flight cap.
	OverLimit func(w http.ResponseWriter, r *http.Request)
	// Endpoint names the endpoint a request hits, for the counters
	// ("GET /lists/{list_id}/members").
	Endpoint func(r *http.Request) string
}

// Middleware wraps a vendor handler with faults, latency, the in-flight cap
// and the counters. Its settings may be changed while it serves.
type Middleware struct {
	vendor Vendor

	mu       sync.Mutex
	faults   Faults
	rng      *rand.Rand
	limit    int
	inFlight int
	peak     int
	// busy integrates inFlight over time from first to last, for MeanInFlight.
	busy        time.Duration
	first, last time.Time
	counts      map[string]int
	faulted     map[string]int
}

// NewMiddleware returns a middleware with no faults and no in-flight cap.
func NewMiddleware(v Vendor) *Middleware {
	return &Middleware{
		vendor:  v,
		rng:     rand.New(rand.NewPCG(1, 2)),
		counts:  map[string]int{},
		faulted: map[string]int{},
	}
}

// SetFaults replaces the fault settings.
func (m *Middleware) SetFaults(f Faults) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = f
}

// SetLimit sets the cap on simultaneous requests; 0 means none. The request
// over the cap gets the vendor's OverLimit answer.
func (m *Middleware) SetLimit(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limit = n
}

// Counts returns how many requests each endpoint received, faulted ones included.
func (m *Middleware) Counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.counts)
}

// Faulted returns how many faults of each kind ("429", "5xx", "reset",
// "hang", "over-limit") were injected.
func (m *Middleware) Faulted() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.faulted)
}

// Total is the number of requests received.
func (m *Middleware) Total() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.counts {
		n += c
	}
	return n
}

// PeakInFlight is the largest number of simultaneous requests seen.
func (m *Middleware) PeakInFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// MeanInFlight is the mean number of requests in flight from the first
// request after the last ResetCounts to the end of the last one: how
// busy the client kept the slots it had.
func (m *Middleware) MeanInFlight() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	span := m.last.Sub(m.first)
	if span <= 0 {
		return 0
	}
	return float64(m.busy) / float64(span)
}

// ResetCounts zeroes the counters, the peak and the mean.
func (m *Middleware) ResetCounts() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts = map[string]int{}
	m.faulted = map[string]int{}
	m.peak = 0
	m.busy, m.first, m.last = 0, time.Time{}, time.Time{}
}

// tick accounts for the time since the last change of inFlight; call
// with m.mu held, before changing it.
func (m *Middleware) tick() {
	now := time.Now()
	if m.first.IsZero() {
		m.first = now
	} else {
		m.busy += time.Duration(m.inFlight) * now.Sub(m.last)
	}
	m.last = now
}

// Endpoints lists the endpoints seen, sorted.
func (m *Middleware) Endpoints() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.counts))
}

type decision int

const (
	serve decision = iota
	overLimit
	fault429
	fault5xx
	faultReset
	faultHang
)

func (m *Middleware) admit(endpoint string) (decision, Faults) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[endpoint]++
	f := m.faults
	if m.limit > 0 && m.inFlight >= m.limit {
		m.faulted["over-limit"]++
		return overLimit, f
	}
	m.tick()
	m.inFlight++
	m.peak = max(m.peak, m.inFlight)
	x := m.rng.Float64()
	for _, c := range []struct {
		rate float64
		d    decision
		name string
	}{{f.Rate429, fault429, "429"}, {f.Rate5xx, fault5xx, "5xx"}, {f.RateReset, faultReset, "reset"}, {f.RateHang, faultHang, "hang"}} {
		if x < c.rate {
			m.faulted[c.name]++
			return c.d, f
		}
		x -= c.rate
	}
	return serve, f
}

func (m *Middleware) done() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	m.inFlight--
}

// Wrap returns next behind the middleware.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endpoint := r.Method + " " + r.URL.Path
		if m.vendor.Endpoint != nil {
			endpoint = m.vendor.Endpoint(r)
		}
		d, f := m.admit(endpoint)
		if d == overLimit {
			m.vendor.OverLimit(w, r)
			return
		}
		defer m.done()
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
		switch d {
		case fault429:
			m.vendor.TooMany(w, r)
		case fault5xx:
			m.vendor.ServerError(w, r)
		case faultReset:
			abort(w)
		case faultHang:
			hang := f.HangFor
			if hang == 0 {
				hang = 30 * time.Second
			}
			select {
			case <-time.After(hang):
			case <-r.Context().Done():
			}
			abort(w)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// abort closes the connection without writing an answer.
func abort(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tcp, ok := conn.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0) // RST rather than FIN: a real reset
			}
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// Listen starts h on a loopback port (addr "" picks a free one, or give
// "127.0.0.1:8081") and returns the running server.
func Listen(addr string, h http.Handler) (*httptest.Server, error) {
	srv := httptest.NewUnstartedServer(h)
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		_ = srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	return srv, nil
}

// Clock is a settable clock for an emulator's Now option, so that tests
// control the timestamps (last_changed, lastModifiedDate, SystemModstamp)
// it stamps on records.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

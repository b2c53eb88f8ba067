package emulator_test

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/emulator"
)

func newServer(t *testing.T) (*emulator.Middleware, string) {
	t.Helper()
	m := emulator.NewMiddleware(emulator.Vendor{
		TooMany:     func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) },
		ServerError: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) },
		OverLimit:   func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) },
	})
	srv, err := emulator.Listen("", m.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	})))
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// noReuse makes every request its own connection: Go's transport silently
// retries a request whose reused connection was reset, which would hide a fault.
var noReuse = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, url string) (int, error) {
	resp, err := noReuse.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestInjectsFaultsAtTheConfiguredRatesAndCountsThem(t *testing.T) {
	m, url := newServer(t)
	m.SetFaults(emulator.Faults{Rate429: 0.3, Rate5xx: 0.2, RateReset: 0.1})
	codes := map[int]int{}
	resets := 0
	for range 200 {
		code, err := get(t, url+"/x")
		if err != nil {
			resets++
			continue
		}
		codes[code]++
	}
	f := m.Faulted()
	require.Equal(t, f["429"], codes[429])
	require.Equal(t, f["5xx"], codes[500])
	require.Equal(t, f["reset"], resets)
	require.InDelta(t, 60, codes[429], 25)
	require.InDelta(t, 40, codes[500], 20)
	require.InDelta(t, 20, resets, 15)
	require.Equal(t, 200, m.Counts()["GET /x"])
}

func TestAnswersRequestsOverTheCapWithTheVendorAnswer(t *testing.T) {
	m, url := newServer(t)
	m.SetLimit(2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 6 {
		wg.Go(func() {
			code, err := get(t, url)
			require.NoError(t, err)
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	require.LessOrEqual(t, m.PeakInFlight(), 2)
	require.Equal(t, m.Faulted()["over-limit"], codes[599])
	require.Positive(t, codes[599])
	require.Equal(t, 6, codes[200]+codes[599])
}

func TestHangEndsWhenTheClientGivesUp(t *testing.T) {
	m, url := newServer(t)
	m.SetFaults(emulator.Faults{RateHang: 1})
	c := &http.Client{Timeout: 100 * time.Millisecond}
	_, err := c.Get(url)
	require.Error(t, err)
	require.Equal(t, 1, m.Faulted()["hang"])
}

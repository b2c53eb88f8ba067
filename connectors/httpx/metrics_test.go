package httpx_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/httpx"
	"github.com/optoutsync/optoutsync/connectors/metrics"
)

// TestEndpointClassesNameNoPersonOrRecord: the endpoint label of the
// vendor series keeps the shape of each connector's paths and drops what
// names a person, a record, a list or an account.
func TestEndpointClassesNameNoPersonOrRecord(t *testing.T) {
	for path, want := range map[string]string{
		// Mailchimp: a list id and a subscriber hash.
		"/3.0/lists/a1b2c3d4e5/members/0cc175b9c0f1b6a831c399e269772661":         "/3.0/lists/:id/members/:id",
		"/3.0/lists/2f3a9bc001/members?status=unsubscribed&since_last_changed=x": "/3.0/lists/:id/members",
		"/3.0/lists/abcdefabcd":  "/3.0/lists/:id",
		"/3.0/ping":              "/3.0/ping",
		"/3.0/lists/a1b2c3d4e5/": "/3.0/lists/:id",
		// NetSuite: record ids, SuiteQL, a saved search by its script id.
		"/services/rest/record/v1/customer/1234":                          "/services/rest/record/v1/customer/:id",
		"/services/rest/query/v1/suiteql":                                 "/services/rest/query/v1/suiteql",
		"/services/rest/query/v1/savedsearch/customsearch_mc_sync/result": "/services/rest/query/v1/savedsearch/customsearch_mc_sync/result",
		// Salesforce: API version, sObject ids.
		"/services/data/v60.0/composite/sobjects":           "/services/data/v60.0/composite/sobjects",
		"/services/data/v60.0/sobjects/Contact/003Ak00000X": "/services/data/v60.0/sobjects/Contact/:id",
		// Dynamics: OData keys and a tenant id.
		"/api/data/v9.2/contacts(6f1e2b9a-4c1d-4e8f-9a00-000000000001)": "/api/data/v9.2/contacts(:id)",
		"/api/data/v9.2/$batch":                                   "/api/data/v9.2/$batch",
		"/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token": "/:id/oauth2/v2.0/token",
		// Bullhorn: the corporation token and entity ids; an address in a path.
		"/rest-services/e999/entity/Candidate/123,456": "/rest-services/:id/entity/Candidate/:id",
		"/rest-services/e999/search/Candidate":         "/rest-services/:id/search/Candidate",
		"/lookup/ann@example.com":                      "/lookup/:id",
		"/lookup/ann%40example.com":                    "/lookup/:id",
	} {
		u, err := url.Parse("https://api.example.com" + path)
		require.NoError(t, err)
		require.Equal(t, "GET "+want, httpx.EndpointClass(&http.Request{Method: "GET", URL: u}), path)
	}
}

// TestEveryAttemptIsCounted: each attempt is one vendor request counted
// with its status code, a 429 is also a limit answer, an attempt after the
// first is a retry, a refused connection is code "error", and nothing is
// left in flight once the bodies are closed.
func TestEveryAttemptIsCounted(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	const vendor = "counted-vendor"
	c := httpx.New(httpx.Options{Name: vendor, Limiter: httpx.NewLimiter(2), RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
	resp, err := c.Get(srv.URL + "/3.0/lists/a1b2c3d4e5/members")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.EqualValues(t, 1, testutil.ToFloat64(metrics.VendorInFlight.WithLabelValues(vendor)), "in flight until the body is closed")
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()

	endpoint := "GET /3.0/lists/:id/members"
	require.EqualValues(t, 2, testutil.ToFloat64(metrics.VendorRequests.WithLabelValues(vendor, endpoint, "429")))
	require.EqualValues(t, 1, testutil.ToFloat64(metrics.VendorRequests.WithLabelValues(vendor, endpoint, "200")))
	require.EqualValues(t, 2, testutil.ToFloat64(metrics.VendorLimited.WithLabelValues(vendor)))
	require.EqualValues(t, 2, testutil.ToFloat64(metrics.VendorRetries.WithLabelValues(vendor)))
	require.EqualValues(t, 0, testutil.ToFloat64(metrics.VendorInFlight.WithLabelValues(vendor)))

	srv.Close()
	_, err = httpx.New(httpx.Options{Name: vendor, RetryMax: -1}).Get(srv.URL + "/3.0/ping")
	require.Error(t, err)
	require.EqualValues(t, 1, testutil.ToFloat64(metrics.VendorRequests.WithLabelValues(vendor, "GET /3.0/ping", "error")))
	require.EqualValues(t, 0, testutil.ToFloat64(metrics.VendorInFlight.WithLabelValues(vendor)))
}

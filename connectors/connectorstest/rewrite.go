package connectorstest

import (
	"bytes"
	"io"
	"net/http"
)

// Rewriter is an http.RoundTripper for tests of what a connector makes of
// an answer no emulator gives: each request Match accepts still goes to the
// server, and its answer becomes status 200 with the body Edit makes of the
// server's (Replace for a fixed one).
type Rewriter struct {
	Match func(*http.Request) bool
	Edit  func(body []byte) []byte
}

// RoundTrip implements http.RoundTripper.
func (rw Rewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || !rw.Match(r) {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	b = rw.Edit(b)
	resp.StatusCode = http.StatusOK
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// Replace is an Edit that answers body instead.
func Replace(body string) func([]byte) []byte {
	return func([]byte) []byte { return []byte(body) }
}

package dynamics_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
)

// batchRewriter lets a test see and rewrite the parts of each $batch
// answer on the wire: edit gets the batch's number (from 1) and its
// answer parts (raw application/http bodies) and returns the parts to send.
type batchRewriter struct {
	base   http.RoundTripper
	mu     sync.Mutex
	n      int
	before func(n int)
	edit   func(n int, parts [][]byte) [][]byte
}

func (b *batchRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(r.URL.Path, "/$batch") {
		return b.base.RoundTrip(r)
	}
	b.mu.Lock()
	b.n++
	n := b.n
	b.mu.Unlock()
	if b.before != nil {
		b.before(n)
	}
	resp, err := b.base.RoundTrip(r)
	if err != nil || b.edit == nil {
		return resp, err
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		return resp, nil
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	mr := multipart.NewReader(bytes.NewReader(raw), params["boundary"])
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(p)
		parts = append(parts, body)
	}
	parts = b.edit(n, parts)
	var out bytes.Buffer
	mw := multipart.NewWriter(&out)
	_ = mw.SetBoundary("batchresponse_rewritten")
	status := http.StatusOK
	for _, p := range parts {
		if ans, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(p)), nil); err == nil && ans.StatusCode >= 400 {
			status = http.StatusBadRequest
		}
		pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}, "Content-Transfer-Encoding": {"binary"}})
		_, _ = pw.Write(p)
	}
	_ = mw.Close()
	resp.Header.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	resp.Header.Del("Content-Length")
	resp.ContentLength = int64(out.Len())
	resp.StatusCode, resp.Status = status, fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.Body = io.NopCloser(&out)
	return resp, nil
}

func partAnswer(status int, header, body string) []byte {
	return []byte(fmt.Sprintf("HTTP/1.1 %d %s\r\n%sContent-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n%s", status, http.StatusText(status), header, body))
}

// TestFindByEmailUnreadablePartIsAnError: a 200 part whose body is not a
// collection (cut short, HTML from a proxy, empty) fails the lookup, not
// silently reports no record.
func TestFindByEmailUnreadablePartIsAnError(t *testing.T) {
	for name, body := range map[string]string{
		"truncated": `{"@odata.context":"x","value":[{"contactid":"`,
		"html":      `<html><body>Gateway</body></html>`,
		"empty":     ``,
		"null":      `null`,
		"no value":  `{"@odata.context":"x"}`,
		"error":     `{"error":{"code":"0x80040216","message":"An unexpected error occurred."}}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := newEnv(t, dynamicstest.Options{})
			srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
			rw := &batchRewriter{base: http.DefaultTransport, edit: func(n int, parts [][]byte) [][]byte {
				parts[0] = partAnswer(http.StatusOK, "", body)
				return parts
			}}
			c := clientFor(t, srv, func(o *dynamics.Options) { o.Transport = rw })
			recs, err := c.FindByEmail(t.Context(), []string{"contact"}, standard, []string{"a@example.com"})
			require.Error(t, err, "found %v", recs)
			require.False(t, connectors.Permanent(err))
		})
	}
}

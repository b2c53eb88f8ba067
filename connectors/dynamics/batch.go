package dynamics

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// writeFlag sets col to val on each record with one $batch (reference A6):
// multipart/mixed, one application/http PATCH part per record outside any
// changeset (a changeset is atomic, and one bad record must not undo the
// others), Prefer: odata.continue-on-error so that every part runs and
// answers with its own status.
func (c *Client) writeFlag(ctx context.Context, col string, val bool, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	var res connectors.BatchResult
	if len(refs) > c.MaxBatch() {
		return res, fmt.Errorf("dynamics: refs: %d records given, at most %d a call", len(refs), c.MaxBatch())
	}
	var items []connectors.RecordRef
	seen := map[connectors.RecordRef]bool{}
	for _, r := range refs {
		_, ok := tables[r.Type]
		switch {
		case !ok:
			res.Failed = append(res.Failed, connectors.Failure{Record: r, Code: "InvalidType", Message: fmt.Sprintf("record type %q is not contact, lead or account", r.Type)})
			continue
		case !guidPattern.MatchString(r.ID):
			res.Failed = append(res.Failed, connectors.Failure{Record: r, Code: "InvalidId", Message: fmt.Sprintf("%q is not a Dataverse record id (a GUID)", r.ID)})
			continue
		}
		key := connectors.RecordRef{Type: r.Type, ID: strings.ToLower(r.ID)}
		if seen[key] {
			continue
		}
		seen[key] = true
		items = append(items, r)
	}
	if len(items) == 0 {
		return res, nil
	}
	body, err := json.Marshal(map[string]bool{col: val})
	if err != nil {
		return res, err
	}
	parts := make([]string, len(items))
	for i, r := range items {
		parts[i] = fmt.Sprintf("PATCH %s/%s(%s) HTTP/1.1\r\nContent-Type: application/json; type=entry\r\nIf-Match: *\r\n\r\n%s\r\n",
			apiPath, tables[r.Type].set, strings.ToLower(r.ID), body)
	}
	answers, err := c.batch(ctx, parts, true)
	if err != nil {
		return res, err
	}
	for i, r := range items {
		if i >= len(answers) {
			// Without continue-on-error the batch stops at the first
			// failure; the requests after it never ran.
			res.Failed = append(res.Failed, connectors.Failure{Record: r, Code: "NotRun", Message: "the batch stopped before this request", Retryable: true})
			continue
		}
		ans := answers[i]
		if ans.status >= 200 && ans.status < 300 {
			res.Written++
			continue
		}
		e := c.classify(ans)
		f := connectors.Failure{Record: r, Code: e.Code, Message: fmt.Sprintf("%d: %s", ans.status, e.Detail)}
		f.Retryable = !connectors.Permanent(e)
		res.Failed = append(res.Failed, f)
	}
	return res, nil
}

// batch sends requests (each an application/http part: request line,
// headers, blank line, body) as one $batch outside any changeset, and
// returns the answers in order (reference A6). With continueOnError every
// part runs and answers; without it the batch stops at the first failure,
// whose answer is the last.
func (c *Client) batch(ctx context.Context, requests []string, continueOnError bool) ([]answer, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	rnd := make([]byte, 16)
	_, _ = rand.Read(rnd)
	if err := mw.SetBoundary("batch_" + hex.EncodeToString(rnd)); err != nil {
		return nil, err
	}
	for _, r := range requests {
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}, "Content-Transfer-Encoding": {"binary"}})
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(pw, r); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {"multipart/mixed; boundary=" + mw.Boundary()}}
	if continueOnError {
		h.Set("Prefer", "odata.continue-on-error")
	}
	a, err := c.send(ctx, call{method: http.MethodPost, url: c.api + "$batch", header: h, body: buf.Bytes()})
	if err != nil {
		return nil, err
	}
	mt, params, _ := mime.ParseMediaType(a.header.Get("Content-Type"))
	if mt != "multipart/mixed" || params["boundary"] == "" {
		if a.status >= 200 && a.status < 300 {
			return nil, fmt.Errorf("dynamics: $batch answered %d without a multipart body", a.status)
		}
		return nil, c.classify(a)
	}
	answers, err := readBatchAnswers(bytes.NewReader(a.body), params["boundary"])
	if err != nil {
		return nil, fmt.Errorf("dynamics: $batch answer: %w", err)
	}
	if len(answers) > len(requests) {
		return nil, fmt.Errorf("dynamics: $batch answered %d parts for %d requests", len(answers), len(requests))
	}
	return answers, nil
}

// readBatchAnswers reads a $batch answer's parts in order; a changeset's
// answers are read in place.
func readBatchAnswers(r io.Reader, boundary string) ([]answer, error) {
	mr := multipart.NewReader(r, boundary)
	var out []answer
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		mt, params, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			return nil, fmt.Errorf("a part has no content type")
		}
		switch mt {
		case "multipart/mixed":
			inner, err := readBatchAnswers(p, params["boundary"])
			if err != nil {
				return nil, err
			}
			out = append(out, inner...)
		case "application/http":
			resp, err := http.ReadResponse(bufio.NewReader(p), nil)
			if err != nil {
				return nil, fmt.Errorf("a part is not an HTTP answer: %w", err)
			}
			// The whole answer was read within httpx.MaxBody; a part of
			// it (a lookup's rows) may take as much.
			b, err := httpx.ReadBody(resp.Body, httpx.MaxBody, "dynamics: $batch part")
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			out = append(out, answer{status: resp.StatusCode, header: resp.Header, body: b})
		default:
			return nil, fmt.Errorf("a part's content type %q is neither application/http nor multipart/mixed", mt)
		}
	}
}

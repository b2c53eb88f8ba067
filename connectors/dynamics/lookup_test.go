package dynamics_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/unicode/norm"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
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

var allColumns = func(o *dynamics.Options) {
	o.EmailColumns = []string{"emailaddress1", "emailaddress2", "emailaddress3"}
}

// TestFindByEmailSpecialCharactersInsideBatchParts: addresses holding the
// characters a filter, a URL or a multipart body treat specially are
// found whatever case and Unicode form the CRM holds them in, in any
// address column; an address that differs only by an accent, a suffix or
// a prefix is never matched.
func TestFindByEmailSpecialCharactersInsideBatchParts(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	asked := []string{
		"o'brien+tag@example.com",
		"50%off@example.com",
		"a&b=c@example.com",
		"x#y?z@example.com",
		"a/b{c}|d~e^f`g@example.com",
		"José.Núñez@Bücher.example",
		"\"quoted local\"@example.com",
		"''@example.com",
		"--boundary@example.com",
		"UPPER@EXAMPLE.COM",
	}
	stored := []string{
		"O'BRIEN+TAG@EXAMPLE.COM",
		"50%OFF@example.com",
		"A&B=C@example.com",
		"x#y?z@EXAMPLE.com",
		"A/B{C}|D~E^F`G@example.com",
		norm.NFD.String("josé.núñez") + "@xn--bcher-kva.example",
		"\"Quoted Local\"@example.com",
		"''@example.com",
		"--BOUNDARY@example.com",
		"upper@example.com",
	}
	want := map[string]string{}
	for i, s := range stored {
		var id string
		switch i % 3 {
		case 0:
			id = srv.AddContact(dynamicstest.Person{Email: s})
		case 1:
			id = srv.AddLead(dynamicstest.Person{Email: "other@example.com", Email2: s})
		case 2:
			id = srv.AddAccount(dynamicstest.Person{Email3: s})
		}
		want[id] = asked[i]
	}
	// Near misses: never matched.
	for _, s := range []string{"jose.nunez@bucher.example", "o'brien+tag@example.com.au", "xo'brien+tag@example.com", "o'brien tag@example.com", "50off@example.com", "a&b@example.com"} {
		srv.AddContact(dynamicstest.Person{Email: s})
	}
	c := clientFor(t, srv, allColumns)
	recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead", "account"}, standard, asked)
	require.NoError(t, err)
	got := map[string]string{}
	for _, r := range recs {
		got[r.Ref.ID] = r.Email
	}
	require.Equal(t, want, got)
}

// TestFindByEmailFailingPartIsRetryableAndReportsNothing: a batch part
// answered 429, 503 or 500 (the batch stops there) fails the whole lookup
// with a retryable error, whichever part and whichever batch of a nextLink
// chain it is, and nothing is reported found.
func TestFindByEmailFailingPartIsRetryableAndReportsNothing(t *testing.T) {
	for _, tc := range []struct {
		status int
		header string
		kind   error
	}{
		{http.StatusTooManyRequests, "Retry-After: 3\r\n", connectors.ErrRateLimited},
		{http.StatusServiceUnavailable, "", connectors.ErrRateLimited},
		{http.StatusInternalServerError, "", connectors.ErrServer},
		{http.StatusBadGateway, "", connectors.ErrServer},
	} {
		for _, where := range []struct{ batch, part int }{{1, 0}, {1, 1}, {1, 2}, {2, 0}} {
			t.Run(fmt.Sprintf("%d/batch%d/part%d", tc.status, where.batch, where.part), func(t *testing.T) {
				srv := newEnv(t, dynamicstest.Options{MaxPageSize: 1})
				var emails []string
				for i := range 4 {
					e := fmt.Sprintf("p%d@example.com", i)
					emails = append(emails, e)
					srv.AddContact(dynamicstest.Person{Email: e})
					srv.AddLead(dynamicstest.Person{Email: e})
					srv.AddAccount(dynamicstest.Person{Email: e})
				}
				rw := &batchRewriter{base: http.DefaultTransport, edit: func(n int, parts [][]byte) [][]byte {
					if n != where.batch {
						return parts
					}
					body := `{"error":{"code":"0x80072322","message":"Number of requests exceeded the limit of 6000 over time window of 300 seconds."}}`
					return append(parts[:where.part:where.part], partAnswer(tc.status, tc.header, body))
				}}
				c := clientFor(t, srv, func(o *dynamics.Options) { o.Transport = rw })
				recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead", "account"}, standard, emails)
				require.Error(t, err)
				require.Nil(t, recs)
				require.ErrorIs(t, err, tc.kind)
				require.False(t, connectors.Permanent(err), "a transient part failure must be retried: %v", err)
				if tc.status == http.StatusTooManyRequests {
					var apiErr *connectors.APIError
					require.True(t, errors.As(err, &apiErr))
					require.Equal(t, 3*time.Second, apiErr.RetryAfter, "the part's Retry-After")
				}
			})
		}
	}
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

// TestFindByEmailDuplicatesAndEmptyInput: the same address asked twice (in
// two spellings) is one query condition and each record comes back once;
// no address, or only blank ones, makes no call.
func TestFindByEmailDuplicatesAndEmptyInput(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	a := srv.AddContact(dynamicstest.Person{Email: "dup@example.com", Email2: "DUP@example.com"})
	c := clientFor(t, srv, allColumns)
	require.NoError(t, c.Ping(t.Context()))
	srv.Middleware.ResetCounts()
	for _, in := range [][]string{nil, {}, {"", "  "}} {
		recs, err := c.FindByEmail(t.Context(), []string{"contact"}, standard, in)
		require.NoError(t, err)
		require.Empty(t, recs)
	}
	require.Empty(t, srv.Middleware.Counts())
	recs, err := c.FindByEmail(t.Context(), []string{"contact", "contact"}, standard, []string{"dup@example.com", " Dup@Example.com ", "dup@example.com"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, a, recs[0].Ref.ID)
	require.Equal(t, "contact", recs[0].Ref.Type)
}

// TestFindByEmailNextLinkChainWithWritesBetweenBatches: with one row a
// page, each query follows its nextLink through many batches while the
// records it has not reached yet are modified between them (opted out,
// another column changed, a record added elsewhere): every record holding
// an asked address from start to end is found.
func TestFindByEmailNextLinkChainWithWritesBetweenBatches(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{MaxPageSize: 1, RequestLimit: -1})
	var ids []string
	var emails []string
	for i := range 6 {
		e := fmt.Sprintf("chain%d@example.com", i)
		emails = append(emails, e)
		for range 3 {
			ids = append(ids, srv.AddContact(dynamicstest.Person{Email: e, Email2: "x" + e}))
		}
	}
	rw := &batchRewriter{base: http.DefaultTransport, before: func(n int) {
		if n == 1 {
			return
		}
		for _, id := range ids {
			require.NoError(t, srv.Update(id, map[string]any{"donotbulkemail": n%2 == 0, "emailaddress3": fmt.Sprintf("v%d@example.com", n)}))
		}
		srv.AddContact(dynamicstest.Person{Email: "unrelated@example.com"})
	}}
	c := clientFor(t, srv, func(o *dynamics.Options) { o.Transport = rw; allColumns(o) })
	recs, err := c.FindByEmail(t.Context(), []string{"contact"}, standard, emails)
	require.NoError(t, err)
	got := byID(recs)
	require.Len(t, recs, len(ids))
	for _, id := range ids {
		require.Contains(t, got, id)
	}
	require.Greater(t, rw.n, 3)
}

// TestFindByEmailMaxBatchOfLongUnicodeAddresses: MaxBatch long addresses
// with four spellings each, in three columns of three tables, split into
// many filters: each is found, in a single $batch.
func TestFindByEmailMaxBatchOfLongUnicodeAddresses(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{RequestLimit: -1})
	c := clientFor(t, srv, allColumns)
	var emails []string
	want := map[string]string{}
	for i := range c.MaxBatch() {
		local := fmt.Sprintf("Ünïcödé.ÄÖÜ.'quote'+plus%%pct&amp.%03d", i)
		e := local + "@Bücher.example"
		emails = append(emails, e)
		st := norm.NFD.String(strings.ToLower(local)) + "@xn--bcher-kva.example"
		if i%2 == 0 {
			st = strings.ToUpper(local) + "@BÜCHER.EXAMPLE"
		}
		var id string
		switch i % 3 {
		case 0:
			id = srv.AddContact(dynamicstest.Person{Email3: st})
		case 1:
			id = srv.AddLead(dynamicstest.Person{Email2: st})
		case 2:
			id = srv.AddAccount(dynamicstest.Person{Email: st})
		}
		want[id] = e
	}
	srv.Middleware.ResetCounts()
	recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead", "account"}, standard, emails)
	require.NoError(t, err)
	got := map[string]string{}
	for _, r := range recs {
		got[r.Ref.ID] = r.Email
	}
	require.Equal(t, len(want), len(got))
	require.Equal(t, want, got)
	require.Equal(t, 1, srv.Middleware.Counts()["POST /api/data/v9.2/$batch"])
}

// TestFindByEmailPartsOutOfOrderOrMissing: parts are mapped to their
// queries by position (OData 4.0 batch answers keep the request order;
// reference A6 echoes Content-ID only inside changesets). Answers in
// another order, or fewer answers than queries, are a retryable error or
// the whole answer, never a lookup that quietly misses records.
func TestFindByEmailPartsOutOfOrderOrMissing(t *testing.T) {
	for name, edit := range map[string]func(parts [][]byte) [][]byte{
		"reversed": func(parts [][]byte) [][]byte {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
			return parts
		},
		"last missing":  func(parts [][]byte) [][]byte { return parts[:len(parts)-1] },
		"first missing": func(parts [][]byte) [][]byte { return parts[1:] },
	} {
		t.Run(name, func(t *testing.T) {
			srv := newEnv(t, dynamicstest.Options{})
			srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
			srv.AddLead(dynamicstest.Person{Email: "a@example.com"})
			srv.AddAccount(dynamicstest.Person{Email: "a@example.com"})
			rw := &batchRewriter{base: http.DefaultTransport, edit: func(n int, parts [][]byte) [][]byte { return edit(parts) }}
			c := clientFor(t, srv, func(o *dynamics.Options) { o.Transport = rw })
			recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead", "account"}, standard, []string{"a@example.com"})
			if err == nil {
				require.Len(t, recs, 3, "a lookup that succeeds finds every record")
				return
			}
			require.Nil(t, recs)
			require.False(t, connectors.Permanent(err))
		})
	}
}

// TestFindByEmailSecondColumnOnly: with emailaddress2 the only configured
// column, a record holding the address there alone is found, and one
// holding it in emailaddress1 only is not.
func TestFindByEmailSecondColumnOnly(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	in2 := srv.AddContact(dynamicstest.Person{Email2: "Two@Example.com"})
	srv.AddContact(dynamicstest.Person{Email: "two@example.com"})
	c := clientFor(t, srv, func(o *dynamics.Options) { o.EmailColumns = []string{"emailaddress2"} })
	recs, err := c.FindByEmail(t.Context(), []string{"contact"}, standard, []string{"TWO@example.com"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, in2, recs[0].Ref.ID)
	require.Equal(t, "TWO@example.com", recs[0].Email)
}

// TestFindByEmailRandomisedMatchesExactlyTheAskedAddresses: random
// addresses full of characters special to OData, URLs and multipart
// bodies, stored in random columns and tables in another case, Unicode
// form or domain form, with near misses around them, random page sizes
// and column sets: the lookup returns exactly the records whose configured
// columns hold an asked address (by connectors.EmailKey), each once per
// asked address, with the address as asked.
func TestFindByEmailRandomisedMatchesExactlyTheAskedAddresses(t *testing.T) {
	connectorstest.Randomised(t, 12, 23, func(t *testing.T, rng *rand.Rand) {
		maxPage := []int{0, 1, 3, 50}[rng.IntN(4)]
		srv := newEnv(t, dynamicstest.Options{MaxPageSize: maxPage, RequestLimit: -1})
		cols := [][]string{{"emailaddress1"}, {"emailaddress2"}, {"emailaddress1", "emailaddress3"}, {"emailaddress1", "emailaddress2", "emailaddress3"}}[rng.IntN(4)]
		types := []string{"contact", "lead", "account"}[:1+rng.IntN(3)]
		c := clientFor(t, srv, func(o *dynamics.Options) { o.EmailColumns = cols })
		chars := []string{"a", "b", "Z", "0", "'", "''", "+", "%", "%25", "&", "#", "?", "/", "=", "{", "}", "|", "~", "^", "`", "!", "$", "*", "-", "_", ".x", "é", "É", "ñ", "ü", "Ü", "가", "ß", "ø"}
		domains := []string{"example.com", "EXAMPLE.org", "bücher.example", "Bücher.example", "xn--bcher-kva.example", "münchen.de", "例え.jp"}
		randLocal := func() string {
			var b strings.Builder
			b.WriteString("u")
			for range 1 + rng.IntN(12) {
				b.WriteString(chars[rng.IntN(len(chars))])
			}
			return b.String()
		}
		// variant writes e as a CRM may hold it: another case, the domain's
		// A-label or U-label, the whole address composed or decomposed.
		variant := func(e string) string {
			at := strings.LastIndexByte(e, '@')
			local, domain := e[:at], e[at+1:]
			switch rng.IntN(3) {
			case 1:
				local = strings.ToUpper(local)
			case 2:
				local = strings.ToLower(local)
			}
			if n, ok := connectors.NormalizeEmail(e); ok && rng.IntN(2) == 0 {
				domain = n[strings.LastIndexByte(n, '@')+1:] // the A-label
			}
			if rng.IntN(2) == 0 {
				domain = strings.ToUpper(domain)
			}
			if rng.IntN(2) == 0 {
				return norm.NFD.String(local + "@" + domain)
			}
			return norm.NFC.String(local + "@" + domain)
		}
		sets := map[string]func(dynamicstest.Person) string{"contact": srv.AddContact, "lead": srv.AddLead, "account": srv.AddAccount}
		var asked []string
		keys := map[string]string{}
		for len(asked) < c.MaxBatch()-1 && len(keys) < 1+rng.IntN(c.MaxBatch()) {
			e := randLocal() + "@" + domains[rng.IntN(len(domains))]
			k := connectors.EmailKey(e)
			if _, dup := keys[k]; dup {
				continue
			}
			keys[k] = e
			asked = append(asked, e)
			if rng.IntN(5) == 0 {
				asked = append(asked, strings.ToUpper(e)) // a repeat in another case
			}
		}
		want := map[string]bool{}
		storedBy := map[string][]string{}
		for range 2 * len(keys) {
			e := asked[rng.IntN(len(asked))]
			stored := variant(e)
			if rng.IntN(4) == 0 {
				// A near miss: a different address.
				stored = []string{"x" + stored, stored + ".au", strings.Replace(stored, "@", "_@", 1), strings.Replace(stored, "é", "e", 1)}[rng.IntN(4)]
			}
			var p dynamicstest.Person
			slots := []*string{&p.Email, &p.Email2, &p.Email3}
			col := rng.IntN(3)
			*slots[col] = stored
			if rng.IntN(3) == 0 {
				*slots[(col+1)%3] = variant(asked[rng.IntN(len(asked))])
			}
			tp := []string{"contact", "lead", "account"}[rng.IntN(3)]
			id := sets[tp](p)
			storedBy[tp+"/"+id] = []string{p.Email, p.Email2, p.Email3}
			if !slices.Contains(types, tp) {
				continue
			}
			for i, v := range []string{p.Email, p.Email2, p.Email3} {
				if a, ok := keys[connectors.EmailKey(v)]; ok && v != "" && slices.Contains(cols, fmt.Sprintf("emailaddress%d", i+1)) {
					want[tp+"/"+id+"\x00"+a] = true
				}
			}
		}
		rng.Shuffle(len(asked), func(i, j int) { asked[i], asked[j] = asked[j], asked[i] })
		recs, err := c.FindByEmail(t.Context(), types, standard, asked)
		require.NoError(t, err)
		got := map[string]bool{}
		for _, r := range recs {
			k := r.Ref.String() + "\x00" + keys[connectors.EmailKey(r.Email)]
			require.False(t, got[k], "%s twice", k)
			got[k] = true
		}
		var missing, extra []string
		for k := range want {
			if !got[k] {
				ref, _, _ := strings.Cut(k, "\x00")
				missing = append(missing, fmt.Sprintf("%s asked %+q stored %+q", ref, k, storedBy[ref]))
			}
		}
		for k := range got {
			if !want[k] {
				extra = append(extra, k)
			}
		}
		require.Empty(t, missing, "records missed (page %d, columns %v)", maxPage, cols)
		require.Empty(t, extra, "records matched wrongly")
	})
}

// truncating cuts each $batch answer after keep(len) bytes, as a
// connection closed early does.
type truncating struct {
	base http.RoundTripper
	keep func(n int) int
}

func (tr truncating) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := tr.base.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, "/$batch") {
		return resp, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	raw = raw[:tr.keep(len(raw))]
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(raw)), int64(len(raw))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// TestFindByEmailTruncatedBatchAnswer: a $batch answer cut anywhere is an
// error or, cut only in its closing delimiter, the whole answer; never a
// lookup that reports fewer records.
func TestFindByEmailTruncatedBatchAnswer(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	var emails []string
	for i := range 5 {
		e := fmt.Sprintf("t%d@example.com", i)
		emails = append(emails, e)
		srv.AddContact(dynamicstest.Person{Email: e})
		srv.AddLead(dynamicstest.Person{Email: e})
	}
	full, err := clientFor(t, srv).FindByEmail(t.Context(), []string{"contact", "lead"}, standard, emails)
	require.NoError(t, err)
	require.Len(t, full, 10)
	for cut := 1; ; cut += 1 + cut/64 {
		short := false
		c := clientFor(t, srv, func(o *dynamics.Options) {
			o.Transport = truncating{base: http.DefaultTransport, keep: func(n int) int {
				short = cut < n
				return max(0, n-cut)
			}}
		})
		recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead"}, standard, emails)
		if !short {
			break
		}
		if err == nil {
			require.ElementsMatch(t, full, recs, "cut %d bytes", cut)
		} else {
			require.False(t, connectors.Permanent(err), "cut %d bytes: %v", cut, err)
		}
	}
}

// TestFindByEmailKeepsOnlyTheAskedAddressesOfTheRowsAnswered: Dataverse
// may answer rows the filter's collation finds equal that are different
// addresses (an accent, a full-width letter, a trailing space, another
// column's address): only a row holding an asked address in a configured
// column is reported, with the address as asked.
func TestFindByEmailKeepsOnlyTheAskedAddressesOfTheRowsAnswered(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	c0 := srv.AddContact(dynamicstest.Person{Email: "jose@example.com"})
	extra := map[string]map[string]any{ // id -> row
		"11111111-1111-4111-a111-111111111111": {"emailaddress1": "josé@example.com"},
		"22222222-2222-4222-a222-222222222222": {"emailaddress1": "jose@ｅｘａｍｐｌｅ.com"},
		"33333333-3333-4333-a333-333333333333": {"emailaddress1": "JOSE@EXAMPLE.COM  "},
		"44444444-4444-4444-a444-444444444444": {"emailaddress1": "other@example.com", "emailaddress2": "jose@example.com"},
		"55555555-5555-4555-a555-555555555555": {"emailaddress1": "jose@example.co"},
		"66666666-6666-4666-a666-666666666666": {"emailaddress1": nil},
	}
	rw := &batchRewriter{base: http.DefaultTransport, edit: func(n int, parts [][]byte) [][]byte {
		head, body, _ := bytes.Cut(parts[0], []byte("\r\n\r\n"))
		var col map[string]any
		require.NoError(t, json.Unmarshal(body, &col))
		rows := col["value"].([]any)
		for id, r := range extra {
			row := map[string]any{"contactid": id, "donotbulkemail": false}
			for k, v := range r {
				row[k] = v
			}
			rows = append(rows, row)
		}
		col["value"] = rows
		b, _ := json.Marshal(col)
		parts[0] = append(append(head, "\r\n\r\n"...), b...)
		return parts
	}}
	c := clientFor(t, srv, func(o *dynamics.Options) { o.Transport = rw })
	recs, err := c.FindByEmail(t.Context(), []string{"contact"}, standard, []string{"Jose@Example.com"})
	require.NoError(t, err)
	got := map[string]string{}
	for _, r := range recs {
		got[r.Ref.ID] = r.Email
	}
	require.Equal(t, map[string]string{
		c0:                                     "Jose@Example.com",
		"22222222-2222-4222-a222-222222222222": "Jose@Example.com", // the same address once normalised (IDNA maps full-width)
		"33333333-3333-4333-a333-333333333333": "Jose@Example.com",
	}, got)
}

// TestReadPageWithoutValueIsAnError: a 200 page of the opted-out read
// that is not a collection (no value array) fails the read, retryably,
// instead of ending it as if no record were left, which would move the
// watermark past the opt-outs it did not return.
func TestReadPageWithoutValueIsAnError(t *testing.T) {
	for name, body := range map[string]string{
		"null":     `null`,
		"no value": `{"@odata.context":"x"}`,
		"error":    `{"error":{"code":"0x80040216","message":"An unexpected error occurred."}}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := newEnv(t, dynamicstest.Options{})
			srv.AddContact(dynamicstest.Person{Email: "a@example.com", OptedOut: true})
			// Every GET of the Web API's entity sets answers body.
			c := clientFor(t, srv, func(o *dynamics.Options) {
				o.Transport = connectorstest.Rewriter{Match: func(r *http.Request) bool {
					return r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/WhoAmI")
				}, Edit: connectorstest.Replace(body)}
			})
			page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"contact"}, Field: standard})
			require.Error(t, err, "read %v", page.Records)
			require.False(t, connectors.Permanent(err))
		})
	}
}

package mailchimptest_test

import (
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

const million = 1_000_000

// BenchmarkGenerateMillion seeds a one-million-member audience and reports
// the heap it holds per member.
func BenchmarkGenerateMillion(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := mailchimptest.NewServer(mailchimptest.Options{})
		s.AddList("L1", "Big")
		if err := s.Generate("L1", million, nil); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/million, "bytes/member")
		runtime.KeepAlive(s)
		s.Close()
	}
}

// BenchmarkChangedPageMillion reads one since_last_changed page over HTTP
// from a one-million-member audience in which 100 members changed.
func BenchmarkChangedPageMillion(b *testing.B) {
	clk := newClock()
	s := mailchimptest.NewServer(mailchimptest.Options{Now: clk.Now})
	defer s.Close()
	s.AddList("L1", "Big")
	if err := s.Generate("L1", million, nil); err != nil {
		b.Fatal(err)
	}
	since := clk.Now()
	clk.Advance(time.Minute)
	for i := range 100 {
		if err := s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("member%d@example.com", i*9973), Status: "unsubscribed"}); err != nil {
			b.Fatal(err)
		}
	}
	u := s.URL + "/lists/L1/members?status=unsubscribed&sort_field=last_changed&sort_dir=ASC&count=1000&since_last_changed=" +
		url.QueryEscape(since.Format(time.RFC3339)) + "&fields=members.email_address,members.status,members.last_changed,total_items"
	for b.Loop() {
		req, _ := http.NewRequestWithContext(b.Context(), "GET", u, nil)
		req.SetBasicAuth("x", s.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(err, resp)
		}
		resp.Body.Close()
	}
}

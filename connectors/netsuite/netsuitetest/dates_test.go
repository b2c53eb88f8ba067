package netsuitetest_test

import (
	"net/http"
	"slices"
	"testing"
	"time"
	_ "time/tzdata" // America/New_York, whatever the machine has

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// emails runs q and returns the email column of its rows, in order.
func emails(t *testing.T, s *netsuitetest.Server, q string) []string {
	t.Helper()
	a := suiteql(t, s, q, "")
	require.Equal(t, http.StatusOK, a.status, a.body)
	var out []string
	for _, it := range a.body["items"].([]any) {
		out = append(out, it.(map[string]any)["email"].(string))
	}
	return out
}

func TestDateSemanticsInAFold(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	for _, tc := range []struct {
		dates netsuitetest.DateSemantics
		// from 01:30 (ambiguous) on, in order
		since []string
		// ORDER BY lastmodifieddate
		order []string
	}{
		// 01:20 EST reads "01:20", before "01:30"; 01:45 EDT is "01:45".
		{netsuitetest.WallClock, []string{"first-0145", "second-0145", "after-0210"}, []string{"first-0100", "second-0120", "first-0145", "second-0145", "after-0210"}},
		// 01:30 is 01:30 EDT (05:30Z): everything after that instant.
		{netsuitetest.EarlierInstant, []string{"first-0145", "second-0120", "second-0145", "after-0210"}, []string{"first-0100", "first-0145", "second-0120", "second-0145", "after-0210"}},
		// 01:30 is 01:30 EST (06:30Z).
		{netsuitetest.LaterInstant, []string{"second-0145", "after-0210"}, []string{"first-0100", "first-0145", "second-0120", "second-0145", "after-0210"}},
	} {
		t.Run(tc.dates.String(), func(t *testing.T) {
			s := netsuitetest.NewServer(netsuitetest.Options{TimeZone: ny, Dates: tc.dates})
			defer s.Close()
			// Added in time order, so that ids break the tie of the two
			// 01:45s the same way in every model.
			for _, r := range [][2]string{
				{"first-0100", "2026-11-01T05:00:00Z"},  // 01:00 EDT
				{"first-0145", "2026-11-01T05:45:00Z"},  // 01:45 EDT
				{"second-0120", "2026-11-01T06:20:00Z"}, // 01:20 EST
				{"second-0145", "2026-11-01T06:45:00Z"}, // 01:45 EST
				{"after-0210", "2026-11-01T07:10:00Z"},  // 02:10 EST
			} {
				lm, err := time.Parse(time.RFC3339, r[1])
				require.NoError(t, err)
				s.AddCustomer(netsuitetest.Entity{Email: r[0], LastModified: lm})
			}
			got := emails(t, s, "SELECT email FROM customer WHERE lastmodifieddate >= TO_DATE('2026-11-01 01:30:00', 'YYYY-MM-DD HH24:MI:SS') ORDER BY lastmodifieddate, id")
			require.Equal(t, tc.since, got)
			require.Equal(t, tc.order, emails(t, s, "SELECT email FROM customer ORDER BY lastmodifieddate, id"))

			// TO_CHAR is the local wall-clock time in every model.
			a := suiteql(t, s, "SELECT TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lm FROM customer WHERE email = 'second-0120'", "")
			require.Equal(t, http.StatusOK, a.status, a.body)
			require.Equal(t, "2026-11-01 01:20:00", a.body["items"].([]any)[0].(map[string]any)["lm"])
		})
	}
}

func TestDateSemanticsInAGap(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	for dates, want := range map[netsuitetest.DateSemantics][]string{
		// "02:30" does not exist: it sorts between 01:59 EST and 03:00 EDT.
		netsuitetest.WallClock: {"edt-0300", "edt-0340"},
		// Read back by the gap, as 01:30 EST.
		netsuitetest.EarlierInstant: {"est-0145", "edt-0300", "edt-0340"},
		// Read forward by the gap, as 03:30 EDT.
		netsuitetest.LaterInstant: {"edt-0340"},
	} {
		t.Run(dates.String(), func(t *testing.T) {
			s := netsuitetest.NewServer(netsuitetest.Options{TimeZone: ny, Dates: dates})
			defer s.Close()
			for email, at := range map[string]string{
				"est-0145": "2026-03-08T06:45:00Z",
				"edt-0300": "2026-03-08T07:00:00Z",
				"edt-0340": "2026-03-08T07:40:00Z",
			} {
				lm, err := time.Parse(time.RFC3339, at)
				require.NoError(t, err)
				s.AddCustomer(netsuitetest.Entity{Email: email, LastModified: lm})
			}
			got := emails(t, s, "SELECT email FROM customer WHERE lastmodifieddate >= TO_DATE('2026-03-08 02:30:00', 'YYYY-MM-DD HH24:MI:SS') ORDER BY lastmodifieddate")
			require.Equal(t, want, got)
		})
	}
}

func TestDateSemanticsDefaultsToWallClockAndUTC(t *testing.T) {
	// With no TimeZone every model reads the same, as the emulator did
	// before it had them.
	for _, dates := range []netsuitetest.DateSemantics{netsuitetest.WallClock, netsuitetest.EarlierInstant, netsuitetest.LaterInstant} {
		s := netsuitetest.NewServer(netsuitetest.Options{Dates: dates})
		lm := time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)
		s.AddCustomer(netsuitetest.Entity{Email: "a", LastModified: lm})
		s.AddCustomer(netsuitetest.Entity{Email: "b", LastModified: lm.Add(time.Second)})
		got := emails(t, s, "SELECT email FROM customer WHERE lastmodifieddate >= TO_DATE('2026-11-01 05:30:01', 'YYYY-MM-DD HH24:MI:SS')")
		require.Equal(t, []string{"b"}, got, dates)
		s.Close()
	}
	require.Equal(t, netsuitetest.WallClock, netsuitetest.Options{}.Dates)
}

func TestTrimFunctions(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	s.AddCustomer(netsuitetest.Entity{Email: "  ANN@Example.com "})
	s.AddCustomer(netsuitetest.Entity{Email: "ann@example.com\t"})
	s.AddCustomer(netsuitetest.Entity{Email: "bob@example.com"})
	got := emails(t, s, "SELECT email FROM customer WHERE LOWER(LTRIM(RTRIM(email))) IN ('ann@example.com') ORDER BY id")
	require.Equal(t, []string{"  ANN@Example.com "}, got, "blanks are trimmed, a tab is not (Oracle)")
	a := suiteql(t, s, "SELECT LTRIM(email) AS l, RTRIM(email) AS r FROM customer WHERE email = '  ANN@Example.com '", "")
	require.Equal(t, http.StatusOK, a.status, a.body)
	item := a.body["items"].([]any)[0].(map[string]any)
	require.Equal(t, "ANN@Example.com ", item["l"])
	require.Equal(t, "  ANN@Example.com", item["r"])
	require.True(t, slices.Contains(emails(t, s, "SELECT email FROM customer WHERE RTRIM(email) = 'bob@example.com'"), "bob@example.com"))
}

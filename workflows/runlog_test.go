package workflows_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/workflows"
)

var addressPattern = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}`)

// summaries are the run summary lines of a JSON log. (The SDK's own
// lines quote activity errors, which may quote a vendor's answer: the
// worker's logger masks addresses in every line, see worker.NewLogger.)
func summaries(t *testing.T, out *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "every line is JSON: %s", line)
		if m["msg"] == workflows.RunLogMessage {
			require.NotRegexp(t, addressPattern, line, "no address in a summary")
			lines = append(lines, m)
		}
	}
	return lines
}

// TestARunRecordsItsSuccessAndLogsOneSummary: a completed run records its
// end in the ledger (where every worker's metrics read it) and logs one
// summary line with its counts; a failed run logs one line naming the
// phase and the error's type, and records no success.
func TestARunRecordsItsSuccessAndLogsOneSummary(t *testing.T) {
	f := newFixture()
	var out bytes.Buffer
	f.log = slog.New(slog.NewJSONHandler(&out, nil))
	f.mk.Add("ann@example.com", connectors.StatusUnsubscribed)
	f.crm.Add("customer", "ann@example.com", "1")
	f.crm.Add("contact", "ann@example.com", "1")

	res := f.mustRun(t, workflows.SyncInput{}, nil)
	runs, err := f.led.LastRuns(t.Context())
	require.NoError(t, err)
	require.Contains(t, runs, id)
	require.True(t, runs[id].FinishedAt.Equal(res.FinishedAt.Truncate(time.Microsecond)), "the run's own end (to the µs), %v", runs[id].FinishedAt)

	lines := summaries(t, &out)
	require.Len(t, lines, 1)
	l := lines[0]
	require.Equal(t, "INFO", l["level"])
	require.Equal(t, id, l["integration"])
	require.Equal(t, "completed", l["result"])
	m := l["marketingToCRM"].(map[string]any)
	require.EqualValues(t, 1, m["unsubscribes"])
	require.EqualValues(t, 2, m["crmOptedOut"])
	require.EqualValues(t, 0, l["failedTransient"])

	out.Reset()
	f.mk.FailWith(&connectors.APIError{System: "mailchimp", Status: 401, Kind: connectors.ErrUnauthorized, Code: "API Key Invalid", Detail: "ann@example.com"})
	_, err = f.run(t, workflows.SyncInput{}, &res)
	require.Error(t, err)
	lines = summaries(t, &out)
	require.Len(t, lines, 1)
	require.Equal(t, "ERROR", lines[0]["level"])
	require.Equal(t, "failed", lines[0]["result"])
	require.Equal(t, string(workflows.PhaseUnsubscribes), lines[0]["phase"])
	require.Equal(t, activities.ErrTypeUnauthorized, lines[0]["errorType"])
	again, err := f.led.LastRuns(t.Context())
	require.NoError(t, err)
	require.Equal(t, runs, again, "a failed run is not a success")
}

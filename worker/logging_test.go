package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLogsMaskAddressesInEveryFormat: whatever quotes an address (an
// error from a vendor, a message), the worker's log lines do not carry
// it, in text or JSON; JSON lines are JSON.
func TestLogsMaskAddressesInEveryFormat(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var out bytes.Buffer
		log, err := NewLogger(&out, format, slog.LevelInfo)
		require.NoError(t, err)
		log.Error("Activity error.", "Error", errors.New("mailchimp: 400 Invalid Resource: ann.lee@example.com looks fake"),
			"note", "to bob%40example.org", "count", 3, "every", 2*time.Minute)
		require.NotContains(t, out.String(), "ann.lee@example.com", format)
		require.NotContains(t, out.String(), "bob%40example.org", format)
		require.Contains(t, out.String(), "a***@example.com", format)
		if format == "json" {
			var m map[string]any
			require.NoError(t, json.Unmarshal(out.Bytes(), &m))
			require.EqualValues(t, 3, m["count"])
			require.Equal(t, "2m0s", m["every"])
			require.Equal(t, "ERROR", m["level"])
		} else {
			require.True(t, strings.HasPrefix(out.String(), "time="), out.String())
		}
	}
	_, err := NewLogger(&bytes.Buffer{}, "xml", slog.LevelInfo)
	require.ErrorContains(t, err, `-log-format: "xml" is not text or json`)
}

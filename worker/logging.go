package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// NewLogger returns the worker's logger writing to w: "text" (slog's
// key=value lines, for a person) or "json" (one JSON object a line, for a
// log pipeline). Every component logs through it: the worker, the
// activities, the workflows (the SDK's replay-safe logger), the webhook
// receiver and the dev server.
//
// Every string and error it writes has its addresses masked (httpx.Redact:
// "j***@example.com"): the product's own lines carry hashes and counts,
// but the SDK's quote activity errors, which may quote a vendor's answer.
func NewLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: replaceAttr}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", format)
}

// envOr is the variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// replaceAttr masks the addresses in an attribute's text (strings,
// errors and other values that print as text) and writes durations as
// text ("2m0s"; JSON would give nanoseconds).
func replaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(httpx.Redact(a.Value.String()))
	case slog.KindDuration:
		a.Value = slog.StringValue(a.Value.Duration().String())
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			a.Value = slog.StringValue(httpx.Redact(v.Error()))
		case fmt.Stringer:
			a.Value = slog.StringValue(httpx.Redact(v.String()))
		}
	}
	return a
}

package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// NewLogger returns the worker's logger writing to w: "text" (slog's
// key=value lines, for a person) or "json" (one JSON object a line, for a
// log pipeline). Every component logs through it: the worker, the
// activities, the workflows (the SDK's replay-safe logger), the webhook
// receiver and the dev server.
func NewLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
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

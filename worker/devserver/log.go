package devserver

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// serverLogger adapts a *slog.Logger to the Temporal server's log.Logger, the same idea as
// the temporal CLI's devserver/log.go (github.com/temporalio/cli, temporalcli/devserver).
//
// The server logs a great deal at info level while it starts (membership, shard ownership,
// task queue loading), none of which helps a person running the demo, so min drops
// everything below it before it reaches the handler.
type serverLogger struct {
	log  *slog.Logger
	min  slog.Leveler
	tags []tag.Tag
	// stopping is set by Server.Stop and shared by every derived logger. Stopping a
	// one-process cluster makes each service complain, at warn and error, about the ones
	// already gone ("Not enough hosts to serve the request", failed polls and heartbeats):
	// hundreds of lines that mean nothing. Only a service that fails to stop is still told.
	stopping *atomic.Bool
}

// benign are messages the server logs at warn or above on every start of a setup like ours.
var benign = map[string]bool{
	// We serve no HTTP API and use no Nexus.
	"HTTP API port has not been set. Nexus HTTP endpoints will not be available. To enable Nexus, follow these instructions: https://github.com/temporalio/temporal/blob/main/docs/architecture/nexus.md#enabling-nexus.": true,
}

// failedStop is what the server logs when a service does not stop (temporal/fx.go).
const failedStop = "Failed to stop service"

var (
	_ log.Logger     = (*serverLogger)(nil)
	_ log.WithLogger = (*serverLogger)(nil)
)

func (l *serverLogger) Debug(msg string, tags ...tag.Tag) { l.emit(slog.LevelDebug, msg, tags) }
func (l *serverLogger) Info(msg string, tags ...tag.Tag)  { l.emit(slog.LevelInfo, msg, tags) }
func (l *serverLogger) Warn(msg string, tags ...tag.Tag)  { l.emit(slog.LevelWarn, msg, tags) }
func (l *serverLogger) Error(msg string, tags ...tag.Tag) { l.emit(slog.LevelError, msg, tags) }

// DPanic, Panic and Fatal only log: the server's own zap logger would panic or exit the
// process, and an embedded server must never take its host process down with it.
func (l *serverLogger) DPanic(msg string, tags ...tag.Tag) { l.emit(slog.LevelError, msg, tags) }
func (l *serverLogger) Panic(msg string, tags ...tag.Tag)  { l.emit(slog.LevelError, msg, tags) }
func (l *serverLogger) Fatal(msg string, tags ...tag.Tag)  { l.emit(slog.LevelError, msg, tags) }

// With keeps prepended tags (the server tags every service's logger with its name).
func (l *serverLogger) With(tags ...tag.Tag) log.Logger {
	all := make([]tag.Tag, 0, len(l.tags)+len(tags))
	all = append(append(all, l.tags...), tags...)
	return &serverLogger{log: l.log, min: l.min, tags: all, stopping: l.stopping}
}

func (l *serverLogger) emit(level slog.Level, msg string, tags []tag.Tag) {
	ctx := context.Background()
	if level < l.min.Level() || benign[msg] || (l.stopping.Load() && msg != failedStop) ||
		!l.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(l.tags)+len(tags))
	for _, t := range l.tags {
		attrs = append(attrs, slog.Any(t.Key(), t.Value()))
	}
	for _, t := range tags {
		attrs = append(attrs, slog.Any(t.Key(), t.Value()))
	}
	l.log.LogAttrs(ctx, level, msg, attrs...)
}

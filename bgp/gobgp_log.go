package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// goBGPLogger adapts GoBGP's logger interface to slog. GoBGP asks for its
// level (GetLevel) before expensive debug logging, so the level follows
// what the slog handler accepts.
type goBGPLogger struct {
	log *slog.Logger
}

func newGoBGPLogger(l *slog.Logger) *goBGPLogger {
	return &goBGPLogger{log: l.With("component", "gobgp")}
}

// quietMessages are GoBGP warnings that are expected in normal operation
// and logged at debug: TTL options fail on some sockets (loopback, IPv6)
// without consequence.
var quietMessages = []string{"cannot set TTL"}

func (l *goBGPLogger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	for _, q := range quietMessages {
		if strings.HasPrefix(msg, q) {
			level = slog.LevelDebug
		}
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k != gobgplog.FieldFacility {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	l.log.LogAttrs(ctx, level, msg, attrs...)
}

// Panic and Fatal mark GoBGP bugs ("code logic bug"); they must not
// return, and a panic gives the agent's supervisor a stack to look at.
func (l *goBGPLogger) Panic(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

func (l *goBGPLogger) Fatal(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

func (l *goBGPLogger) Error(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
}

func (l *goBGPLogger) Warn(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelWarn, msg, fields)
}

func (l *goBGPLogger) Info(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelInfo, msg, fields)
}

func (l *goBGPLogger) Debug(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelDebug, msg, fields)
}

// SetLevel is ignored: the slog handler owns the level.
func (l *goBGPLogger) SetLevel(gobgplog.LogLevel) {}

func (l *goBGPLogger) GetLevel() gobgplog.LogLevel {
	ctx := context.Background()
	switch {
	case l.log.Enabled(ctx, slog.LevelDebug):
		return gobgplog.DebugLevel
	case l.log.Enabled(ctx, slog.LevelInfo):
		return gobgplog.InfoLevel
	case l.log.Enabled(ctx, slog.LevelWarn):
		return gobgplog.WarnLevel
	}
	return gobgplog.ErrorLevel
}

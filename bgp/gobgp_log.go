package bgp

import (
	"context"
	"log/slog"
	"strings"
)

// goBGPLogger is the logger handed to GoBGP (v4 logs through slog): the
// agent's, tagged component=gobgp, with the messages that are expected in
// normal operation demoted to debug.
func goBGPLogger(l *slog.Logger) *slog.Logger {
	return slog.New(quietHandler{l.With("component", "gobgp").Handler()})
}

// quietMessages are GoBGP messages that say nothing is wrong: TTL options
// fail on some sockets (loopback, IPv6) without consequence, and Close
// calls Stop after StopBgp, whose second StopBgp finds the server stopped.
var quietMessages = []string{"cannot set TTL", "failed to stop BGP server"}

type quietHandler struct{ slog.Handler }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, q := range quietMessages {
		if strings.HasPrefix(r.Message, q) {
			r.Level = slog.LevelDebug
		}
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(as)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}

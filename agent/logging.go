package agent

import (
	"io"
	"log/slog"
)

// NewLogger is the agent's logger: text or JSON lines at the level that
// level holds (which calyxctl agent log-level changes at runtime).
func NewLogger(w io.Writer, format LogFormat, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

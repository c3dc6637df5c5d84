package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// --log-format json writes one JSON object per line; the level follows
// the LevelVar, as calyxctl agent log-level changes it.
func TestLoggerFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	level := new(slog.LevelVar)
	level.Set(slog.LevelInfo)
	log := NewLogger(&buf, LogJSON, level)
	log.Debug("hidden")
	log.Info("shown", "node", "h1")
	level.Set(slog.LevelDebug)
	log.Debug("now shown")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec["msg"] != "shown" || rec["node"] != "h1" || rec["level"] != "INFO" {
		t.Errorf("json line %q: %v %v", lines[0], rec, err)
	}
	buf.Reset()
	NewLogger(&buf, LogText, level).Info("plain")
	if !strings.HasPrefix(buf.String(), "time=") || !strings.Contains(buf.String(), "msg=plain") {
		t.Errorf("text line %q", buf.String())
	}
}

package agent

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's notify protocol (Type=notify): READY=1 once
// the dataplane is programmed, WATCHDOG=1 while every loop is healthy,
// STOPPING=1 on the way out, and STATUS= lines. Without NOTIFY_SOCKET
// (not started by systemd) every call does nothing.
type notifier struct {
	log *slog.Logger

	mu     sync.Mutex
	status string
}

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }

func (n *notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Debug("systemd notify", "state", state, "err", err)
	}
}

// setStatus sends a STATUS= line when it changed.
func (n *notifier) setStatus(s string) {
	n.mu.Lock()
	changed := s != n.status
	n.status = s
	n.mu.Unlock()
	if changed {
		n.send("STATUS=" + s)
	}
}

func (n *notifier) ready(status string) {
	n.setStatus(status)
	n.send(daemon.SdNotifyReady)
}

func (n *notifier) stopping() {
	n.send(daemon.SdNotifyStopping)
	n.setStatus("stopping: routes, chains and BGP routes at the peers stay in place")
}

// watchdogInterval is systemd's WatchdogSec for this process; 0 when off.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// watchdog feeds systemd's watchdog at half its interval while problems
// reports nothing, so that a dead or stalled loop gets the agent
// restarted; healthy is the STATUS line to restore once all is well again.
func (n *notifier) watchdog(ctx context.Context, every time.Duration, problems func() []string, healthy func() string) error {
	t := time.NewTicker(every)
	defer t.Stop()
	withheld := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if p := problems(); len(p) > 0 {
			if !withheld {
				n.log.Error("not feeding the systemd watchdog: a loop died or stalled", "problems", strings.Join(p, "; "))
			}
			withheld = true
			n.setStatus("unhealthy: " + strings.Join(p, "; "))
			continue
		}
		if withheld {
			n.log.Info("every loop healthy again; feeding the systemd watchdog")
			n.setStatus(healthy())
			withheld = false
		}
		n.send(daemon.SdNotifyWatchdog)
	}
}

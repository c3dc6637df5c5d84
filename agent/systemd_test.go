package agent_test

// The agent under systemd's notify protocol, on a real unixgram
// NOTIFY_SOCKET the test listens on: READY=1 after the dataplane is
// programmed, WATCHDOG=1 while its loops beat, no WATCHDOG=1 once one
// stalls (and /livez says which), STOPPING=1 on SIGTERM.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// notifySocket collects what the agent sends to NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	line string // one KEY=VALUE of a datagram
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, conn: conn}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			n.mu.Lock()
			for _, line := range strings.Split(strings.TrimSpace(string(buf[:k])), "\n") {
				n.msgs = append(n.msgs, notifyMsg{at: now, line: line})
			}
			n.mu.Unlock()
		}
	}()
	return n
}

// since returns the lines received at or after t.
func (n *notifySocket) since(t time.Time) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.msgs {
		if !m.at.Before(t) {
			out = append(out, m.line)
		}
	}
	return out
}

func count(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

func indexOf(lines []string, pred func(string) bool) int {
	for i, l := range lines {
		if pred(l) {
			return i
		}
	}
	return -1
}

// healthGet fetches path from the agent's health endpoint, which listens on
// the host namespace's loopback.
func (h *host) healthGet(path string) (int, string, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: h.dialInNS}}
	resp, err := client.Get("http://127.0.0.1:9099" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func TestSystemdNotify(t *testing.T) {
	requireRoot(t)
	sock := listenNotify(t)
	stall := filepath.Join(t.TempDir(), "stall")
	start := time.Now()
	h := newHost(t, hostOptions{
		env:   []string{"NOTIFY_SOCKET=" + sock.path, "WATCHDOG_USEC=400000"}, // fed every 200 ms
		hooks: []string{"--test-stall-when", stall, "--test-dataplane-deadline", "2s"},
	})

	testutil.Eventually(t, 30*time.Second, "READY=1", func() error {
		if count(sock.since(start), "READY=1") == 0 {
			return fmt.Errorf("received %q", sock.since(start))
		}
		return nil
	})
	lines := sock.since(start)
	ready := indexOf(lines, func(l string) bool { return l == "READY=1" })
	programming := indexOf(lines, func(l string) bool { return l == "STATUS=programming the dataplane" })
	waiting := indexOf(lines, func(l string) bool { return l == "STATUS=waiting for the datastore to be in sync" })
	if waiting < 0 || programming < waiting || ready < programming {
		t.Errorf("READY=1 must follow the datastore sync and the programming: %q", lines)
	}
	if i := indexOf(lines, func(l string) bool { return strings.HasPrefix(l, "STATUS=ready: ") }); i < 0 {
		t.Errorf("no STATUS=ready line: %q", lines)
	}

	// Healthy: the watchdog is fed.
	healthy := time.Now()
	time.Sleep(1500 * time.Millisecond)
	if n := count(sock.since(healthy), "WATCHDOG=1"); n < 3 {
		t.Errorf("%d WATCHDOG=1 in 1.5 s with every loop healthy, want at least 3 (every 200 ms)", n)
	}
	if code, body, err := h.healthGet("/livez"); err != nil || code != http.StatusOK {
		t.Errorf("/livez while healthy: %d %q %v", code, body, err)
	}

	// The dataplane loop stalls: /livez names it and the pings stop.
	if err := os.WriteFile(stall, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "/livez red with the dataplane loop stalled", func() error {
		code, body, err := h.healthGet("/livez")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "loop dataplane stalled") {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // a ping already on its way
	stalled := time.Now()
	time.Sleep(1500 * time.Millisecond)
	if n := count(sock.since(stalled), "WATCHDOG=1"); n != 0 {
		t.Errorf("%d WATCHDOG=1 with the dataplane loop stalled, want none", n)
	}
	if i := indexOf(sock.since(start), func(l string) bool { return strings.HasPrefix(l, "STATUS=unhealthy: loop dataplane stalled") }); i < 0 {
		t.Errorf("no STATUS=unhealthy line: %q", sock.since(stalled))
	}

	stopping := time.Now()
	if code := h.stopAgent(syscall.SIGTERM); code != 0 {
		t.Errorf("exit status after SIGTERM: %d", code)
	}
	if count(sock.since(stopping), "STOPPING=1") != 1 {
		t.Errorf("want one STOPPING=1 after SIGTERM, got %q", sock.since(stopping))
	}
}

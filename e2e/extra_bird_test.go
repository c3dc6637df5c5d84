package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// extraBird is a BIRD 2 of the test's own, in its own namespace plugged
// into the lab's fabric bridge, so that a test can give it a configuration
// (a password, say) without touching the lab's ToR.
type extraBird struct {
	IP    string
	Netns string
	// Port is its link's end in the fabric namespace (bridge port):
	// setting it down cuts BIRD off while every host's link stays up.
	Port   string
	socket string
}

// startExtraBird plugs a namespace into the fabric with address ip and
// runs BIRD in it with cfg (as a child of the test, in the foreground:
// a daemonized BIRD lingers as a zombie here). Everything goes in
// t.Cleanup, which runs before the lab's Down.
func startExtraBird(t *testing.T, l *lab.Lab, ip, cfg string) *extraBird {
	t.Helper()
	fabric, err := l.Namespace("fabric")
	if err != nil {
		t.Fatal(err)
	}
	suffix := randomHex(t, 4)
	b := &extraBird{IP: ip, Netns: "e2ebird-" + suffix}
	port := "e2eb" + suffix // the bridge port in the fabric namespace (<= 15 bytes)
	b.Port = port
	dir := t.TempDir()
	b.socket = filepath.Join(dir, "bird.ctl")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ip4 := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip4("netns", "add", b.Netns)
	t.Cleanup(func() {
		// Deleting the namespace removes both ends of the veth pair.
		if out, err := exec.Command("ip", "netns", "delete", b.Netns).CombinedOutput(); err != nil {
			t.Errorf("removing namespace %s: %v: %s", b.Netns, err, out)
		}
	})
	// Both ends made from inside namespaces: nothing appears in the root one.
	ip4("-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", b.Netns)
	ip4("-n", fabric, "link", "set", port, "master", "br0", "up")
	ip4("-n", b.Netns, "link", "set", "lo", "up")
	ip4("-n", b.Netns, "addr", "add", ip+"/24", "dev", "eth0")
	ip4("-n", b.Netns, "link", "set", "eth0", "up")

	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "bird.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", b.Netns, "bird", "-f", "-c", conf, "-s", b.socket)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting BIRD in %s: %v", b.Netns, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // `ip netns exec` execs in place: this is BIRD
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if data, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("---- BIRD %s log\n%s", b.IP, data)
			}
		}
	})
	testutil.Eventually(t, 10*time.Second, "BIRD "+ip+" answers on its socket", func() error {
		select {
		case <-exited:
			data, _ := os.ReadFile(logf.Name())
			t.Fatalf("BIRD %s exited:\n%s", ip, data)
		default:
		}
		_, err := b.birdc(ctx, "show", "status")
		return err
	})
	return b
}

func (b *extraBird) birdc(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// established reports whether BIRD's BGP protocol name is Established.
func (b *extraBird) established(ctx context.Context, name string) (bool, error) {
	out, err := b.birdc(ctx, "show", "protocols", name)
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "Established"), nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(buf)
}

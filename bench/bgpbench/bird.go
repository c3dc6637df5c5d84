package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// birdProc is a BIRD this benchmark runs as its own child, in the
// foreground (bird -f): BIRD's daemon mode leaves a zombie on this kind of
// machine (LAB-NOTES).
type birdProc struct {
	name string
	sock string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
}

// startBird writes cfg to dir/NAME.conf and runs BIRD inside netns, then
// waits until birdc answers.
func startBird(ctx context.Context, name, netns, dir, cfg string) (*birdProc, error) {
	conf := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("writing the %s BIRD config: %w", name, err)
	}
	b := &birdProc{name: name, sock: filepath.Join(dir, name+".ctl"), log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(b.log)
	if err != nil {
		return nil, fmt.Errorf("%s BIRD log: %w", name, err)
	}
	defer logf.Close() // the child holds its own copy
	b.cmd = exec.Command("ip", "netns", "exec", netns, "bird", "-f", "-c", conf, "-s", b.sock)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches only us, and
	// our cleanup stops BIRD after the measurement has unwound.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s BIRD in %s: %w", name, netns, err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	if err := b.waitReady(ctx, 60*time.Second); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

func (b *birdProc) waitReady(parent context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-b.done:
			return fmt.Errorf("the %s BIRD exited at start (log %s): %s", b.name, b.log, tail(b.log))
		default:
		}
		out, err := b.birdc(ctx, "show", "status")
		if err == nil && strings.Contains(out, "BIRD") {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the %s BIRD did not answer on %s within %s: %w (last: %v)", b.name, b.sock, timeout, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// birdc runs one birdc command on this BIRD's control socket.
func (b *birdProc) birdc(ctx context.Context, args ...string) (string, error) {
	out, err := run(ctx, "birdc", append([]string{"-s", b.sock}, args...)...)
	if err != nil {
		return out, fmt.Errorf("%s BIRD: %w", b.name, err)
	}
	return out, nil
}

// command runs a birdc command that changes state and checks BIRD's
// answer (birdc exits 0 even when BIRD refuses).
func (b *birdProc) command(ctx context.Context, args ...string) error {
	out, err := b.birdc(ctx, args...)
	if err != nil {
		return err
	}
	if strings.Contains(out, "syntax error") || strings.Contains(out, "not found") {
		return fmt.Errorf("%s BIRD refused %q: %s", b.name, strings.Join(args, " "), out)
	}
	return nil
}

// established reports whether the BGP protocol is Established.
func (b *birdProc) established(ctx context.Context, protocol string) (bool, error) {
	out, err := b.birdc(ctx, "show", "protocols", protocol)
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "Established"), nil
}

// waitEstablished polls until every protocol is Established.
func (b *birdProc) waitEstablished(parent context.Context, timeout time.Duration, protocols ...string) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	for {
		var down []string
		for _, p := range protocols {
			up, err := b.established(ctx, p)
			if err != nil || !up {
				down = append(down, p)
			}
		}
		if len(down) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			out, _ := b.birdc(context.Background(), "show", "protocols")
			return fmt.Errorf("%s BIRD: sessions %v not Established within %s: %w\n%s", b.name, down, timeout, ctx.Err(), out)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (b *birdProc) pid() int { return b.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after a grace period, and reaps BIRD.
func (b *birdProc) stop() {
	if b == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	_ = os.Remove(b.sock)
}

// rssMiB reads a process's resident set size.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("RSS of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					return 0, fmt.Errorf("RSS of pid %d: %w", pid, err)
				}
				return kb / 1024, nil
			}
		}
	}
	return 0, errors.New("RSS of pid " + strconv.Itoa(pid) + ": no VmRSS line")
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux the lab runs on).
const clockTicks = 100

// cpuSeconds is the user plus system CPU time a process has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; count from after ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("CPU time of pid %d: unexpected /proc/PID/stat", pid)
	}
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("CPU time of pid %d: unexpected /proc/PID/stat", pid)
	}
	return (utime + stime) / clockTicks, nil
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

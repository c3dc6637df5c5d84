package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// run runs a command to completion and returns its trimmed combined output;
// the error names the command and carries its output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	path, err := lookTool(name)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		if text != "" {
			return text, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, text)
		}
		return text, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return text, nil
}

// ipIn runs `ip -n NS ARGS...`.
func ipIn(ctx context.Context, netns string, args ...string) error {
	_, err := run(ctx, "ip", append([]string{"-n", netns}, args...)...)
	return err
}

// startDetached starts argv inside netns in its own session and process
// group, with stdout and stderr appended to logPath and stdin from
// /dev/null, so that it outlives the calyx-lab process that started it and
// a Ctrl-C in the terminal does not reach it. The caller may Wait on the
// returned command to reap it; a calyx-lab that exits leaves that to init.
func startDetached(netns string, argv []string, logPath string, env []string) (*exec.Cmd, Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, Proc{}, fmt.Errorf("log file for %s: %w", argv[0], err)
	}
	defer logf.Close() // the child holds its own copy
	fmt.Fprintf(logf, "=== %s calyx-lab starts (netns %s): %s\n", time.Now().Format(time.RFC3339), netns, strings.Join(argv, " "))

	ip, err := lookTool("ip")
	if err != nil {
		return nil, Proc{}, err
	}
	cmd := exec.Command(ip, append([]string{"netns", "exec", netns}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, Proc{}, fmt.Errorf("starting %s in %s: %w", argv[0], netns, err)
	}
	p := Proc{PID: cmd.Process.Pid, Netns: netns, Argv: argv, Log: logPath}
	// `ip netns exec` execs the command in place, so the PID stays.
	p.StartTicks, _ = procStartTicks(p.PID)
	return cmd, p, nil
}

// procStat reads the state letter and start time of a process.
func procStat(pid int) (state byte, startTicks uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces; fields restart after ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return fields[0][0], start, nil
}

func procStartTicks(pid int) (uint64, error) {
	_, t, err := procStat(pid)
	return t, err
}

// alive reports whether the process recorded in p still runs: same PID and
// start time, and not a zombie.
func (p Proc) alive() bool {
	if p.PID <= 0 {
		return false
	}
	state, start, err := procStat(p.PID)
	if err != nil {
		return false
	}
	if p.StartTicks != 0 && start != p.StartTicks {
		return false // the PID was reused
	}
	return state != 'Z' && state != 'X'
}

// stopProc sends SIGTERM to the process group, waits up to grace for the
// process to exit, then sends SIGKILL. It only signals the recorded process
// (PID and start time match), never a stranger that reused the PID.
func stopProc(p Proc, grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	signalGroup(p.PID, syscall.SIGTERM)
	if waitGone(p, grace) {
		return nil
	}
	signalGroup(p.PID, syscall.SIGKILL)
	if waitGone(p, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
}

// signalGroup sends sig to the process group of pid (it leads one: setsid) and
// to pid itself, in case it is not a group leader (found by netns scan).
func signalGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
	_ = syscall.Kill(pid, sig)
}

func waitGone(p Proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !p.alive() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tailFile returns the last n lines of a file, for error messages that say
// why a process died.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFailed says why a wait of Up ended: the caller gave up (Ctrl-C) or
// the time ran out; last is the last error seen, hint where to look.
func waitFailed(parent context.Context, what string, timeout time.Duration, last error, hint string) error {
	if err := parent.Err(); err != nil {
		return fmt.Errorf("interrupted while waiting for %s: %w", what, err)
	}
	msg := fmt.Sprintf("%s: not ready within %s", what, timeout)
	if last != nil {
		msg += ": " + last.Error()
	}
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return errors.New(msg)
}

// errProcDied explains a process that exited while the lab waited for it.
func errProcDied(p Proc) error {
	msg := fmt.Sprintf("%s (pid %d) exited; see %s", p.Name, p.PID, p.Log)
	if t := tailFile(p.Log, 8); t != "" {
		msg += ", which ends with:\n" + t
	}
	return errors.New(msg)
}

package e2e

import (
	"bufio"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// soakProbeInterval is the gap between two echoes of one pair.
const soakProbeInterval = 200 * time.Millisecond

// soakPing is one long-running `ping` from a long-lived workload to one
// on another host. Each echo has a sequence number, so a loss is an exact
// count, and its send time (start + (seq-1) * interval) places it on the
// timeline.
type soakPing struct {
	from, to, toIP string
	cmd            *exec.Cmd
	start          time.Time
	exited         chan struct{}

	mu          sync.Mutex
	got         map[int]bool // sequence numbers answered (unwrapped)
	lastSeq     int
	transmitted int
	waitErr     error
}

var (
	soakReplyRE = regexp.MustCompile(`icmp_seq=(\d+) `)
	soakTxRE    = regexp.MustCompile(`(\d+) packets transmitted`)
)

// startSoakPing starts ping inside the source's namespace.
func startSoakPing(netns, from, to, toIP string) (*soakPing, error) {
	p := &soakPing{from: from, to: to, toIP: toIP, got: map[int]bool{}, exited: make(chan struct{})}
	p.cmd = exec.Command("ip", "netns", "exec", netns, "ping", "-n", "-i", strconv.FormatFloat(soakProbeInterval.Seconds(), 'f', 3, 64), "-W", "1", toIP)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("ping %s -> %s: %w", from, to, err)
	}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.line(sc.Text())
		}
		err := p.cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
	}()
	return p, nil
}

func (p *soakPing) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := soakReplyRE.FindStringSubmatch(s); m != nil {
		seq, _ := strconv.Atoi(m[1])
		// The 16-bit sequence wraps after about 3.6 hours at 5/s.
		for seq+32768 < p.lastSeq {
			seq += 65536
		}
		p.lastSeq = max(p.lastSeq, seq)
		p.got[seq] = true
		return
	}
	if m := soakTxRE.FindStringSubmatch(s); m != nil {
		p.transmitted, _ = strconv.Atoi(m[1])
	}
}

// running reports whether ping still runs.
func (p *soakPing) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends ping with SIGINT (it prints its statistics) and waits.
func (p *soakPing) stop() {
	if p.running() {
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGINT)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// soakPingResult is the outcome of one pair.
type soakPingResult struct {
	From, To    string
	Sent, Lost  int
	LostAt      []time.Time
	ExitedEarly bool
}

// result counts the echoes sent up to a second before the end (the last
// ones may still be in flight) and those of them never answered.
func (p *soakPing) result(early bool) soakPingResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := soakPingResult{From: p.from, To: p.to, ExitedEarly: early}
	tx := p.transmitted
	if tx == 0 {
		tx = p.lastSeq
	}
	r.Sent = max(0, tx-int(time.Second/soakProbeInterval))
	for seq := 1; seq <= r.Sent; seq++ {
		if !p.got[seq] {
			r.Lost++
			r.LostAt = append(r.LostAt, p.start.Add(time.Duration(seq-1)*soakProbeInterval))
		}
	}
	return r
}

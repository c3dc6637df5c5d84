package netbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

const iperfPort = "5201"

// stream is one iperf3 run's outcome.
type stream struct {
	gbps    float64
	retrans int
}

// iperfReport is the part of `iperf3 -J` that is read.
type iperfReport struct {
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs one TCP test of streams parallel streams: `iperf3 -s -1` in
// server's namespace, the client in client's, toward dst, for secs seconds.
// A target "netns:NAME" is a namespace outside the lab (see command).
func iperf(ctx context.Context, l *lab.Lab, server, client, dst string, secs, streams int) (stream, error) {
	srv, err := command(ctx, l, server, "iperf3", "-s", "-1", "-p", iperfPort)
	if err != nil {
		return stream{}, err
	}
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return stream{}, fmt.Errorf("iperf3 server in %s: %w", server, err)
	}
	exited := make(chan struct{})
	go func() { _ = srv.Wait(); close(exited) }()
	defer func() {
		// -1 makes the server leave after its one test; anything else is
		// killed so that nothing of this run lingers.
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
	}()
	if err := waitListening(ctx, l, server, exited); err != nil {
		_ = srv.Process.Kill()
		return stream{}, fmt.Errorf("iperf3 server in %s: %w: %s", server, err, strings.TrimSpace(srvOut.String()))
	}
	cl, err := command(ctx, l, client, "iperf3", "-c", dst, "-p", iperfPort, "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J")
	if err != nil {
		_ = srv.Process.Kill()
		return stream{}, err
	}
	var stderr bytes.Buffer
	cl.Stderr = &stderr
	out, runErr := cl.Output()
	if ctx.Err() != nil {
		_ = srv.Process.Kill()
		return stream{}, fmt.Errorf("iperf3 %s -> %s interrupted: %w", client, server, ctx.Err())
	}
	var rep iperfReport
	if err := json.Unmarshal(out, &rep); err != nil {
		_ = srv.Process.Kill()
		return stream{}, fmt.Errorf("iperf3 %s -> %s (%s): %w; unreadable report: %v: %s", client, server, dst, runErr, err, strings.TrimSpace(stderr.String()))
	}
	if rep.Error != "" || runErr != nil {
		_ = srv.Process.Kill()
		return stream{}, fmt.Errorf("iperf3 %s -> %s (%s): %s %w", client, server, dst, rep.Error, runErr)
	}
	if rep.End.SumReceived.BitsPerSecond <= 0 {
		return stream{}, fmt.Errorf("iperf3 %s -> %s (%s): nothing received", client, server, dst)
	}
	return stream{gbps: rep.End.SumReceived.BitsPerSecond / 1e9, retrans: rep.End.SumSent.Retransmits}, nil
}

// waitListening polls the server's namespace until the port listens.
func waitListening(ctx context.Context, l *lab.Lab, server string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := command(ctx, l, server, "ss", "-Hltn", "sport = :"+iperfPort)
		if err != nil {
			return err
		}
		out, err := c.Output()
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before listening")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("not listening on port " + iperfPort + " after 10 s")
		}
	}
}

// command is l.Command for a lab target, or `ip netns exec NAME` for a
// target "netns:NAME" (a namespace this benchmark made beside the lab).
func command(ctx context.Context, l *lab.Lab, target string, argv ...string) (*exec.Cmd, error) {
	if ns, ok := strings.CutPrefix(target, "netns:"); ok {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...), nil
	}
	return l.Command(ctx, target, argv...)
}

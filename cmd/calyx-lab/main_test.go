package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/e2e/lab"
)

func TestUsageAndBadInput(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "calyx-lab up") {
		t.Errorf("no args: code %d, out %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"add", "--dir", t.TempDir(), "x"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "usage: calyx-lab add") {
		t.Errorf("add without --host: code %d, stderr %q", code, errb.String())
	}
	if _, err := parseLabels("app=web,tier"); err == nil {
		t.Error("parseLabels accepted a label without =")
	}
	if l, err := parseLabels("app=web, tier=db"); err != nil || l["app"] != "web" || l["tier"] != "db" {
		t.Errorf("parseLabels: %v %v", l, err)
	}
}

// TestCLIWithoutAgents runs the commands in process against a real lab
// without agents: up, status, exec, ping --all, down (twice).
func TestCLIWithoutAgents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "etcd", "bird", "birdc", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	dir := t.TempDir()
	t.Cleanup(func() { _ = lab.DownDir(dir, false, nil) })
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append(args[:1:1], append([]string{"--dir", dir}, args[1:]...)...), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := cli("up", "--hosts", "2", "--peer", "bird", "--skip-agents"); code != 0 || !strings.Contains(out, "lab up") {
		t.Fatalf("up: %d %s %s", code, out, errs)
	}
	if code, _, errs := cli("up", "--hosts", "2", "--skip-agents"); code == 0 || !strings.Contains(errs, "calyx-lab down") {
		t.Errorf("second up over a live lab: %d %s", code, errs)
	}
	code, out, errs := cli("status")
	if code != 0 || !strings.Contains(out, "host2") || !strings.Contains(out, lab.HostIP(2)) || !strings.Contains(out, "tor "+lab.TorIP) {
		t.Errorf("status: %d %s %s", code, out, errs)
	}
	if code, out, errs := cli("exec", "host2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"); code != 0 || !strings.Contains(out, lab.HostIP(2)+"/24") {
		t.Errorf("exec: %d %q %s", code, out, errs)
	}
	if code, _, _ := cli("exec", "host1", "--", "false"); code != 1 {
		t.Errorf("exec false: exit %d, want 1", code)
	}
	code, out, errs = cli("ping", "--all")
	if code != 0 || !strings.Contains(out, "2 of 2 pairs answered") {
		t.Errorf("ping --all: %d %s %s", code, out, errs)
	}
	if code, _, errs := cli("add", "w1", "--host", "host1"); code == 0 || !strings.Contains(errs, "no agents") {
		t.Errorf("add without agents: %d %s", code, errs)
	}
	for i := 0; i < 2; i++ {
		if code, out, errs := cli("down"); code != 0 || !strings.Contains(out, "is down") {
			t.Fatalf("down #%d: %d %s %s", i+1, code, out, errs)
		}
	}
	if code, _, errs := cli("status"); code == 0 || !strings.Contains(errs, "up first") {
		t.Errorf("status after down: %d %s", code, errs)
	}
	outNS, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(outNS), lab.Prefix(dir)) {
		t.Errorf("namespaces left after down:\n%s", outNS)
	}
}

// TestCLIDualStackWithoutAgents: up --ipv6 gives every host an IPv6
// address that status shows, and ping --all prints one matrix per family.
func TestCLIDualStackWithoutAgents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "etcd", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	dir := t.TempDir()
	t.Cleanup(func() { _ = lab.DownDir(dir, false, nil) })
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append(args[:1:1], append([]string{"--dir", dir}, args[1:]...)...), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, _, errs := cli("up", "--hosts", "2", "--pool6", "fd00:1::/56", "--skip-agents"); code == 0 || !strings.Contains(errs, "needs --ipv6") {
		t.Errorf("--pool6 without --ipv6: %d %s", code, errs)
	}
	if code, out, errs := cli("up", "--hosts", "2", "--ipv6", "--skip-agents"); code != 0 || !strings.Contains(out, "lab up") {
		t.Fatalf("up --ipv6: %d %s %s", code, out, errs)
	}
	code, out, errs := cli("status")
	if code != 0 || !strings.Contains(out, lab.HostIP(2)+","+lab.HostIPv6(2)) || !strings.Contains(out, "IPv6 pool "+lab.DefaultPool6) {
		t.Errorf("status: %d %s %s", code, out, errs)
	}
	code, out, errs = cli("ping", "--all")
	if code != 0 || !strings.Contains(out, "IPv4\n") || !strings.Contains(out, "IPv6\n") || strings.Count(out, "2 of 2 pairs answered") != 2 {
		t.Errorf("ping --all: %d %s %s", code, out, errs)
	}
	if code, out, errs := cli("down"); code != 0 || !strings.Contains(out, "is down") {
		t.Fatalf("down: %d %s %s", code, out, errs)
	}
}

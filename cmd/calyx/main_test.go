package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/calyx-net/calyx/cni/agenttest"
	apipb "github.com/calyx-net/calyx/cni/api"
)

// pluginBin is the calyx binary built once for all tests.
var pluginBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "calyx-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		pluginBin = filepath.Join(dir, "calyx")
		build := exec.Command("go", "build", "-o", pluginBin, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build calyx:", err)
			return 1
		}
		return m.Run()
	}())
}

type outcome struct {
	stdout, stderr []byte
	exitCode       int
}

// cniError decodes stdout as a CNI error, failing if the run succeeded.
func (o outcome) cniError(t *testing.T) (code uint, msg string) {
	t.Helper()
	if o.exitCode == 0 {
		t.Fatalf("plugin succeeded, want an error; stdout: %s", o.stdout)
	}
	var e struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(o.stdout, &e); err != nil {
		t.Fatalf("error output is not CNI error JSON: %v\nstdout: %s\nstderr: %s", err, o.stdout, o.stderr)
	}
	return e.Code, e.Msg + " | " + e.Details
}

func (o outcome) ok(t *testing.T) []byte {
	t.Helper()
	if o.exitCode != 0 {
		t.Fatalf("plugin exited %d\nstdout: %s\nstderr: %s", o.exitCode, o.stdout, o.stderr)
	}
	return o.stdout
}

// runPlugin runs the binary the way a runtime does: CNI_* environment, the
// config on stdin, the answer on stdout.
func runPlugin(t testing.TB, env map[string]string, stdin []byte) outcome {
	t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{"CNI_PATH=" + filepath.Dir(pluginBin)}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run calyx: %v", err)
	}
	return outcome{stdout: stdout.Bytes(), stderr: stderr.Bytes(), exitCode: cmd.ProcessState.ExitCode()}
}

func verbEnv(command, containerID, netns string) map[string]string {
	return map[string]string{
		"CNI_COMMAND":     command,
		"CNI_CONTAINERID": containerID,
		"CNI_NETNS":       netns,
		"CNI_IFNAME":      "eth0",
		"CNI_ARGS":        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
	}
}

func conf(t *testing.T, cniVersion, socket string, extra map[string]any) []byte {
	t.Helper()
	c := map[string]any{"cniVersion": cniVersion, "name": "calyx", "type": "calyx", "agentSocket": socket, "mtu": 1500}
	for k, v := range extra {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// netns creates a network namespace for the workload, as a runtime would,
// and removes it when the test ends. The plugin only passes its path on,
// but skel checks it is not the plugin's own namespace.
func netns(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		return "/var/run/netns/calyxcni-missing"
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "calyxcni-" + hex.EncodeToString(suffix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return "/var/run/netns/" + name
}

func TestVersion(t *testing.T) {
	out := runPlugin(t, map[string]string{"CNI_COMMAND": "VERSION"}, nil).ok(t)
	var info struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("VERSION output %s: %v", out, err)
	}
	if info.CNIVersion != "1.1.0" || strings.Join(info.SupportedVersions, ",") != "0.4.0,1.0.0,1.1.0" {
		t.Errorf("VERSION: %s", out)
	}
}

func TestAboutWithoutCommand(t *testing.T) {
	o := runPlugin(t, nil, nil)
	if o.exitCode != 0 || !strings.Contains(string(o.stderr), "CNI plugin calyx") {
		t.Errorf("no CNI_COMMAND: exit %d, stderr %q", o.exitCode, o.stderr)
	}
}

// TestVerbsAgainstFakeAgent drives every verb through the binary, with the
// result format of each supported version.
func TestVerbsAgainstFakeAgent(t *testing.T) {
	agent := agenttest.Start(t)
	ns := netns(t)

	for i, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			id := fmt.Sprintf("ctr%d", i)
			stdin := conf(t, v, agent.Socket, map[string]any{"runtimeConfig": map[string]any{"labels": map[string]string{"app": "web"}}})
			out := runPlugin(t, verbEnv("ADD", id, ns), stdin).ok(t)

			var result map[string]any
			if err := json.Unmarshal(out, &result); err != nil {
				t.Fatalf("ADD output %s: %v", out, err)
			}
			if result["cniVersion"] != v {
				t.Errorf("ADD result cniVersion %v, want %s", result["cniVersion"], v)
			}
			ips := result["ips"].([]any)
			ip := ips[0].(map[string]any)
			if !strings.HasPrefix(ip["address"].(string), "10.244.0.") || ip["interface"] != 1.0 {
				t.Errorf("ADD ip %v", ip)
			}
			if _, has := ip["version"]; has != (v == "0.4.0") {
				t.Errorf("ips[0].version present=%v in a %s result", has, v)
			}
			ifaces := result["interfaces"].([]any)
			if w := ifaces[1].(map[string]any); w["name"] != "eth0" || w["sandbox"] != ns {
				t.Errorf("workload interface %v", w)
			}
			att := agent.Attachments()
			if len(att) != 1 || att[0].ContainerID != id || att[0].Labels["app"] != "web" || att[0].Args.GetK8SPodName() != "web-0" || att[0].MTU != 1500 {
				t.Fatalf("agent attachments after ADD: %+v", att)
			}

			// CHECK with the ADD result as prevResult, as a runtime does.
			runPlugin(t, verbEnv("CHECK", id, ns), conf(t, v, agent.Socket, map[string]any{"prevResult": result})).ok(t)

			runPlugin(t, verbEnv("DEL", id, ns), stdin).ok(t)
			if att := agent.Attachments(); len(att) != 0 {
				t.Errorf("attachments after DEL: %+v", att)
			}
			// DEL again (and without a netns): the agent no longer knows it.
			runPlugin(t, verbEnv("DEL", id, ""), stdin).ok(t)
		})
	}

	t.Run("STATUS", func(t *testing.T) {
		env := map[string]string{"CNI_COMMAND": "STATUS"}
		runPlugin(t, env, conf(t, "1.1.0", agent.Socket, nil)).ok(t)
		agent.SetReady(false, "datastore not in sync")
		defer agent.SetReady(true, "")
		code, msg := runPlugin(t, env, conf(t, "1.1.0", agent.Socket, nil)).cniError(t)
		if code != 50 || !strings.Contains(msg, "datastore not in sync") {
			t.Errorf("STATUS of a not-ready agent: %d %q", code, msg)
		}
	})

	t.Run("GC", func(t *testing.T) {
		for _, id := range []string{"keep", "stale"} {
			runPlugin(t, verbEnv("ADD", id, ns), conf(t, "1.1.0", agent.Socket, nil)).ok(t)
		}
		gc := conf(t, "1.1.0", agent.Socket, map[string]any{
			"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}},
		})
		runPlugin(t, map[string]string{"CNI_COMMAND": "GC"}, gc).ok(t)
		if att := agent.Attachments(); len(att) != 1 || att[0].ContainerID != "keep" {
			t.Errorf("attachments after GC: %+v", att)
		}
	})
}

func TestAgentDown(t *testing.T) {
	dir, err := os.MkdirTemp("", "calyxcni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	socket := filepath.Join(dir, "agent.sock")

	code, msg := runPlugin(t, verbEnv("ADD", "c1", netns(t)), conf(t, "1.1.0", socket, nil)).cniError(t)
	if code != 11 || !strings.Contains(msg, "calyx agent is not reachable at "+socket) || !strings.Contains(msg, "check that calyx-agent is running") {
		t.Errorf("ADD with the agent down: %d %q", code, msg)
	}
	code, msg = runPlugin(t, map[string]string{"CNI_COMMAND": "STATUS"}, conf(t, "1.1.0", socket, nil)).cniError(t)
	if code != 50 || !strings.Contains(msg, socket) {
		t.Errorf("STATUS with the agent down: %d %q", code, msg)
	}

	// An agent that stops between calls.
	agent := agenttest.Start(t)
	runPlugin(t, map[string]string{"CNI_COMMAND": "STATUS"}, conf(t, "1.1.0", agent.Socket, nil)).ok(t)
	agent.Stop()
	code, _ = runPlugin(t, verbEnv("DEL", "c1", ""), conf(t, "1.1.0", agent.Socket, nil)).cniError(t)
	if code != 11 {
		t.Errorf("DEL after the agent stopped: code %d, want 11", code)
	}
}

func TestBadInput(t *testing.T) {
	agent := agenttest.Start(t)
	ns := netns(t)
	for _, tc := range []struct {
		name     string
		stdin    string
		wantCode uint
		wantText string
	}{
		{"malformed JSON", `{"cniVersion":"1.1.0","name":"calyx",`, 6, "unexpected end of JSON input"},
		{"not an object", `["calyx"]`, 6, "cannot unmarshal array"},
		{"relative agentSocket", `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":"run/agent.sock"}`, 7, "agentSocket must be an absolute path"},
		// The binary checks only what it needs to find the agent; the rest is
		// checked by the agent's CNI protocol code before its CNI service.
		{"negative mtu", `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":SOCKET,"mtu":-1}`, 7, "mtu must be between"},
		{"mtu not a number", `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":SOCKET,"mtu":"big"}`, 7, "mtu must be a JSON number"},
		{"unsupported version", `{"cniVersion":"0.3.1","name":"calyx","type":"calyx","agentSocket":SOCKET}`, 1, "incompatible CNI versions"},
		{"socket not a string", `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":7}`, 7, "agentSocket must be a JSON string"},
		{"no name", `{"cniVersion":"1.1.0","type":"calyx","agentSocket":SOCKET}`, 7, "missing network name"},
		{"bad container id", `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":SOCKET}`, 4, "invalid characters in containerID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := strings.ReplaceAll(tc.stdin, "SOCKET", strconv.Quote(agent.Socket))
			env := verbEnv("ADD", "bad", ns)
			if tc.name == "bad container id" {
				env["CNI_CONTAINERID"] = "bad/id"
			}
			code, msg := runPlugin(t, env, []byte(stdin)).cniError(t)
			if code != tc.wantCode || !strings.Contains(msg, tc.wantText) {
				t.Errorf("got %d %q, want %d containing %q", code, msg, tc.wantCode, tc.wantText)
			}
		})
	}
	if len(agent.Requests()) != 0 {
		t.Errorf("bad input reached the agent: %v", agent.Requests())
	}
}

// TestLibcniConflist drives the binary through libcni with the shipped
// conflist, as containerd and CRI-O do, including the labels capability.
func TestLibcniConflist(t *testing.T) {
	agent := agenttest.Start(t)
	ns := netns(t)

	shipped, err := os.ReadFile("../../deploy/cni/10-calyx.conflist")
	if err != nil {
		t.Fatal(err)
	}
	confDir, cacheDir := t.TempDir(), t.TempDir()
	patched := bytes.Replace(shipped, []byte(`"/var/run/calyx/agent.sock"`), []byte(`"`+agent.Socket+`"`), 1)
	if bytes.Equal(patched, shipped) {
		t.Fatal("shipped conflist has no agentSocket to point at the test agent")
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-calyx.conflist"), patched, 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.LoadNetworkConf(confDir, "calyx")
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(pluginBin)}, cacheDir, nil)
	ctx := context.Background()
	rt := &libcni.RuntimeConf{
		ContainerID:    "libcni-1",
		NetNS:          ns,
		IfName:         "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web-1"}},
		CapabilityArgs: map[string]any{"labels": map[string]string{"app": "web"}, "portMappings": []any{}},
	}

	if _, err := cni.GetVersionInfo(ctx, "calyx"); err != nil {
		t.Fatalf("VERSION via libcni: %v", err)
	}
	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	res, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "1.1.0" {
		t.Errorf("result version %s", res.Version())
	}
	att := agent.Attachments()
	if len(att) != 1 || att[0].Labels["app"] != "web" || att[0].Args.GetK8SPodNamespace() != "shop" {
		t.Fatalf("attachment after libcni ADD: %+v", att)
	}
	addReq := agent.Requests()[1].(*apipb.AddRequest)
	if strings.Contains(string(addReq.GetInvocation().GetNetworkConfig()), "portMappings") {
		t.Errorf("libcni passed an undeclared capability: %s", addReq.GetInvocation().GetNetworkConfig())
	}

	// CHECK uses the result libcni cached.
	if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// GC with libcni-1 still valid keeps it; with none valid removes it.
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "libcni-1", IfName: "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if len(agent.Attachments()) != 1 {
		t.Fatalf("GC removed a valid attachment")
	}
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if len(agent.Attachments()) != 0 {
		t.Fatalf("attachment left after DEL: %+v", agent.Attachments())
	}
	// The runtime may repeat DEL (e.g. after a restart).
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("second DEL: %v", err)
	}

	// With the agent gone, libcni surfaces code 11.
	agent.Stop()
	_, err = cni.AddNetworkList(ctx, list, rt)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD with the agent down via libcni: %v, want code 11", err)
	}
}

// BenchmarkExecAddDel measures one ADD plus one DEL through the binary
// against the fake agent: process start, config parsing and two RPCs.
func BenchmarkExecAddDel(b *testing.B) {
	agent := agenttest.Start(b)
	stdin := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":%q}`, agent.Socket))
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench%d", i)
		if o := runPlugin(b, verbEnv("ADD", id, "/var/run/netns/calyxcni-none"), stdin); o.exitCode != 0 {
			b.Fatalf("ADD: %s", o.stdout)
		}
		if o := runPlugin(b, verbEnv("DEL", id, ""), stdin); o.exitCode != 0 {
			b.Fatalf("DEL: %s", o.stdout)
		}
	}
}

// TestStandardLibraryOnly keeps the binary small: a runtime execs it for
// every verb, and each package it links adds start-up work (gRPC and
// protobuf alone cost ~1.5 ms of init here; see docs/performance.md).
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"github.com/calyx-net/calyx/cmd/calyx":        true,
		"github.com/calyx-net/calyx/cni/relay":        true,
		"github.com/calyx-net/calyx/internal/version": true,
	}
	for _, p := range strings.Fields(string(out)) {
		if !allowed[p] {
			t.Errorf("the calyx binary links %s; it must stay on the standard library (cni/relay)", p)
		}
	}
}

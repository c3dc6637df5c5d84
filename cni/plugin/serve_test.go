package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/calyx-net/calyx/cni/agenttest"
	"github.com/calyx-net/calyx/cni/plugin"
	"github.com/calyx-net/calyx/cni/relay"
)

func relayed(command, containerID string, stdin []byte) *relay.Request {
	return &relay.Request{Env: map[string]string{
		"CNI_COMMAND": command, "CNI_CONTAINERID": containerID, "CNI_NETNS": "/var/run/netns/" + containerID,
		"CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
	}, Stdin: stdin}
}

func replyError(t *testing.T, rep *relay.Reply) (uint, string) {
	t.Helper()
	if !rep.Failed {
		t.Fatalf("call succeeded, want an error: %s", rep.Stdout)
	}
	var e struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(rep.Stdout, &e); err != nil {
		t.Fatalf("not a CNI error: %v: %s", err, rep.Stdout)
	}
	return e.Code, e.Msg + " | " + e.Details
}

// TestServeRunsTheCNIProtocol: a relayed invocation gets what skel would
// have given the plugin process, then the verb.
func TestServeRunsTheCNIProtocol(t *testing.T) {
	agent := agenttest.Start(t)
	p, _ := newPlugin(agent)
	srv := p.p
	ctx := context.Background()
	stdin := netConf(t, "1.0.0", agent.Socket, nil)

	rep := srv.Serve(ctx, plugin.Caller{}, relayed("ADD", "c1", stdin))
	var res map[string]any
	if rep.Failed || json.Unmarshal(rep.Stdout, &res) != nil || res["cniVersion"] != "1.0.0" {
		t.Fatalf("ADD through Serve: %+v", rep)
	}
	if att := agent.Attachments(); len(att) != 1 || att[0].Args.GetK8SPodName() != "web-0" {
		t.Fatalf("attachments after ADD: %+v", att)
	}
	before := len(agent.Requests())

	for _, tc := range []struct {
		name   string
		req    *relay.Request
		caller plugin.Caller
		code   uint
		text   string
	}{
		{"no container id", relayed("ADD", "", stdin), plugin.Caller{}, 4, "required env variables [CNI_CONTAINERID] missing"},
		{"no command", relayed("", "c2", stdin), plugin.Caller{}, 4, "CNI_COMMAND"},
		{"unknown command", relayed("FROB", "c2", stdin), plugin.Caller{}, 4, "unknown CNI_COMMAND: FROB"},
		{"bad ifname", func() *relay.Request { r := relayed("ADD", "c2", stdin); r.Env["CNI_IFNAME"] = "eth0/1"; return r }(), plugin.Caller{}, 4, "interface name contains"},
		{"bad container id", relayed("DEL", "c/2", stdin), plugin.Caller{}, 4, "invalid characters in containerID"},
		{"no name", relayed("ADD", "c2", []byte(`{"cniVersion":"1.0.0"}`)), plugin.Caller{}, 7, "missing network name"},
		{"not JSON", relayed("ADD", "c2", []byte(`{`)), plugin.Caller{}, 6, "error unmarshall network config"},
		{"old version", relayed("ADD", "c2", netConf(t, "0.3.1", agent.Socket, nil)), plugin.Caller{}, 1, "incompatible CNI versions"},
		{"GC before 1.1", relayed("GC", "", stdin), plugin.Caller{}, 1, "config version does not allow GC"},
		{"caller's own netns", func() *relay.Request {
			r := relayed("ADD", "c2", stdin)
			r.Env["CNI_NETNS"] = "/proc/self/ns/net"
			return r
		}(), plugin.Caller{PID: int32(os.Getpid())}, types.ErrInvalidNetNS, "plugin's netns and netns from CNI_NETNS should not be the same"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, text := replyError(t, srv.Serve(ctx, tc.caller, tc.req))
			if code != tc.code || !strings.Contains(text, tc.text) {
				t.Errorf("got %d %q, want %d containing %q", code, text, tc.code, tc.text)
			}
		})
	}
	if got := len(agent.Requests()); got != before {
		t.Errorf("%d refused invocations reached the agent's CNI service", got-before)
	}

	// NETNS_OVERRIDE lets a caller name its own namespace, as with skel.
	r := relayed("DEL", "c1", stdin)
	r.Env["CNI_NETNS"], r.Env["CNI_NETNS_OVERRIDE"] = "/proc/self/ns/net", "true"
	if rep := srv.Serve(ctx, plugin.Caller{PID: int32(os.Getpid())}, r); rep.Failed {
		t.Errorf("DEL with CNI_NETNS_OVERRIDE: %s", rep.Stdout)
	}
}

// TestBinaryVersionMatchesTheProtocol: the VERSION the binary prints by
// itself is what the agent's CNI protocol code supports.
func TestBinaryVersionMatchesTheProtocol(t *testing.T) {
	var want bytes.Buffer
	if err := plugin.VersionInfo().Encode(&want); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	relay.RunPlugin(relay.Stdio{Environ: []string{"CNI_COMMAND=VERSION"}, Stdout: &out, Stderr: &out}, "")
	var a, b any
	if json.Unmarshal(want.Bytes(), &a) != nil || json.Unmarshal(out.Bytes(), &b) != nil {
		t.Fatalf("not JSON: %s / %s", want.String(), out.String())
	}
	if aj, _ := json.Marshal(a); string(aj) != func() string { bj, _ := json.Marshal(b); return string(bj) }() {
		t.Errorf("binary VERSION %s, protocol %s", out.String(), want.String())
	}
}

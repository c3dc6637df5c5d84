package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calyx-net/calyx/cni/agenttest"
	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/plugin"
)

// testPlugin runs the verbs in-process against api, printing into out.
type testPlugin struct {
	p   *plugin.Plugin
	out *bytes.Buffer
}

func (t testPlugin) Add(ctx context.Context, a *skel.CmdArgs) error { return t.p.Add(ctx, t.out, a) }
func (t testPlugin) Del(ctx context.Context, a *skel.CmdArgs) error { return t.p.Del(ctx, t.out, a) }
func (t testPlugin) Check(ctx context.Context, a *skel.CmdArgs) error {
	return t.p.Check(ctx, t.out, a)
}
func (t testPlugin) GC(ctx context.Context, a *skel.CmdArgs) error { return t.p.GC(ctx, t.out, a) }
func (t testPlugin) Status(ctx context.Context, a *skel.CmdArgs) error {
	return t.p.Status(ctx, t.out, a)
}

func newPlugin(api plugin.API) (testPlugin, *bytes.Buffer) {
	var out bytes.Buffer
	return testPlugin{p: plugin.New(api, slog.New(slog.NewTextHandler(io.Discard, nil))), out: &out}, &out
}

// netConf renders a network config for socket with extra top-level keys.
func netConf(t *testing.T, cniVersion, socket string, extra map[string]any) []byte {
	t.Helper()
	conf := map[string]any{"cniVersion": cniVersion, "name": "calyx", "type": "calyx", "agentSocket": socket}
	for k, v := range extra {
		conf[k] = v
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cmdArgs(containerID string, stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{
		ContainerID: containerID,
		Netns:       "/var/run/netns/" + containerID,
		IfName:      "eth0",
		Args:        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=" + containerID + ";K8S_POD_UID=u-1",
		Path:        "/opt/cni/bin",
		StdinData:   stdin,
	}
}

// cniCode returns the CNI error code of err, failing when it is not one.
func cniCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a CNI *types.Error", err, err)
	}
	return te.Code, te.Msg + " | " + te.Details
}

func TestAddSendsInvocationAndPrintsResult(t *testing.T) {
	agent := agenttest.Start(t)
	p, out := newPlugin(agent)
	stdin := netConf(t, "1.1.0", agent.Socket, map[string]any{
		"mtu":           1450,
		"capabilities":  map[string]bool{"labels": true},
		"runtimeConfig": map[string]any{"labels": map[string]string{"app": "web", "tier": "front"}},
	})
	if err := p.Add(context.Background(), cmdArgs("c1", stdin)); err != nil {
		t.Fatal(err)
	}

	reqs := agent.Requests()
	if len(reqs) != 1 {
		t.Fatalf("agent got %d requests, want 1", len(reqs))
	}
	inv := reqs[0].(*apipb.AddRequest).GetInvocation()
	if inv.GetContainerId() != "c1" || inv.GetNetns() != "/var/run/netns/c1" || inv.GetIfname() != "eth0" {
		t.Errorf("identity not passed: %v", inv)
	}
	if a := inv.GetArgs(); a.GetK8SPodNamespace() != "shop" || a.GetK8SPodName() != "web-0" || a.GetK8SPodInfraContainerId() != "c1" || a.GetK8SPodUid() != "u-1" || !strings.HasPrefix(a.GetRaw(), "IgnoreUnknown=1;") {
		t.Errorf("CNI_ARGS not passed: %v", a)
	}
	if l := inv.GetLabels(); len(l) != 2 || l["app"] != "web" || l["tier"] != "front" {
		t.Errorf("labels not passed: %v", l)
	}
	if inv.GetMtu() != 1450 || inv.GetCniVersion() != "1.1.0" || inv.GetNetworkName() != "calyx" || !bytes.Equal(inv.GetNetworkConfig(), stdin) {
		t.Errorf("config not passed: mtu %d version %q name %q", inv.GetMtu(), inv.GetCniVersion(), inv.GetNetworkName())
	}

	var res struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name, Mac, Sandbox string
			Mtu                int
		} `json:"interfaces"`
		IPs []struct {
			Address   string `json:"address"`
			Interface *int   `json:"interface"`
		} `json:"ips"`
		Routes []struct{ Dst, GW string } `json:"routes"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, out)
	}
	if res.CNIVersion != "1.1.0" || len(res.Interfaces) != 2 || len(res.IPs) != 1 || len(res.Routes) != 1 {
		t.Fatalf("result shape: %s", out)
	}
	if res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != "/var/run/netns/c1" || res.Interfaces[1].Mtu != 1450 {
		t.Errorf("workload interface: %+v", res.Interfaces[1])
	}
	if res.IPs[0].Address != "10.244.0.2/32" || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
		t.Errorf("ip: %+v", res.IPs[0])
	}
	if res.Routes[0].Dst != "0.0.0.0/0" || res.Routes[0].GW != "169.254.1.1" {
		t.Errorf("route: %+v", res.Routes[0])
	}
}

func TestAddResultFollowsConfigVersion(t *testing.T) {
	agent := agenttest.Start(t)
	for i, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			p, out := newPlugin(agent)
			if err := p.Add(context.Background(), cmdArgs(fmt.Sprintf("v%d", i), netConf(t, v, agent.Socket, nil))); err != nil {
				t.Fatal(err)
			}
			var res map[string]any
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			if res["cniVersion"] != v {
				t.Errorf("cniVersion %v, want %s", res["cniVersion"], v)
			}
			ip := res["ips"].([]any)[0].(map[string]any)
			// 0.4.0 results carry an IP "version" field; 1.x dropped it.
			if _, has := ip["version"]; has != (v == "0.4.0") {
				t.Errorf("ips[0] %v: version field present=%v for %s", ip, has, v)
			}
		})
	}
}

func TestAgentErrorsBecomeCNICodes(t *testing.T) {
	agent := agenttest.Start(t)
	stdin := netConf(t, "1.1.0", agent.Socket, nil)
	for _, tc := range []struct {
		name     string
		err      error
		wantCode uint
		wantText string
	}{
		{"calyx code from details", apipb.Errorf(codes.ResourceExhausted, apipb.CodeIPAMExhausted, "pool 10.244.0.0/16 full"), 100, "pool 10.244.0.0/16 full"},
		{"invalid argument", status.Error(codes.InvalidArgument, "label key bad!"), types.ErrInvalidNetworkConfig, "label key bad!"},
		{"unavailable", status.Error(codes.Unavailable, "shutting down"), types.ErrTryAgainLater, "check that calyx-agent is running"},
		{"failed precondition", status.Error(codes.FailedPrecondition, "datastore not in sync"), types.ErrTryAgainLater, "datastore not in sync"},
		{"unimplemented", status.Error(codes.Unimplemented, "no"), types.ErrInternal, "same version"},
		{"other", status.Error(codes.Internal, "boom"), types.ErrInternal, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent.FailNext("Add", tc.err)
			p, out := newPlugin(agent)
			code, text := cniCode(t, p.Add(context.Background(), cmdArgs("c-err", stdin)))
			if code != tc.wantCode || !strings.Contains(text, tc.wantText) {
				t.Errorf("got code %d %q, want %d containing %q", code, text, tc.wantCode, tc.wantText)
			}
			if out.Len() != 0 {
				t.Errorf("printed a result on error: %s", out)
			}
		})
	}
}

func TestSlowAgentTimesOutWithTryAgain(t *testing.T) {
	agent := agenttest.Start(t)
	agent.SetDelay(5 * time.Second)
	p, _ := newPlugin(agent)
	start := time.Now()
	err := p.Add(context.Background(), cmdArgs("slow", netConf(t, "1.1.0", agent.Socket, map[string]any{"timeoutSeconds": 0.3})))
	code, text := cniCode(t, err)
	if code != types.ErrTryAgainLater || !strings.Contains(text, "did not answer ADD within 300ms") {
		t.Errorf("got %d %q", code, text)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("took %s despite timeoutSeconds 0.3", elapsed)
	}
}

func TestDelIsIdempotent(t *testing.T) {
	agent := agenttest.Start(t)
	p, _ := newPlugin(agent)
	ctx := context.Background()
	stdin := netConf(t, "1.1.0", agent.Socket, nil)
	if err := p.Add(ctx, cmdArgs("c1", stdin)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := p.Del(ctx, cmdArgs("c1", stdin)); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if got := agent.Attachments(); len(got) != 0 {
		t.Errorf("attachments left: %v", got)
	}
	// An agent that says "unknown container" with a CNI code is fine too.
	agent.FailNext("Del", apipb.Errorf(codes.NotFound, uint32(types.ErrUnknownContainer), "gone"))
	if err := p.Del(ctx, cmdArgs("c1", stdin)); err != nil {
		t.Errorf("DEL answered with code 3: %v", err)
	}
	// Other failures are not swallowed.
	agent.FailNext("Del", apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "veth stuck"))
	if code, _ := cniCode(t, p.Del(ctx, cmdArgs("c1", stdin))); code != uint(apipb.CodeDataplaneFailed) {
		t.Errorf("DEL failure code %d, want %d", code, apipb.CodeDataplaneFailed)
	}
}

func TestCheckPassesPrevResult(t *testing.T) {
	agent := agenttest.Start(t)
	p, out := newPlugin(agent)
	ctx := context.Background()
	for _, v := range []string{"0.4.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			out.Reset()
			id := "chk-" + v
			if err := p.Add(ctx, cmdArgs(id, netConf(t, v, agent.Socket, nil))); err != nil {
				t.Fatal(err)
			}
			var prev map[string]any
			if err := json.Unmarshal(out.Bytes(), &prev); err != nil {
				t.Fatal(err)
			}
			if err := p.Check(ctx, cmdArgs(id, netConf(t, v, agent.Socket, map[string]any{"prevResult": prev}))); err != nil {
				t.Fatalf("CHECK of a fresh ADD: %v", err)
			}
			reqs := agent.Requests()
			inv := reqs[len(reqs)-1].(*apipb.CheckRequest).GetInvocation()
			if len(inv.GetPrevResultJson()) == 0 || len(inv.GetPrevResult().GetIps()) != 1 {
				t.Errorf("prevResult not passed: %v", inv)
			}

			// A prevResult the agent disagrees with fails CHECK.
			prev["ips"].([]any)[0].(map[string]any)["address"] = "10.244.9.9/32"
			if err := p.Check(ctx, cmdArgs(id, netConf(t, v, agent.Socket, map[string]any{"prevResult": prev}))); err == nil {
				t.Error("CHECK with a wrong address passed")
			}
		})
	}

	code, text := cniCode(t, p.Check(ctx, cmdArgs("x", netConf(t, "1.1.0", agent.Socket, nil))))
	if code != types.ErrInvalidNetworkConfig || !strings.Contains(text, "prevResult") {
		t.Errorf("CHECK without prevResult: %d %q", code, text)
	}
	code, text = cniCode(t, p.Check(ctx, cmdArgs("x", netConf(t, "1.1.0", agent.Socket, map[string]any{"prevResult": map[string]any{"cniVersion": "1.1.0", "ips": "nope"}}))))
	if code != types.ErrDecodingFailure || !strings.Contains(text, "prevResult") {
		t.Errorf("CHECK with a broken prevResult: %d %q", code, text)
	}
}

func TestStatus(t *testing.T) {
	agent := agenttest.Start(t)
	p, _ := newPlugin(agent)
	ctx := context.Background()
	stdin := netConf(t, "1.1.0", agent.Socket, nil)
	if err := p.Status(ctx, cmdArgs("", stdin)); err != nil {
		t.Fatalf("STATUS of a ready agent: %v", err)
	}
	agent.SetReady(false, "datastore not in sync")
	code, text := cniCode(t, p.Status(ctx, cmdArgs("", stdin)))
	if code != types.ErrPluginNotAvailable || !strings.Contains(text, "datastore not in sync") {
		t.Errorf("STATUS of a not-ready agent: %d %q", code, text)
	}
	agent.SetReady(true, "")
	agent.FailNext("Status", status.Error(codes.Unavailable, "restarting"))
	if code, _ := cniCode(t, p.Status(ctx, cmdArgs("", stdin))); code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS when the agent fails the call: %d, want 50", code)
	}
	agent.FailNext("Status", apipb.Errorf(codes.Unavailable, 51, "limited"))
	if code, _ := cniCode(t, p.Status(ctx, cmdArgs("", stdin))); code != types.ErrLimitedConnectivity {
		t.Errorf("STATUS with the agent's own code 51: %d", code)
	}
}

func TestGCKeepsValidAttachments(t *testing.T) {
	agent := agenttest.Start(t)
	p, _ := newPlugin(agent)
	ctx := context.Background()
	stdin := netConf(t, "1.1.0", agent.Socket, nil)
	for _, id := range []string{"keep", "drop1", "drop2"} {
		if err := p.Add(ctx, cmdArgs(id, stdin)); err != nil {
			t.Fatal(err)
		}
	}
	gcConf := netConf(t, "1.1.0", agent.Socket, map[string]any{
		"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}},
	})
	if err := p.GC(ctx, cmdArgs("", gcConf)); err != nil {
		t.Fatal(err)
	}
	got := agent.Attachments()
	if len(got) != 1 || got[0].ContainerID != "keep" {
		t.Errorf("after GC: %v, want only keep", got)
	}
}

func TestBadConfigAndArgs(t *testing.T) {
	p, _ := newPlugin(nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		stdin    string
		args     string
		wantCode uint
		wantText string
	}{
		{"not JSON", `{"cniVersion": "1.1.0", "name": `, "", types.ErrDecodingFailure, "not valid JSON"},
		{"relative socket", `{"cniVersion":"1.1.0","name":"n","agentSocket":"agent.sock"}`, "", types.ErrInvalidNetworkConfig, "agentSocket must be an absolute path"},
		{"empty socket", `{"cniVersion":"1.1.0","name":"n","agentSocket":""}`, "", types.ErrInvalidNetworkConfig, "agentSocket"},
		{"socket not a string", `{"cniVersion":"1.1.0","name":"n","agentSocket":7}`, "", types.ErrInvalidNetworkConfig, "agentSocket must be a JSON string"},
		{"negative mtu", `{"cniVersion":"1.1.0","name":"n","mtu":-1}`, "", types.ErrInvalidNetworkConfig, "mtu must be between"},
		{"mtu string", `{"cniVersion":"1.1.0","name":"n","mtu":"1500"}`, "", types.ErrInvalidNetworkConfig, "mtu must be a JSON number"},
		{"zero timeout", `{"cniVersion":"1.1.0","name":"n","timeoutSeconds":0}`, "", types.ErrInvalidNetworkConfig, "timeoutSeconds"},
		{"labels not strings", `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"labels":{"a":1}}}`, "", types.ErrInvalidNetworkConfig, "runtimeConfig.labels"},
		{"no name", `{"cniVersion":"1.1.0"}`, "", types.ErrInvalidNetworkConfig, "name is required"},
		{"bad CNI_ARGS", `{"cniVersion":"1.1.0","name":"n"}`, "K8S_POD_NAME", types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := cmdArgs("c", []byte(tc.stdin))
			args.Args = tc.args
			code, text := cniCode(t, p.Add(ctx, args))
			if code != tc.wantCode || !strings.Contains(text, tc.wantText) {
				t.Errorf("got %d %q, want %d containing %q", code, text, tc.wantCode, tc.wantText)
			}
		})
	}
}

func TestUnusableAgentResultIsInternalError(t *testing.T) {
	agent := agenttest.Start(t)
	p, out := newPlugin(agent)
	for _, r := range []*apipb.Result{
		{Ips: []*apipb.IPConfig{{Address: "10.0.0.1"}}},
		{Ips: []*apipb.IPConfig{{Address: "10.0.0.1/32", Interface: new(int32(3))}}},
		{Ips: []*apipb.IPConfig{{Address: "10.0.0.1/32", Gateway: "gw"}}},
		{Routes: []*apipb.Route{{Dst: "default"}}},
	} {
		agent.SetAddResult(r)
		code, text := cniCode(t, p.Add(context.Background(), cmdArgs("c", netConf(t, "1.1.0", agent.Socket, nil))))
		if code != types.ErrInternal || !strings.Contains(text, "unusable") {
			t.Errorf("result %v: got %d %q", r, code, text)
		}
	}
	if out.Len() != 0 {
		t.Errorf("printed something for unusable results: %s", out)
	}
}

package plugin_test

// Fuzz targets of the CNI input the agent takes from whoever can reach its
// socket: the network config, CNI_ARGS, the relay's wire format and a
// whole relayed invocation. `make fuzz-quick` runs each for a few seconds.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/plugin"
	"github.com/calyx-net/calyx/cni/relay"
)

// wantCNIError checks err is a CNI error of an allowed code, failing the fuzz run for any other
// kind of error: every refusal must be a coded CNI error.
func wantCNIError(t *testing.T, err error, allowed ...uint) {
	t.Helper()
	te, ok := errors.AsType[*types.Error](err)
	if !ok {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	for _, c := range allowed {
		if te.Code == c {
			return
		}
	}
	t.Fatalf("CNI error code %d (%s), want one of %v", te.Code, te.Msg, allowed)
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"calyx","type":"calyx"}`,
		`{"cniVersion":"1.0.0","name":"n","type":"calyx","mtu":1400,"timeoutSeconds":2.5,"agentSocket":"/run/calyx/agent.sock"}`,
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"labels":{"app":"web","calyx.dev/pod":"x"}}}`,
		`{"cniVersion":"1.1.0","name":"n","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.1/32"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","mtu":"big"}`, `[]`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := plugin.ParseConfig(stdin)
		if err != nil {
			wantCNIError(t, err, uint(types.ErrDecodingFailure), uint(types.ErrInvalidNetworkConfig))
			return
		}
		if conf.CNIVersion == "" || conf.Name == "" || conf.Timeout() <= 0 {
			t.Fatalf("accepted config without version, name or timeout: %+v", conf)
		}
		if conf.MTU != 0 && (conf.MTU < 68 || conf.MTU > 65535) {
			t.Fatalf("accepted mtu %d", conf.MTU)
		}
	})
}

func FuzzParseCNIArgs(f *testing.F) {
	for _, s := range []string{"", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", "IgnoreUnknown=1;X=y", "a", ";;", "=x", "K8S_POD_NAME=a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		args, err := plugin.ParseCNIArgs(raw)
		if err != nil {
			wantCNIError(t, err, uint(types.ErrInvalidEnvironmentVariables))
			return
		}
		if args.GetRaw() != raw {
			t.Fatalf("Raw %q, want the whole string %q", args.GetRaw(), raw)
		}
	})
}

// FuzzRelayWire: bytes from the socket never panic the reader, never make
// it allocate past its limits, and what it reads writes back the same.
func FuzzRelayWire(f *testing.F) {
	var seed bytes.Buffer
	relay.WriteRequest(&seed, &relay.Request{Env: map[string]string{"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0"}, Stdin: []byte(`{"cniVersion":"1.1.0"}`)})
	f.Add(seed.Bytes()[len(relay.Magic):]) // the agent reads Magic before ReadRequest
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := relay.ReadRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(req.Env) > relay.MaxEnv {
			t.Fatalf("read %d environment entries, limit %d", len(req.Env), relay.MaxEnv)
		}
		var again bytes.Buffer
		if err := relay.WriteRequest(&again, req); err != nil {
			t.Fatalf("a request ReadRequest accepted cannot be written: %v", err)
		}
		again.Next(len(relay.Magic))
		back, err := relay.ReadRequest(&again)
		if err != nil || len(back.Env) != len(req.Env) || !bytes.Equal(back.Stdin, req.Stdin) {
			t.Fatalf("round trip changed the request: %v", err)
		}
	})
}

// acceptAll is an agent API that accepts every call, so that the fuzzer
// reaches the verbs.
type acceptAll struct{ invocations int }

func (a *acceptAll) Add(context.Context, *apipb.AddRequest) (*apipb.AddReply, error) {
	a.invocations++
	return &apipb.AddReply{Result: &apipb.Result{}}, nil
}
func (a *acceptAll) Del(context.Context, *apipb.DelRequest) (*apipb.DelReply, error) {
	a.invocations++
	return &apipb.DelReply{}, nil
}
func (a *acceptAll) Check(context.Context, *apipb.CheckRequest) (*apipb.CheckReply, error) {
	a.invocations++
	return &apipb.CheckReply{}, nil
}
func (a *acceptAll) Status(context.Context, *apipb.StatusRequest) (*apipb.StatusReply, error) {
	return &apipb.StatusReply{Ready: true}, nil
}
func (a *acceptAll) GC(context.Context, *apipb.GCRequest) (*apipb.GCReply, error) {
	return &apipb.GCReply{}, nil
}

// FuzzServe: a whole relayed invocation (command, CNI_* variables,
// stdin) either fails with a CNI error as JSON or runs the verb; it never
// panics, and a refused invocation never reaches the agent's API.
func FuzzServe(f *testing.F) {
	f.Add("ADD", "c1", "/var/run/netns/c1", "eth0", "K8S_POD_NAME=web-0", []byte(`{"cniVersion":"1.1.0","name":"calyx","type":"calyx"}`))
	f.Add("DEL", "c1", "", "eth0", "", []byte(`{"cniVersion":"1.0.0","name":"calyx"}`))
	f.Add("CHECK", "c1", "/x", "eth0", "", []byte(`{"cniVersion":"1.1.0","name":"calyx","prevResult":{"cniVersion":"1.1.0"}}`))
	f.Add("GC", "", "", "", "", []byte(`{"cniVersion":"1.1.0","name":"calyx","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	f.Add("STATUS", "", "", "", "", []byte(`{"cniVersion":"0.4.0","name":"calyx"}`))
	f.Fuzz(func(t *testing.T, cmd, containerID, netns, ifName, args string, stdin []byte) {
		api := &acceptAll{}
		p := plugin.New(api, slog.New(slog.NewTextHandler(io.Discard, nil)))
		req := &relay.Request{Env: map[string]string{
			"CNI_COMMAND": cmd, "CNI_CONTAINERID": containerID, "CNI_NETNS": netns,
			"CNI_IFNAME": ifName, "CNI_ARGS": args, "CNI_PATH": "/opt/cni/bin",
		}, Stdin: stdin}
		rep := p.Serve(context.Background(), plugin.Caller{}, req)
		if rep.Failed {
			var e types.Error
			if err := json.Unmarshal(rep.Stdout, &e); err != nil || e.Code == 0 || e.Msg == "" {
				t.Fatalf("a failure is not a coded CNI error: %q (%v)", rep.Stdout, err)
			}
			if api.invocations > 0 && e.Code < 100 && e.Code != uint(types.ErrIncompatibleCNIVersion) && e.Code != uint(types.ErrInternal) {
				// Refusals of input come before the agent is called.
				t.Fatalf("input refused with code %d (%s) after the agent was called", e.Code, e.Msg)
			}
		}
	})
}

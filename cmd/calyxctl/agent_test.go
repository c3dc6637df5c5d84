package main

import (
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/cni/agenttest"
	apipb "github.com/calyx-net/calyx/cni/api"
)

// The CLI's rendering of the agent's answers (the real agent answers in the
// e2e suites); the fake stands in for the socket here.
func TestNodeStatusAndBGPRoutes(t *testing.T) {
	a := agenttest.Start(t)
	a.SetNodeStatus(&apipb.NodeStatusReply{NodeName: "host1", NodeAddress: "198.18.0.1", AsNumber: 64512, Ready: true, DatastoreInSync: true,
		BgpPeers: []*apipb.BGPPeerStatus{
			{Address: "198.18.0.2", Type: apipb.BGPPeerType_BGP_PEER_TYPE_MESH, AsNumber: 64512, State: apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED, Since: time.Now().Add(-time.Minute).Unix(), PrefixesReceived: 3, PrefixesAdvertised: 1},
			{Address: "198.18.0.253", Type: apipb.BGPPeerType_BGP_PEER_TYPE_EXTERNAL, AsNumber: 65000, State: apipb.BGPSessionState_BGP_SESSION_STATE_ACTIVE},
		}})
	a.SetBGPRoutes([]*apipb.BGPRoute{{Prefix: "10.244.1.0/26", NextHops: []string{"198.18.0.2"}, Peer: "198.18.0.2", Best: true, AsPath: []uint32{}}})

	r := ctl(t, "http://127.0.0.1:1", "", "node", "status", "--agent-socket", a.Socket)
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	for _, want := range []string{"host1 (198.18.0.1, AS 64512): ready", "PEER", "198.18.0.2", "mesh", "Established", "external", "Active"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("node status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = ctl(t, "", "", "node", "status", "-o", "json", "--agent-socket", a.Socket)
	if !strings.Contains(r.stdout, `"state": "BGP_SESSION_STATE_ESTABLISHED"`) {
		t.Errorf("json: %s", r.stdout)
	}
	r = ctl(t, "", "", "bgp", "routes", "--agent-socket", a.Socket)
	if r.code != 0 || !strings.Contains(r.stdout, "10.244.1.0/26") {
		t.Errorf("bgp routes: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// No agent: a clear error, non-zero exit.
	r = ctl(t, "", "", "node", "status", "--agent-socket", "/nonexistent/agent.sock")
	if r.code == 0 || !strings.Contains(r.stderr, "not reachable") {
		t.Errorf("agent down: %d %s", r.code, r.stderr)
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/client"
	"github.com/calyx-net/calyx/internal/version"
)

// agentClient connects to the local agent's socket.
func agentClient(ctx context.Context, g *globals) (apipb.AgentClient, func(), error) {
	conn, err := client.Dial(ctx, g.agentSocket, 5*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("%v (is calyx-agent running on this host? --agent-socket)", err)
	}
	return apipb.NewAgentClient(conn), func() { conn.Close() }, nil
}

func outputFormat(fs *pflag.FlagSet) (string, error) {
	f, _ := fs.GetString("output")
	if f != "table" && f != "json" {
		return "", usageErr("-o %q: want table or json", f)
	}
	return f, nil
}

func writeJSON(out io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	var pretty any
	json.Unmarshal(b, &pretty)
	b, _ = json.MarshalIndent(pretty, "", "  ")
	fmt.Fprintln(out, string(b))
	return nil
}

func runNode(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) != 1 || args[0] != "status" {
		return usageErr("usage: calyxctl node status [-o table|json]")
	}
	format, err := outputFormat(fs)
	if err != nil {
		return err
	}
	c, done, err := agentClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.NodeStatus(ctx, &apipb.NodeStatusRequest{})
	if err != nil {
		return fmt.Errorf("node status: %v", err)
	}
	if format == "json" {
		return writeJSON(out, st)
	}
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	fmt.Fprintf(out, "Calyx agent on %s (%s, AS %d): %s, datastore in sync: %v, %s\n\n",
		st.NodeName, st.NodeAddress, st.AsNumber, ready, st.DatastoreInSync, st.AgentVersion)
	if len(st.BgpPeers) == 0 {
		fmt.Fprintln(out, "No BGP peers.")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "PEER\tTYPE\tAS\tSTATE\tBFD\tSINCE\tRECEIVED\tADVERTISED\tINFO")
	for _, p := range st.BgpPeers {
		since := "-"
		if p.Since > 0 {
			since = time.Since(time.Unix(p.Since, 0)).Round(time.Second).String()
		}
		info := p.LastError
		if p.Name != "" && info == "" {
			info = p.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\n", p.Address, peerType(p.Type), p.AsNumber, sessionState(p.State),
			orDash(p.BfdState), since, p.PrefixesReceived, p.PrefixesAdvertised, orDash(info))
	}
	return tw.Flush()
}

func peerType(t apipb.BGPPeerType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "BGP_PEER_TYPE_"))
}

func sessionState(s apipb.BGPSessionState) string {
	name := strings.TrimPrefix(s.String(), "BGP_SESSION_STATE_")
	return strings.ToUpper(name[:1]) + strings.ToLower(name[1:])
}

func runBGP(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) < 1 || args[0] != "routes" || len(args) > 2 {
		return usageErr("usage: calyxctl bgp routes [PREFIX] [-o table|json]")
	}
	format, err := outputFormat(fs)
	if err != nil {
		return err
	}
	req := &apipb.BGPRoutesRequest{}
	if len(args) == 2 {
		req.Prefix = args[1]
	}
	c, done, err := agentClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	rs, err := c.BGPRoutes(ctx, req)
	if err != nil {
		return fmt.Errorf("bgp routes: %v", err)
	}
	if format == "json" {
		return writeJSON(out, rs)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tNEXT-HOPS\tFROM\tBEST\tAS-PATH\tAGE")
	for _, r := range rs.Routes {
		from := r.Peer
		if r.Local {
			from = "local"
		}
		var path []string
		for _, a := range r.AsPath {
			path = append(path, fmt.Sprint(a))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", r.Prefix, orDash(strings.Join(r.NextHops, ",")), orDash(from), r.Best,
			orDash(strings.Join(path, " ")), (time.Duration(r.AgeSeconds) * time.Second).String())
	}
	return tw.Flush()
}

// runAgent: `calyxctl agent log-level [LEVEL]` shows or changes the local
// agent's log level at runtime.
func runAgent(ctx context.Context, g *globals, _ *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) < 1 || args[0] != "log-level" || len(args) > 2 {
		return usageErr("usage: calyxctl agent log-level [debug|info|warn|error]")
	}
	req := &apipb.SetLogLevelRequest{}
	if len(args) == 2 {
		req.Level = args[1]
	}
	c, done, err := agentClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	r, err := c.SetLogLevel(ctx, req)
	if err != nil {
		return fmt.Errorf("agent log-level: %v", err)
	}
	if req.Level == "" || r.Previous == r.Level {
		fmt.Fprintln(out, r.Level)
		return nil
	}
	fmt.Fprintf(out, "%s (was %s; until the agent restarts)\n", r.Level, r.Previous)
	return nil
}

// runVersion prints calyxctl's version and the local agent's (--client:
// calyxctl's only). An unreachable agent is reported and fails the
// command, as kubectl does for its server.
func runVersion(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) > 0 {
		return usageErr("usage: calyxctl version [--client] [-o table|json]")
	}
	format, err := outputFormat(fs)
	if err != nil {
		return err
	}
	clientOnly, _ := fs.GetBool("client")
	type build struct {
		Version   string `json:"version"`
		Commit    string `json:"commit"`
		GoVersion string `json:"goVersion"`
		Platform  string `json:"platform"`
	}
	v := struct {
		Client build  `json:"client"`
		Agent  *build `json:"agent,omitempty"`
		Error  string `json:"agentError,omitempty"`
	}{Client: build{version.Version, version.CommitID(), runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}}
	var agentErr error
	if !clientOnly {
		agentErr = func() error {
			c, done, err := agentClient(ctx, g)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Version(ctx, &apipb.VersionRequest{})
			if err != nil {
				return err
			}
			v.Agent = &build{r.Version, r.Commit, r.GoVersion, r.Platform}
			return nil
		}()
		if agentErr != nil {
			v.Error = agentErr.Error()
		}
	}
	if format == "json" {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(out, string(b))
	} else {
		fmt.Fprintf(out, "calyxctl:    %s (commit %s, %s, %s)\n", v.Client.Version, v.Client.Commit, v.Client.GoVersion, v.Client.Platform)
		if v.Agent != nil {
			fmt.Fprintf(out, "calyx-agent: %s (commit %s, %s, %s)\n", v.Agent.Version, v.Agent.Commit, v.Agent.GoVersion, v.Agent.Platform)
		}
	}
	if agentErr != nil {
		return fmt.Errorf("calyx-agent version: %v", agentErr)
	}
	return nil
}

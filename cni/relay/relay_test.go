package relay_test

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/cni/relay"
)

func TestWireRoundTrip(t *testing.T) {
	req := &relay.Request{Env: map[string]string{"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=x=y", "CNI_NETNS": ""}, Stdin: []byte(`{"name":"n"}`)}
	var b bytes.Buffer
	if err := relay.WriteRequest(&b, req); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte(relay.Magic)) {
		t.Fatalf("request does not start with the magic: %q", b.Bytes()[:16])
	}
	b.Next(len(relay.Magic))
	got, err := relay.ReadRequest(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Env) != 3 || got.Getenv("CNI_ARGS") != "A=1;B=x=y" || got.Getenv("CNI_COMMAND") != "ADD" || string(got.Stdin) != `{"name":"n"}` {
		t.Errorf("request after the round trip: %+v", got)
	}

	rep := &relay.Reply{Failed: true, Stdout: []byte("out"), Stderr: []byte("err")}
	b.Reset()
	if err := relay.WriteReply(&b, rep); err != nil {
		t.Fatal(err)
	}
	gotRep, err := relay.ReadReply(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !gotRep.Failed || string(gotRep.Stdout) != "out" || string(gotRep.Stderr) != "err" {
		t.Errorf("reply after the round trip: %+v", gotRep)
	}
}

func TestWireRefusesOversizedAndTruncated(t *testing.T) {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0, 200}) // 200 environment entries
	if _, err := relay.ReadRequest(&b); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("200 entries: %v", err)
	}
	b.Reset()
	b.Write([]byte{0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff}) // no env, a 2 GiB stdin
	if _, err := relay.ReadRequest(&b); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("2 GiB stdin: %v", err)
	}
	b.Reset()
	b.Write([]byte{0, 0, 0, 1, 0, 0, 0, 9, 'C', 'N'}) // one entry, cut short
	if _, err := relay.ReadRequest(&b); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated entry: %v", err)
	}
	b.Reset()
	b.Write([]byte{0, 0, 0, 1, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0})
	if _, err := relay.ReadRequest(&b); err == nil || !strings.Contains(err.Error(), "KEY=VALUE") {
		t.Errorf("entry without '=': %v", err)
	}
	if _, err := relay.ReadReply(strings.NewReader("\x00\x00\x00\x18\x04\x00\x00\x00\x00\x00")); err == nil {
		t.Error("a reply that is an HTTP/2 frame was accepted")
	}
}

// run is the binary in-process.
func run(t *testing.T, env map[string]string, stdin string) (code int, stdout, stderr string) {
	t.Helper()
	environ := []string{"PATH=/usr/bin", "SECRET_TOKEN=hunter2"}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	var out, errOut bytes.Buffer
	code = relay.RunPlugin(relay.Stdio{Environ: environ, Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut}, "CNI plugin calyx test")
	return code, out.String(), errOut.String()
}

func cniError(t *testing.T, code int, stdout string) (uint, string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %s", code, stdout)
	}
	var e struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal([]byte(stdout), &e); err != nil {
		t.Fatalf("stdout is not a CNI error: %v: %s", err, stdout)
	}
	return e.Code, e.Msg + " | " + e.Details
}

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "calyxrl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func conf(socket string, extra string) string {
	return `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":"` + socket + `"` + extra + `}`
}

func TestVersionAndAboutWithoutAnAgent(t *testing.T) {
	code, out, _ := run(t, map[string]string{"CNI_COMMAND": "VERSION"}, "")
	if code != 0 || out != `{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}` {
		t.Errorf("VERSION: %d %s", code, out)
	}
	code, _, errOut := run(t, nil, "")
	if code != 0 || !strings.Contains(errOut, "CNI plugin calyx test") || !strings.Contains(errOut, "0.4.0, 1.0.0, 1.1.0") {
		t.Errorf("no command: %d %q", code, errOut)
	}
}

func TestConfigTheBinaryChecks(t *testing.T) {
	for _, tc := range []struct {
		stdin string
		code  uint
		text  string
	}{
		{`{"cniVersion":`, 6, "unexpected end of JSON input"},
		{`["x"]`, 6, "cannot unmarshal array"},
		{`{"agentSocket":"run/agent.sock"}`, 7, "agentSocket must be an absolute path"},
		{`{"agentSocket":""}`, 7, "agentSocket must not be empty"},
		{`{"agentSocket":["/a"]}`, 7, "agentSocket must be a JSON string"},
		{`{"agentSocket":"/` + strings.Repeat("a", 120) + `"}`, 7, "longer than the 107"},
	} {
		c, out, _ := run(t, map[string]string{"CNI_COMMAND": "ADD"}, tc.stdin)
		code, text := cniError(t, c, out)
		if code != tc.code || !strings.Contains(text, tc.text) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.stdin, code, text, tc.code, tc.text)
		}
	}
}

func TestAgentDown(t *testing.T) {
	dir := shortDir(t)
	missing := filepath.Join(dir, "agent.sock")
	refusing := filepath.Join(dir, "dead.sock") // left by a dead agent
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: refusing, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	_ = l.Close()
	for _, socket := range []string{missing, refusing} {
		for _, verb := range []string{"ADD", "DEL", "CHECK", "GC", "STATUS"} {
			c, out, _ := run(t, map[string]string{"CNI_COMMAND": verb}, conf(socket, ""))
			code, text := cniError(t, c, out)
			want := uint(11)
			if verb == "STATUS" {
				want = 50
			}
			if code != want || !strings.Contains(text, "calyx agent is not reachable at "+socket+"; check that calyx-agent is running") {
				t.Errorf("%s via %s: %d %q, want %d naming the socket", verb, filepath.Base(socket), code, text, want)
			}
		}
	}
}

// TestSlowAgent: an agent that accepts and never answers costs
// timeoutSeconds, then code 11; the request it got holds only CNI_*
// variables.
func TestSlowAgent(t *testing.T) {
	socket := filepath.Join(shortDir(t), "agent.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan *relay.Request, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		magic := make([]byte, len(relay.Magic))
		if _, err := conn.Read(magic); err == nil {
			req, _ := relay.ReadRequest(conn)
			got <- req
		}
		time.Sleep(3 * time.Second)
	}()
	start := time.Now()
	c, out, _ := run(t, map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1"}, conf(socket, `,"timeoutSeconds":0.3`))
	code, text := cniError(t, c, out)
	if code != 11 || !strings.Contains(text, "did not answer ADD within 300ms") {
		t.Errorf("slow agent: %d %q", code, text)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s despite timeoutSeconds 0.3", took)
	}
	req := <-got
	if req == nil || req.Getenv("CNI_CONTAINERID") != "c1" || req.Getenv("SECRET_TOKEN") != "" || req.Getenv("PATH") != "" {
		t.Errorf("the agent was sent %+v, want the CNI_* variables only", req)
	}
}

// TestOldAgentSpeaksOnlyGRPC: an agent without the relay protocol (the
// version before it) is reported as such.
func TestOldAgentSpeaksOnlyGRPC(t *testing.T) {
	socket := filepath.Join(shortDir(t), "agent.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	go func() { _ = s.Serve(l) }()
	defer s.Stop()
	c, out, _ := run(t, map[string]string{"CNI_COMMAND": "ADD"}, conf(socket, `,"timeoutSeconds":5`))
	code, text := cniError(t, c, out)
	if code != 11 || !strings.Contains(text, "does not speak this plugin's protocol") {
		t.Errorf("gRPC-only agent: %d %q", code, text)
	}
}

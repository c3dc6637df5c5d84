package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultSocket is where calyx-agent listens unless told otherwise.
const DefaultSocket = "/var/run/calyx/agent.sock"

// DefaultTimeout bounds one plugin call (connect and answer) when the
// config has no timeoutSeconds.
const DefaultTimeout = 10 * time.Second

// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
const maxSocketPath = 107

// CNI error codes the binary itself prints (the agent prints all others).
const (
	codeDecodingFailure      = 6
	codeInvalidNetworkConfig = 7
	codeTryAgainLater        = 11
	codePluginNotAvailable   = 50
)

// Versions the plugin speaks, as the VERSION verb prints them; the agent's
// CNI protocol code checks that its own list is the same.
const (
	ImplementedVersion = "1.1.0"
	versionJSON        = `{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}`
)

// SupportedVersions are the CNI spec versions of versionJSON.
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// SocketProblem says what is wrong with an agentSocket value, or "".
func SocketProblem(path string) string {
	switch {
	case path == "":
		return "must not be empty (omit it for " + DefaultSocket + ")"
	case !filepath.IsAbs(path):
		return fmt.Sprintf("must be an absolute path, got %q", path)
	case strings.ContainsRune(path, 0):
		return "must not contain a NUL byte"
	case len(path) > maxSocketPath:
		return fmt.Sprintf("is %d bytes, longer than the %d a unix socket path allows", len(path), maxSocketPath)
	}
	return ""
}

// ErrorJSON is a CNI error as a plugin prints it on stdout.
func ErrorJSON(code uint, msg, details string) []byte {
	b, _ := json.MarshalIndent(struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details,omitempty"`
	}{code, msg, details}, "", "    ")
	return b
}

// Stdio is the binary's environment and standard streams.
type Stdio struct {
	Environ []string // KEY=VALUE, as os.Environ returns them
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

func (s Stdio) getenv(key string) string {
	for _, kv := range s.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// RunPlugin is the calyx CNI binary: it answers VERSION itself, relays
// every other verb to the agent named by the config's agentSocket and
// prints the agent's answer. It prints a CNI error itself only for what
// the agent cannot answer: a config it cannot even find the agent from, an
// agent that is unreachable, too slow or of another protocol. It returns
// the exit status.
func RunPlugin(s Stdio, about string) int {
	cmd := s.getenv("CNI_COMMAND")
	switch cmd {
	case "":
		fmt.Fprintln(s.Stderr, about)
		fmt.Fprintf(s.Stderr, "CNI protocol versions supported: %s\n", strings.Join(SupportedVersions, ", "))
		return 0
	case "VERSION":
		fmt.Fprint(s.Stdout, versionJSON)
		return 0
	}
	fail := func(code uint, msg, details string) int {
		s.Stdout.Write(ErrorJSON(code, msg, details))
		return 1
	}
	stdin, err := readAll(s.Stdin)
	if err != nil {
		return fail(5, fmt.Sprintf("error reading from stdin: %v", err), "") // CNI 5: I/O failure
	}
	conf, code, problem := findAgent(stdin)
	if problem != "" {
		return fail(code, problem, "")
	}
	start := time.Now()
	rep, err := Call(conf.socket, conf.timeout, &Request{Env: cniEnv(s.Environ), Stdin: stdin})
	if s.getenv("CALYX_CNI_DEBUG") != "" {
		fmt.Fprintf(s.Stderr, "calyx: %s via %s took %s, error: %v\n", cmd, conf.socket, time.Since(start).Round(time.Microsecond), err)
	}
	if err != nil {
		unreachable := uint(codeTryAgainLater)
		if cmd == "STATUS" {
			unreachable = codePluginNotAvailable
		}
		var ue *UnreachableError
		switch {
		case errors.As(err, &ue):
			return fail(unreachable, fmt.Sprintf("calyx agent is not reachable at %s; check that calyx-agent is running", conf.socket), ue.Err.Error())
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fail(unreachable, fmt.Sprintf("calyx agent at %s did not answer %s within %s", conf.socket, cmd, conf.timeout), err.Error())
		case errors.Is(err, ErrNotRelay):
			return fail(unreachable, fmt.Sprintf("calyx agent at %s does not speak this plugin's protocol; are the calyx binary and calyx-agent the same version?", conf.socket), err.Error())
		default:
			return fail(unreachable, fmt.Sprintf("calyx agent at %s failed to answer %s; check that calyx-agent is running", conf.socket, cmd), err.Error())
		}
	}
	s.Stdout.Write(rep.Stdout)
	s.Stderr.Write(rep.Stderr)
	if rep.Failed {
		return 1
	}
	return 0
}

func readAll(r io.Reader) ([]byte, error) {
	if r == nil {
		return nil, nil
	}
	return io.ReadAll(r)
}

// cniEnv is the part of the environment the agent is told: CNI_* only
// (never the runtime's other variables).
func cniEnv(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CNI_") && len(env) < MaxEnv {
			env[k] = v
		}
	}
	return env
}

type agentConf struct {
	socket  string
	timeout time.Duration
}

// findAgent reads the two keys the binary needs from the config: where
// the agent is and how long to wait for it. A timeoutSeconds it cannot use
// is left to the agent to report; the default applies meanwhile.
func findAgent(stdin []byte) (agentConf, uint, string) {
	var raw struct {
		AgentSocket    json.RawMessage `json:"agentSocket"`
		TimeoutSeconds json.RawMessage `json:"timeoutSeconds"`
	}
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return agentConf{}, codeDecodingFailure, fmt.Sprintf("error unmarshall network config: %v", err)
	}
	conf := agentConf{socket: DefaultSocket, timeout: DefaultTimeout}
	if len(raw.AgentSocket) > 0 && string(raw.AgentSocket) != "null" {
		if err := json.Unmarshal(raw.AgentSocket, &conf.socket); err != nil {
			return conf, codeInvalidNetworkConfig, fmt.Sprintf("calyx: invalid network config: agentSocket must be a JSON string, not %s", raw.AgentSocket)
		}
		if p := SocketProblem(conf.socket); p != "" {
			return conf, codeInvalidNetworkConfig, "calyx: invalid network config: agentSocket " + p
		}
	}
	var secs float64
	if json.Unmarshal(raw.TimeoutSeconds, &secs) == nil && secs > 0 && secs <= 3600 {
		conf.timeout = time.Duration(secs * float64(time.Second))
	}
	return conf, 0, ""
}

// UnreachableError means nothing answers on the agent socket: it is
// missing or refuses connections.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("calyx agent is not reachable at %s: %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Call sends req to the agent on socket and returns its reply, all within
// timeout. A missing socket or a refused connection is an
// *UnreachableError; a deadline passed matches os.ErrDeadlineExceeded.
func Call(socket string, timeout time.Duration, req *Request) (*Reply, error) {
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, &UnreachableError{Socket: socket, Err: err}
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if err := WriteRequest(conn, req); err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	return ReadReply(conn)
}

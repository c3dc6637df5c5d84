// Command calyxctl manages Calyx resources in etcd and asks the local agent
// for its state. See docs/calyxctl.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
)

const usage = `calyxctl manages Calyx resources and asks the local agent for its state.

Usage:
  calyxctl apply -f FILE|-            create or replace every resource in FILE (all or nothing)
  calyxctl create -f FILE|-           create every resource in FILE; fails if any exists
  calyxctl get KIND [NAME] [-o table|yaml|json] [--show-secrets]
                                      secrets print as <redacted>; applying that keeps them
  calyxctl delete KIND NAME           delete one resource
  calyxctl delete -f FILE|-           delete every resource named in FILE
  calyxctl label KIND NAME k=v ... k- [--overwrite]
  calyxctl node status [-o table|json]   BGP peers of the local agent
  calyxctl bgp routes [-o table|json]    the local agent's BGP RIB
  calyxctl ipam show [-o table|json]     pools and blocks with their use
  calyxctl ipam show --ip IP [-o json]   who holds one address (node, handle, endpoint, pod)
  calyxctl ipam check                    find inconsistencies
  calyxctl ipam gc [--grace DURATION]    release leaked allocations
  calyxctl ipam release --ip IP          release one address (operator repair)
  calyxctl agent log-level [LEVEL]       show or change the local agent's log level (until it restarts)
  calyxctl version [--client] [-o json]  calyxctl's and the local agent's versions and commits

Kinds: bgpconfig, node, bgppeer, ippool, ipamconfig, workloadendpoint (wep), policy
(singular, plural or short forms).

Global flags, before or after the command (also as environment variables):
  --etcd-endpoints   CALYX_ETCD_ENDPOINTS  comma-separated etcd URLs (default http://127.0.0.1:2379)
  --etcd-ca/--etcd-cert/--etcd-key          TLS client certificate files
  --agent-socket     CALYX_AGENT_SOCKET    the agent's socket (default /var/run/calyx/agent.sock)
  --timeout                                time limit for the command (default 30s)
`

// exitError carries the exit status of a failed command; its message has
// one line per problem.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout)
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
		fmt.Fprintln(os.Stderr, "calyxctl: "+line)
	}
	os.Exit(code)
}

// globals are the connection settings every command may use.
type globals struct {
	endpoints                 string
	etcdCA, etcdCert, etcdKey string
	agentSocket               string
	timeout                   time.Duration
}

func (g *globals) register(fs *pflag.FlagSet) {
	fs.StringVar(&g.endpoints, "etcd-endpoints", envOr("CALYX_ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "etcd endpoints, comma-separated")
	fs.StringVar(&g.etcdCA, "etcd-ca", os.Getenv("CALYX_ETCD_CA"), "etcd CA certificate file")
	fs.StringVar(&g.etcdCert, "etcd-cert", os.Getenv("CALYX_ETCD_CERT"), "etcd client certificate file")
	fs.StringVar(&g.etcdKey, "etcd-key", os.Getenv("CALYX_ETCD_KEY"), "etcd client key file")
	fs.StringVar(&g.agentSocket, "agent-socket", envOr("CALYX_AGENT_SOCKET", "/var/run/calyx/agent.sock"), "the local agent's socket")
	fs.DurationVar(&g.timeout, "timeout", 30*time.Second, "time limit for the command")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (g *globals) client() (*datastore.Client, error) {
	var eps []string
	for _, e := range strings.Split(g.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	c, err := datastore.NewClient(datastore.Config{Endpoints: eps, CAFile: g.etcdCA, CertFile: g.etcdCert, KeyFile: g.etcdKey, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	// Fail fast and clearly when etcd is not there, rather than after the
	// command's whole time limit with "context deadline exceeded".
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Etcd().Get(ctx, datastore.Prefix, clientv3.WithCountOnly()); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot reach etcd at %s: %v (is etcd running? set --etcd-endpoints or CALYX_ETCD_ENDPOINTS)", strings.Join(eps, ","), err)
	}
	return c, nil
}

// command is one verb: it parses its own flags (plus the globals) and runs.
type command struct {
	name string
	run  func(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, in io.Reader, out io.Writer) error
	// flags registers the verb's own flags before parsing.
	flags func(fs *pflag.FlagSet)
}

func run(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	verb, args, err := splitVerb(args)
	if err != nil {
		return err
	}
	if verb == "" || verb == "help" {
		fmt.Fprint(out, usage)
		return nil
	}
	cmds := commands()
	cmd, ok := cmds[verb]
	if !ok {
		return &exitError{2, fmt.Sprintf("unknown command %q (run calyxctl --help)", verb)}
	}
	fs := pflag.NewFlagSet("calyxctl "+verb, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g := &globals{}
	g.register(fs)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(out, usage)
			return nil
		}
		return &exitError{2, fmt.Sprintf("%s: %v", verb, err)}
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return cmd.run(ctx, g, fs, fs.Args(), in, out)
}

// splitVerb finds the command among the arguments: global flags may come
// before it (calyxctl --etcd-endpoints X get ippools) or after, as with
// kubectl. It returns the verb ("" for none, or for -h/--help before it)
// and the other arguments in order.
func splitVerb(args []string) (string, []string, error) {
	globalFlags := pflag.NewFlagSet("calyxctl", pflag.ContinueOnError)
	(&globals{}).register(globalFlags)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			if a == "--" {
				return "", nil, usageErr("no command before --")
			}
			rest := append(append([]string{}, args[:i]...), args[i+1:]...)
			return a, rest, nil
		}
		if a == "-h" || a == "--help" {
			return "", nil, nil
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var f *pflag.Flag
		if strings.HasPrefix(a, "--") {
			f = globalFlags.Lookup(name)
		} else if len(name) == 1 {
			f = globalFlags.ShorthandLookup(name)
		}
		if f == nil {
			return "", nil, usageErr("unknown flag %s before the command: only global flags (--etcd-endpoints, --etcd-ca, --etcd-cert, --etcd-key, --agent-socket, --timeout) may come first", a)
		}
		if !hasValue && f.NoOptDefVal == "" {
			if i+1 == len(args) {
				return "", nil, usageErr("flag %s needs a value", a)
			}
			i++ // the flag's value is the next argument
		}
	}
	return "", nil, nil
}

func commands() map[string]command {
	list := []command{
		{name: "apply", run: runApply(datastore.ModeApply), flags: fileFlag},
		{name: "create", run: runApply(datastore.ModeCreate), flags: fileFlag},
		{name: "get", run: runGet, flags: func(fs *pflag.FlagSet) {
			outputFlag(fs)
			fs.Bool("show-secrets", false, "print secrets (BGP passwords) instead of "+datastore.Redacted)
		}},
		{name: "delete", run: runDelete, flags: fileFlag},
		{name: "label", run: runLabel, flags: func(fs *pflag.FlagSet) { fs.Bool("overwrite", false, "allow changing an existing label's value") }},
		{name: "node", run: runNode, flags: outputFlag},
		{name: "bgp", run: runBGP, flags: outputFlag},
		{name: "ipam", run: runIPAM, flags: ipamFlags},
		{name: "agent", run: runAgent},
		{name: "version", run: runVersion, flags: func(fs *pflag.FlagSet) {
			fs.StringP("output", "o", "table", "output format: table or json")
			fs.Bool("client", false, "only calyxctl's version (do not ask the agent)")
		}},
	}
	m := map[string]command{}
	for _, c := range list {
		m[c.name] = c
	}
	return m
}

func fileFlag(fs *pflag.FlagSet) {
	fs.StringP("filename", "f", "", "file with resources (- for stdin)")
}

func outputFlag(fs *pflag.FlagSet) {
	fs.StringP("output", "o", "table", "output format: table, yaml or json")
}

func usageErr(format string, args ...any) error {
	return &exitError{2, fmt.Sprintf(format, args...)}
}

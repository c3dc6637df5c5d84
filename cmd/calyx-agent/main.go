// Command calyx-agent is Calyx's per-node daemon. See docs/agent.md.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/calyx-net/calyx/agent"
	"github.com/calyx-net/calyx/internal/version"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version") {
		fmt.Println(version.String("calyx-agent"))
		return
	}
	if code, ok := runSubcommand(); ok {
		os.Exit(code)
	}
	os.Exit(agent.Main(args))
}

// configCommand prints every effective setting and its source:
// `calyx-agent config [settings] [-o json]`.
func configCommand(args []string, stdout, stderr io.Writer) int {
	format, rest, err := outputFlag(args)
	if err != nil {
		fmt.Fprintln(stderr, "calyx-agent config:", err)
		return 2
	}
	cfg, code, done := agent.LoadOrExplain(rest, stdout, stderr)
	if done {
		return code
	}
	if err := cfg.PrintEffective(stdout, format); err != nil {
		fmt.Fprintln(stderr, "calyx-agent config:", err)
		return 2
	}
	return 0
}

// outputFlag takes -o/--output FORMAT out of args (the rest are settings).
func outputFlag(args []string) (format string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--output":
			if i+1 == len(args) {
				return "", nil, fmt.Errorf("%s needs a value (table or json)", a)
			}
			format = args[i+1]
			i++
		case strings.HasPrefix(a, "--output="):
			format = strings.TrimPrefix(a, "--output=")
		case strings.HasPrefix(a, "-o"):
			format = strings.TrimPrefix(strings.TrimPrefix(a, "-o"), "=")
		default:
			rest = append(rest, a)
		}
	}
	return format, rest, nil
}

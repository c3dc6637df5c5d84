// Command calyx is the calyx CNI plugin (CNI type "calyx"): a relay that
// hands each CNI invocation (its CNI_* environment and stdin) to the local
// calyx-agent over its unix socket and prints the answer. The agent does
// all the work, the CNI protocol included; the binary stays small (standard
// library only) so that the exec a runtime pays on every verb is short.
// See docs/cni.md.
package main

import (
	"os"

	"github.com/calyx-net/calyx/cni/relay"
	"github.com/calyx-net/calyx/internal/version"
)

func main() {
	os.Exit(relay.RunPlugin(relay.Stdio{Environ: os.Environ(), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr},
		"CNI plugin calyx "+version.Version+" (commit "+version.CommitID()+")"))
}

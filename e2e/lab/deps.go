package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/calyx-net/calyx/internal/kubeapi"
)

// Binaries the lab runs from Options.BinDir.
const (
	AgentBinary    = "calyx-agent"
	PluginBinary   = "calyx" // the CNI plugin; its CNI type is "calyx"
	CalyxctlBinary = "calyxctl"
)

// ErrMissingDependency is wrapped by CheckDeps errors.
var ErrMissingDependency = errors.New("missing dependency")

// CheckDeps reports, in one error, everything Up needs that is missing:
// root, the system tools and the Calyx binaries. extraBins names more
// binaries of the bin dir the caller needs (the CLI's demo wants calyxctl).
func CheckDeps(o Options, extraBins ...string) error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "calyx-lab needs root (it creates network namespaces): run it with sudo")
	}
	tools := []struct{ cmd, pkg string }{
		{"ip", "iproute2"},
		{"iptables", "iptables"},
		{"etcd", "etcd-server"},
		{"ping", "iputils-ping"},
	}
	if o.Peer == PeerBird {
		tools = append(tools, struct{ cmd, pkg string }{"bird", "bird2"}, struct{ cmd, pkg string }{"birdc", "bird2"})
	}
	for _, t := range tools {
		if _, err := lookTool(t.cmd); err != nil {
			problems = append(problems, fmt.Sprintf("%s not found (Debian package %s; `make deps` installs it)", t.cmd, t.pkg))
		}
	}
	var bins []string
	if !o.SkipAgents {
		bins = append(bins, AgentBinary, PluginBinary)
	}
	if o.Kubernetes {
		bins = append(bins, KubeControllersBinary)
		if _, err := kubeapi.Binary(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	bins = append(bins, extraBins...)
	for _, b := range bins {
		p := filepath.Join(o.BinDir, b)
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			problems = append(problems, fmt.Sprintf("%s not found in the bin dir %s (run `make build`, or pass --bin-dir)", b, o.BinDir))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %s", ErrMissingDependency, strings.Join(problems, "\n  "))
}

// lookTool finds a system tool in PATH or in the sbin directories, which a
// non-login root shell may lack in its PATH.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

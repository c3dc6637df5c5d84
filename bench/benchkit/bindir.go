package benchkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// modulePath is what go.mod must declare for a directory to be the root
// that `go build ./cmd/...` builds from.
const modulePath = "github.com/calyx-net/calyx"

// Binaries are what a benchmark lab runs from the bin dir: the agent and
// the CNI plugin, and calyxctl for the diagnoses of a failed run.
var Binaries = []string{lab.AgentBinary, lab.PluginBinary, lab.CalyxctlBinary}

// buildTimeout bounds `go build ./cmd/...` on a fresh checkout.
const buildTimeout = 10 * time.Minute

// BinDir finds the Calyx binaries: $CALYX_BIN_DIR, else bin/ at the module
// root. When one is missing it builds them there (`go build -o DIR
// ./cmd/...`), so that `go run ./cmd/calyx-bench` works on a fresh checkout.
// Binaries that exist are used as they are (`make bench` builds them first).
func BinDir(ctx context.Context, log *slog.Logger) (string, error) {
	root, rootErr := moduleRoot()
	dir, err := binDirOf(root, rootErr)
	if err != nil {
		return "", err
	}
	if missing := MissingBinaries(dir); len(missing) > 0 {
		if rootErr != nil {
			return "", fmt.Errorf("%s lacks %s and it cannot be built: %w", dir, strings.Join(missing, ", "), rootErr)
		}
		log.Info("building the Calyx binaries", "missing", missing, "into", dir)
		bctx, cancel := context.WithTimeout(ctx, buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(bctx, "go", "build", "-o", dir+"/", "./cmd/...")
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("building the Calyx binaries into %s: %w: %s", dir, err, strings.TrimSpace(out.String()))
		}
		if missing := MissingBinaries(dir); len(missing) > 0 {
			return "", fmt.Errorf("%s still lacks %s after go build", dir, strings.Join(missing, ", "))
		}
	}
	return dir, nil
}

// ExpectedBinDir is where BinDir looks, without building anything: for
// tests, which skip rather than build.
func ExpectedBinDir() (string, error) {
	root, rootErr := moduleRoot()
	return binDirOf(root, rootErr)
}

func binDirOf(root string, rootErr error) (string, error) {
	dir := os.Getenv("CALYX_BIN_DIR")
	if dir == "" {
		if rootErr != nil {
			return "", fmt.Errorf("no CALYX_BIN_DIR and %w", rootErr)
		}
		dir = filepath.Join(root, "bin")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bin dir %q: %w", dir, err)
	}
	return abs, nil
}

// MissingBinaries lists the Binaries that dir lacks as executable files.
func MissingBinaries(dir string) []string {
	var missing []string
	for _, b := range Binaries {
		st, err := os.Stat(filepath.Join(dir, b))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

// moduleRoot walks up from the working directory to the go.mod of Calyx.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the working directory is not inside the Calyx module (set CALYX_BIN_DIR)")
		}
		dir = parent
	}
}

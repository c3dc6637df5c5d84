package bgpbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

const modulePath = "github.com/calyx-net/calyx"

// binDir finds the directory holding the Calyx binaries: CALYX_BIN_DIR, or
// ./bin at the module root. When one is missing it builds them all there
// with `go build -o DIR ./cmd/...` from the module root. Binaries that
// exist are used as they are (`make bench` builds them first).
func binDir(ctx context.Context, log *slog.Logger) (string, error) {
	root, rootErr := moduleRoot()
	dir := os.Getenv("CALYX_BIN_DIR")
	if dir == "" {
		if rootErr != nil {
			return "", fmt.Errorf("finding the Calyx binaries: CALYX_BIN_DIR is not set and %w", rootErr)
		}
		dir = filepath.Join(root, "bin")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bin dir %q: %w", dir, err)
	}
	missing := missingBinaries(dir)
	if len(missing) == 0 {
		return dir, nil
	}
	if rootErr != nil {
		return "", fmt.Errorf("%s lacks %v and they cannot be built: %w", dir, missing, rootErr)
	}
	log.Info("building the Calyx binaries", "missing", missing, "dir", dir)
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", dir+"/", "./cmd/...")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -o %s ./cmd/... in %s: %w: %s", dir, root, err, bytes.TrimSpace(out))
	}
	if missing := missingBinaries(dir); len(missing) > 0 {
		return "", fmt.Errorf("go build -o %s ./cmd/... did not produce %v", dir, missing)
	}
	return dir, nil
}

func missingBinaries(dir string) []string {
	var missing []string
	for _, b := range []string{lab.AgentBinary, lab.PluginBinary, lab.CalyxctlBinary} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
			missing = append(missing, b)
		}
	}
	return missing
}

// moduleRoot walks up from the working directory to the go.mod of the
// Calyx module.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the working directory is not inside the " + modulePath + " module")
		}
		dir = parent
	}
}

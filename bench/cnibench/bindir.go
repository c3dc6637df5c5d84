package cnibench

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
)

// modulePath is what go.mod must declare for a directory to be the root
// that `go build ./cmd/...` builds from.
const modulePath = "github.com/calyx-net/calyx"

// neededBinaries are what a lab with agents runs.
var neededBinaries = []string{"calyx-agent", "calyx"}

// binDir finds the Calyx binaries: $CALYX_BIN_DIR, else bin/ at the module
// root. When one is missing it builds them there (`go build -o DIR
// ./cmd/...`), so that `go run ./cmd/calyx-bench` works on a fresh checkout.
// (A private copy of the same helper in bench/netbench.)
func binDir(ctx context.Context, log *slog.Logger) (string, error) {
	root, rootErr := moduleRoot()
	dir := os.Getenv("CALYX_BIN_DIR")
	if dir == "" {
		if rootErr != nil {
			return "", fmt.Errorf("no CALYX_BIN_DIR and %w", rootErr)
		}
		dir = filepath.Join(root, "bin")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bin dir: %w", err)
	}
	if missing := missingBinaries(dir); len(missing) > 0 {
		if rootErr != nil {
			return "", fmt.Errorf("%s lacks %s and it cannot be built: %w", dir, strings.Join(missing, ", "), rootErr)
		}
		log.Info("building the Calyx binaries", "missing", missing, "into", dir)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/...")
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("building the Calyx binaries into %s: %w: %s", dir, err, strings.TrimSpace(out.String()))
		}
		if missing := missingBinaries(dir); len(missing) > 0 {
			return "", fmt.Errorf("%s still lacks %s after go build", dir, strings.Join(missing, ", "))
		}
	}
	return dir, nil
}

func missingBinaries(dir string) []string {
	var missing []string
	for _, b := range neededBinaries {
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

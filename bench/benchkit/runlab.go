package benchkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/e2e/lab"
)

// RunInLab is the frame of a lab benchmark's Run: it needs root and the
// Calyx binaries (BinDir), makes a fresh work directory "<suite>bench-*"
// under $TMPDIR, brings up a lab of opts in its lab/ and calls measure
// with them. Afterwards it removes everything, also on error or when ctx
// is cancelled, except that after a failure the work directory stays, with
// the lab's logs. A nil log discards.
func RunInLab(ctx context.Context, suite string, log *slog.Logger, opts lab.Options,
	measure func(l *lab.Lab, work string, log *slog.Logger) ([]bench.Figure, error)) (figs []bench.Figure, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New(suite + " benchmark needs root (it builds network namespaces)")
	}
	bin, err := BinDir(ctx, log)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", suite+"bench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	defer func() {
		if err != nil {
			log.Warn(suite+" benchmark failed; lab logs kept", "dir", filepath.Join(work, "lab", "logs"))
			return
		}
		_ = os.RemoveAll(work)
	}()

	opts.Dir, opts.BinDir, opts.Logger = filepath.Join(work, "lab"), bin, log.With("lab", suite+"bench")
	l, err := lab.Up(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("%s benchmark lab: %w", suite, err)
	}
	defer func() {
		if downErr := l.Teardown(); downErr != nil {
			err = errors.Join(err, fmt.Errorf("removing the %s benchmark lab: %w", suite, downErr))
		}
	}()
	return measure(l, work, log)
}

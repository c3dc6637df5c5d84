// Package version reports the build's version, set at link time with
// -ldflags "-X github.com/calyx-net/calyx/internal/version.Version=v0.1.0".
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release; "dev" for builds from a checkout.
var Version = "dev"

// String is the one-line version of a binary: name, release, commit, Go.
func String(binary string) string {
	commit := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				commit = s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", binary, Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

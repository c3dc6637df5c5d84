// Package version reports the build's version and commit, set at link
// time by `make build`:
//
//	-ldflags "-X github.com/calyx-net/calyx/internal/version.Version=v0.1.0
//	          -X github.com/calyx-net/calyx/internal/version.Commit=0123456789ab"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release (the VERSION file at build time); "dev" for a
// plain go build.
var Version = "dev"

// Commit is the source commit; empty means: take it from the VCS
// information Go embeds, when there is any.
var Commit = ""

// CommitID is the build's commit (12 hex digits), or "unknown".
func CommitID() string {
	if Commit != "" {
		return Commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}

// String is the one-line version of a binary: name, release, commit, Go.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", binary, Version, CommitID(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

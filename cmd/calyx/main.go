// Command calyx is the calyx CNI plugin (CNI type "calyx"): a thin shim
// that hands each CNI verb to the local calyx-agent over its unix socket.
// It never touches etcd or netlink itself. See docs/cni.md.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/calyx-net/calyx/cni/plugin"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	// stdout belongs to the CNI protocol; diagnostics go to stderr, which
	// runtimes log. CALYX_CNI_DEBUG=1 adds a line per call.
	level := slog.LevelWarn
	if os.Getenv("CALYX_CNI_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	p := plugin.New(os.Stdout, log)
	skel.PluginMainFuncs(p.Funcs(context.Background()), plugin.VersionInfo(), "CNI plugin calyx "+version)
}

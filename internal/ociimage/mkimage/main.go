// Command mkimage builds Calyx's container image offline (make image):
//
//	mkimage --bin bin --version v0.1.0 --commit 0123456789ab --created 2026-12-01T00:00:00Z --out bin/calyx-image.tar
//
// With --rootfs DIR it writes the image's files into DIR instead, for the
// Dockerfile's final stage.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/calyx-net/calyx/internal/ociimage"
)

func main() {
	var o ociimage.Options
	var out, rootfs, created string
	flag.StringVar(&o.BinDir, "bin", "bin", "directory with the static calyx-agent, calyx and calyxctl")
	flag.StringVar(&o.Version, "version", "", "the version (image tag and org.opencontainers.image.version)")
	flag.StringVar(&o.Commit, "commit", "", "the source commit (org.opencontainers.image.revision)")
	flag.StringVar(&o.Repository, "repository", ociimage.Repository, "image name without the tag")
	flag.StringVar(&created, "created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time: RFC 3339 or Unix seconds (default: now)")
	flag.StringVar(&out, "out", "", "the OCI archive to write")
	flag.StringVar(&rootfs, "rootfs", "", "write the image's files into this directory instead")
	flag.Parse()
	if err := run(o, out, rootfs, created); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(o ociimage.Options, out, rootfs, created string) error {
	t, err := parseTime(created)
	if err != nil {
		return err
	}
	o.Created = t
	if rootfs != "" {
		ls, err := ociimage.Assemble(o)
		if err != nil {
			return err
		}
		if err := ls.System.WriteDir(rootfs); err != nil {
			return err
		}
		return ls.Calyx.WriteDir(rootfs)
	}
	if out == "" {
		return fmt.Errorf("--out or --rootfs is required")
	}
	img, err := ociimage.Build(o)
	if err != nil {
		return err
	}
	if err := ociimage.WriteArchive(img, o.Ref(), out, t); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s %s (%.1f MiB)\n", out, o.Ref(), d, float64(st.Size())/(1<<20))
	return nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--created %q: want RFC 3339 or Unix seconds", s)
	}
	return t.UTC(), nil
}

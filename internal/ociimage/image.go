// Package ociimage builds Calyx's container image without a container
// engine or a registry (make image): the static Calyx binaries in
// /usr/local/bin on top of the iptables and ipset the agent runs, taken
// from the build host's packages with their libraries. The result is an
// OCI image layout in one tar that is also a docker-archive
// (skopeo inspect oci-archive:, docker load, ctr import). Equal inputs and
// creation time give the same bytes, so the digest is reproducible.
package ociimage

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Defaults of the image.
const (
	Repository = "ghcr.io/calyx-net/calyx"
	Source     = "https://github.com/calyx-net/calyx"
	// Entrypoint is the agent; install-cni, cleanup and calyxctl are run
	// by naming them (command: in a manifest, --entrypoint in docker).
	Entrypoint = "/usr/local/bin/calyx-agent"
	BinDir     = "/usr/local/bin"
	// User is the default user: calyxctl and --version need no
	// privileges. The agent and install-cni need root (CAP_NET_ADMIN and
	// CAP_SYS_ADMIN for netlink, iptables and entering workload
	// namespaces; writing the host's CNI directories), which the
	// manifests ask for explicitly.
	User = "65532:65532"
	Path = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Binaries are the programs of the image, in /usr/local/bin: the agent
// DaemonSet and the controllers Deployment run the same image.
var Binaries = []string{"calyx-agent", "calyx", "calyxctl", "calyx-kube-controllers"}

// Options describe one build.
type Options struct {
	// BinDir holds the static binaries named in Binaries.
	BinDir  string
	Version string
	Commit  string
	// Created is the image's creation time (the commit's time makes the
	// build reproducible).
	Created time.Time
	// Repository is the image name without tag (default Repository).
	Repository string
	// Tools are the host programs to include (default: CalyxTools).
	Tools *HostTools
}

// Ref is the image's full name: repository and version tag.
func (o *Options) Ref() string {
	repo := o.Repository
	if repo == "" {
		repo = Repository
	}
	return repo + ":" + o.Version
}

// CalyxTools is what the agent runs besides itself: iptables (both the
// nf_tables and the legacy backend, with their extension modules) and
// ipset.
func CalyxTools() *HostTools {
	links := map[string]string{}
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, suffix := range []string{"", "-save", "-restore"} {
			// iptables on PATH is the nf_tables one, as on Debian 12.
			links["/usr/sbin/"+fam+suffix] = "xtables-nft-multi"
			links["/usr/sbin/"+fam+"-nft"+suffix] = "xtables-nft-multi"
			links["/usr/sbin/"+fam+"-legacy"+suffix] = "xtables-legacy-multi"
		}
	}
	return &HostTools{
		Executables: []string{"xtables-nft-multi", "xtables-legacy-multi", "ipset"},
		PluginDirs:  []string{"xtables"},
		Files:       []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"},
		Links:       links,
	}
}

// Layers are the two file trees of the image: the system (users,
// directories, host tools; changes rarely) and the Calyx binaries.
type Layers struct {
	System, Calyx *Tree
	Tools         Added
	Arch          string
}

// Assemble builds the file trees.
func Assemble(o Options) (*Layers, error) {
	calyx := NewTree()
	arch := ""
	for _, name := range Binaries {
		p := o.BinDir + "/" + name
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		a, err := staticArch(p)
		if err != nil {
			return nil, err
		}
		if arch != "" && a != arch {
			return nil, fmt.Errorf("%s is for %s, the others for %s", p, a, arch)
		}
		arch = a
		calyx.File(BinDir+"/"+name, b, 0o755)
	}

	sys := NewTree()
	sys.File("/etc/passwd", []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), 0o644)
	sys.File("/etc/group", []byte("root:x:0:\nnonroot:x:65532:\n"), 0o644)
	sys.Dir("/root", 0o700)
	sys.Dir("/home/nonroot", 0o700)
	sys.Chown("/home/nonroot", 65532, 65532)
	sys.Dir("/tmp", 0o777|os.ModeSticky)
	sys.Dir("/run", 0o755)
	sys.Symlink("/var/run", "../run")
	sys.Dir("/etc/calyx", 0o755)
	tools := o.Tools
	if tools == nil {
		tools = CalyxTools()
	}
	added, err := tools.AddTo(sys)
	if err != nil {
		return nil, fmt.Errorf("host tools: %w", err)
	}
	if len(added.Packages) > 0 {
		sys.File("/usr/share/calyx/packages.txt", []byte(strings.Join(added.Packages, "\n")+"\n"), 0o644)
	}
	return &Layers{System: sys, Calyx: calyx, Tools: added, Arch: arch}, nil
}

// staticArch checks that an executable is statically linked and returns
// its GOARCH.
func staticArch(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	interp, libs, machine, err := elfNeeds(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if interp != "" || len(libs) > 0 {
		return "", fmt.Errorf("%s is dynamically linked (%s %v): build it with CGO_ENABLED=0 (make build)", p, interp, libs)
	}
	switch machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("%s: unsupported machine %s", p, machine)
}

// Labels are the image's OCI annotations-as-labels.
func (o *Options) Labels(tools Added) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":         "calyx",
		"org.opencontainers.image.description":   "Calyx: pure-L3 container networking — calyx-agent, the calyx CNI plugin, calyxctl and calyx-kube-controllers",
		"org.opencontainers.image.version":       o.Version,
		"org.opencontainers.image.revision":      o.Commit,
		"org.opencontainers.image.source":        Source,
		"org.opencontainers.image.url":           Source,
		"org.opencontainers.image.documentation": Source + "/blob/main/docs/operations.md",
		"org.opencontainers.image.created":       o.Created.UTC().Format(time.RFC3339),
	}
	if tools.OS != "" {
		l["dev.calyx.image.tools-from"] = tools.OS
	}
	return l
}

// Build assembles the image.
func Build(o Options) (v1.Image, error) {
	if o.Version == "" || o.Commit == "" {
		return nil, fmt.Errorf("version and commit are required")
	}
	ls, err := Assemble(o)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.Created.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: ls.Arch, OS: "linux", Created: created,
		Config: v1.Config{
			Entrypoint: []string{Entrypoint}, User: User, WorkingDir: "/",
			Env: []string{"PATH=" + Path}, Labels: o.Labels(ls.Tools),
		},
	})
	if err != nil {
		return nil, err
	}
	tools := "system files"
	if len(ls.Tools.Packages) > 0 {
		tools = "system files and " + strings.Join(ls.Tools.Packages, ", ") + " from " + ls.Tools.OS
	}
	for _, l := range []struct {
		tree *Tree
		what string
	}{{ls.System, tools}, {ls.Calyx, "calyx " + o.Version + " (" + o.Commit + "): " + strings.Join(Binaries, ", ") + " in " + BinDir}} {
		raw, err := l.tree.Tar(o.Created)
		if err != nil {
			return nil, err
		}
		layer, err := tarball.LayerFromOpener(opener(raw), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
			History: v1.History{Created: created, CreatedBy: "make image: " + l.what, Comment: "built offline by internal/ociimage"}})
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

func opener(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

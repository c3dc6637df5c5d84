package ociimage

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// HostTools are programs taken from the build host's own packages
// (iptables and ipset, which the agent runs) with everything they load:
// shared libraries, the dynamic linker and plugin directories.
type HostTools struct {
	// Root is where the host's file system is ("/" for this host).
	Root string
	// Executables are names looked up in the sbin and bin directories.
	Executables []string
	// PluginDirs are directories whose *.so files are loaded at run time
	// (relative to the multiarch library directory, such as "xtables").
	PluginDirs []string
	// Files are copied when they exist (/etc/protocols and the like).
	Files []string
	// Links are extra symbolic links: image path -> target.
	Links map[string]string
}

// Added says what AddTo copied.
type Added struct {
	// Files are the host paths of the regular files copied.
	Files []string
	// Packages are the Debian packages they come from ("name version"),
	// when the host has dpkg.
	Packages []string
	// OS is the host's PRETTY_NAME from os-release.
	OS string
}

var binDirs = []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}

// AddTo copies the tools into t.
func (h HostTools) AddTo(t *Tree) (Added, error) {
	root := h.Root
	if root == "" {
		root = "/"
	}
	var added Added
	var queue []string // host paths of ELF files whose dependencies to add
	seen := map[string]bool{}
	add := func(p string) error {
		resolved, err := t.CopyHostPath(root, p)
		if err != nil {
			return err
		}
		if !seen[resolved] {
			seen[resolved] = true
			added.Files = append(added.Files, p)
			queue = append(queue, resolved)
		}
		return nil
	}
	for _, name := range h.Executables {
		p, err := findIn(root, binDirs, name)
		if err != nil {
			return added, err
		}
		if err := add(p); err != nil {
			return added, err
		}
	}
	var libDirs []string
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		f, err := elf.Open(filepath.Join(root, p))
		if err != nil {
			continue // not ELF: a script or data file, nothing to load
		}
		interp, libs, machine, err := elfNeeds(f)
		f.Close()
		if err != nil {
			return added, fmt.Errorf("%s: %w", p, err)
		}
		if libDirs == nil {
			libDirs = libraryDirs(machine)
			for _, d := range h.PluginDirs {
				dir, err := findIn(root, libDirs, d)
				if err != nil {
					return added, fmt.Errorf("plugin directory %s: %w", d, err)
				}
				mods, _ := filepath.Glob(filepath.Join(root, dir, "*.so"))
				for _, m := range mods {
					if err := add(path.Join(dir, filepath.Base(m))); err != nil {
						return added, err
					}
				}
			}
		}
		if interp != "" {
			if err := add(interp); err != nil {
				return added, fmt.Errorf("%s: dynamic linker: %w", p, err)
			}
		}
		for _, lib := range libs {
			lp, err := findIn(root, libDirs, lib)
			if err != nil {
				return added, fmt.Errorf("%s needs %s: %w", p, lib, err)
			}
			if err := add(lp); err != nil {
				return added, err
			}
		}
	}
	for _, f := range h.Files {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			continue
		}
		if err := add(f); err != nil {
			return added, err
		}
	}
	for name, target := range h.Links {
		t.Symlink(name, target)
	}
	added.OS = osName(root)
	if root == "/" {
		pkgs, err := debianPackages(added.Files)
		if err != nil {
			return added, err
		}
		added.Packages = pkgs
		for _, pkg := range pkgs {
			name := strings.Fields(pkg)[0]
			// Each package's licence goes with the files taken from it.
			if _, err := t.CopyHostPath(root, "/usr/share/doc/"+name+"/copyright"); err != nil && !errors.Is(err, os.ErrNotExist) {
				return added, err
			}
		}
	}
	return added, nil
}

// elfNeeds reads an ELF file's dynamic linker and DT_NEEDED libraries.
func elfNeeds(f *elf.File) (interp string, libs []string, machine elf.Machine, err error) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", nil, 0, err
			}
			interp = string(bytes.TrimRight(b, "\x00"))
		}
	}
	libs, err = f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return "", nil, 0, err
	}
	return interp, libs, f.Machine, nil
}

// libraryDirs are where the dynamic linker of Debian-like systems looks.
func libraryDirs(m elf.Machine) []string {
	triplet := map[elf.Machine]string{elf.EM_X86_64: "x86_64-linux-gnu", elf.EM_AARCH64: "aarch64-linux-gnu"}[m]
	var dirs []string
	if triplet != "" {
		dirs = append(dirs, "/lib/"+triplet, "/usr/lib/"+triplet)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

func findIn(root string, dirs []string, name string) (string, error) {
	for _, d := range dirs {
		p := path.Join(d, name)
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, strings.Join(dirs, ", "))
}

func osName(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "etc/os-release"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// debianPackages names the packages (with versions) owning the files, or
// nothing on a host without dpkg.
func debianPackages(files []string) ([]string, error) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		return nil, nil
	}
	// dpkg registers some files under /lib, others under /usr/lib: ask
	// for both spellings of a merged-/usr path. It exits 1 when any path
	// is unknown but still lists the others.
	args := []string{"-S"}
	for _, f := range files {
		if s, ok := strings.CutPrefix(f, "/usr/"); ok {
			args = append(args, f, "/"+s)
		} else {
			args = append(args, f, "/usr"+f)
		}
	}
	out, _ := exec.Command("dpkg-query", args...).Output()
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if pkg, _, ok := strings.Cut(line, ": "); ok {
			for _, n := range strings.Split(pkg, ", ") {
				names[strings.Split(n, ":")[0]] = true
			}
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	args = []string{"-W", "-f", "${Package} ${Version}\n"}
	for n := range names {
		args = append(args, n)
	}
	out, err := exec.Command("dpkg-query", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-query: %w", err)
	}
	pkgs := strings.Split(strings.TrimSpace(string(out)), "\n")
	slices.Sort(pkgs)
	return pkgs, nil
}

package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Tree is the file system of one image layer, built in memory: paths are
// absolute and clean ("/usr/local/bin/calyx"), parents are implied.
type Tree struct {
	entries map[string]*entry
}

type entry struct {
	typ  byte // tar.TypeReg, TypeDir or TypeSymlink
	mode int64
	data []byte
	link string
	uid  int
	gid  int
}

// NewTree is an empty tree.
func NewTree() *Tree { return &Tree{entries: map[string]*entry{}} }

func clean(name string) string { return path.Clean("/" + name) }

// tarSticky is the sticky bit in a tar header's mode.
const tarSticky = 0o1000

// Dir adds a directory.
func (t *Tree) Dir(name string, mode fs.FileMode) {
	m := int64(mode.Perm())
	if mode&fs.ModeSticky != 0 {
		m |= tarSticky
	}
	t.entries[clean(name)] = &entry{typ: tar.TypeDir, mode: m}
}

// File adds a regular file with these contents.
func (t *Tree) File(name string, data []byte, mode fs.FileMode) {
	t.entries[clean(name)] = &entry{typ: tar.TypeReg, mode: int64(mode.Perm()), data: data}
}

// Symlink adds a symbolic link.
func (t *Tree) Symlink(name, target string) {
	t.entries[clean(name)] = &entry{typ: tar.TypeSymlink, mode: 0o777, link: target}
}

// Chown sets the owner of one entry.
func (t *Tree) Chown(name string, uid, gid int) {
	if e := t.entries[clean(name)]; e != nil {
		e.uid, e.gid = uid, gid
	}
}

// Has reports whether name is in the tree.
func (t *Tree) Has(name string) bool { return t.entries[clean(name)] != nil }

// CopyHostPath adds the file at hostPath (under root, "/" for this host)
// at the same path, keeping every symbolic link on the way (such as /lib
// -> usr/lib) as a link and following it, so that the path resolves in the
// image as it does on the host. It returns the resolved path of the file.
func (t *Tree) CopyHostPath(root, hostPath string) (string, error) {
	cur := "/"
	rest := strings.Split(strings.Trim(clean(hostPath), "/"), "/")
	for hops := 0; len(rest) > 0; {
		next := path.Join(cur, rest[0])
		rest = rest[1:]
		st, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > 40 {
				return "", fmt.Errorf("%s: too many symbolic links", hostPath)
			}
			target, err := os.Readlink(filepath.Join(root, next))
			if err != nil {
				return "", err
			}
			t.Symlink(next, target)
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
			cur = "/"
		case st.IsDir():
			if !t.Has(next) {
				t.Dir(next, st.Mode())
			}
			cur = next
		case st.Mode().IsRegular():
			if len(rest) > 0 {
				return "", fmt.Errorf("%s: %s is not a directory", hostPath, next)
			}
			b, err := os.ReadFile(filepath.Join(root, next))
			if err != nil {
				return "", err
			}
			t.File(next, b, st.Mode())
			return next, nil
		default:
			return "", fmt.Errorf("%s: %s is not a file, directory or link", hostPath, next)
		}
	}
	return cur, nil
}

// names lists every path with its implied parents, parents first.
func (t *Tree) names() []string {
	all := map[string]bool{}
	for name := range t.entries {
		for p := name; p != "/"; p = path.Dir(p) {
			all[p] = true
		}
	}
	delete(all, "/")
	out := make([]string, 0, len(all))
	for n := range all {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Tar writes the tree as an uncompressed tar with every time set to
// mtime, so equal trees give equal bytes.
func (t *Tree) Tar(mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range t.names() {
		e := t.entries[name]
		if e == nil {
			e = &entry{typ: tar.TypeDir, mode: 0o755}
		}
		h := &tar.Header{
			Name: strings.TrimPrefix(name, "/"), Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeDir {
			h.Name += "/"
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteDir writes the tree under dir (for a Dockerfile's COPY).
func (t *Tree) WriteDir(dir string) error {
	for _, name := range t.names() {
		e := t.entries[name]
		p := filepath.Join(dir, name)
		switch {
		case e == nil:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case e.typ == tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(p, fileMode(e.mode)); err != nil {
				return err
			}
		case e.typ == tar.TypeSymlink:
			os.Remove(p)
			if err := os.Symlink(e.link, p); err != nil {
				return err
			}
		default:
			if err := os.WriteFile(p, e.data, fileMode(e.mode)); err != nil {
				return err
			}
			if err := os.Chmod(p, fileMode(e.mode)); err != nil {
				return err
			}
		}
		if e != nil && (e.uid != 0 || e.gid != 0) {
			if err := os.Lchown(p, e.uid, e.gid); err != nil {
				return err
			}
		}
	}
	return nil
}

// fileMode turns a tar mode into the os package's.
func fileMode(mode int64) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&tarSticky != 0 {
		m |= fs.ModeSticky
	}
	return m
}

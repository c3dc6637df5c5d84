package ociimage

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations of the image in index.json: the tag (what skopeo's
// oci-archive:FILE:TAG matches) and the full name containerd and docker
// import it under.
const (
	annotationRefName   = "org.opencontainers.image.ref.name"
	annotationImageName = "io.containerd.image.name"
)

// dockerManifest is one entry of docker-archive's manifest.json, which
// docker load reads; it points into the OCI layout's blobs, as docker
// save itself writes since Docker 25.
type dockerManifest struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// WriteArchive writes img, named ref, to path as one tar holding an OCI
// image layout (oci-layout, index.json, blobs/sha256/...) and docker's
// manifest.json. It writes a temporary file beside path and renames it.
func WriteArchive(img v1.Image, ref, path string, mtime time.Time) (err error) {
	tag := ref[strings.LastIndex(ref, ":")+1:]
	dir, err := os.MkdirTemp(filepath.Dir(path), ".calyx-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{annotationRefName: tag, annotationImageName: ref})); err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	dm := []dockerManifest{{Config: blobPath(m.Config.Digest), RepoTags: []string{ref}}}
	for _, l := range m.Layers {
		dm[0].Layers = append(dm[0].Layers, blobPath(l.Digest))
	}
	b, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		return err
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), ".calyx-image-*.tar")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tarDir(tmp, dir, mtime); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// tarDir writes the files under dir in name order, owned by root, all
// with mtime.
func tarDir(w io.Writer, dir string, mtime time.Time) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if d.IsDir() {
			h.Name += "/"
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
			return tw.WriteHeader(h)
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		h.Size = st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netnstest"
)

const (
	testVersion = "v9.8.7-test"
	testCommit  = "0123456789ab"
)

var testCreated = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// archive is an image archive read back with the standard library alone,
// so that the check does not trust the code that wrote it.
type archive struct {
	files map[string][]byte
}

func readArchive(t *testing.T, path string) archive {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := archive{files: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			a.files[h.Name] = b
		}
	}
	return a
}

func (a archive) json(t *testing.T, name string, v any) {
	t.Helper()
	b, ok := a.files[name]
	if !ok {
		t.Fatalf("archive has no %s", name)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

func (a archive) blob(t *testing.T, d descriptor) []byte {
	t.Helper()
	b, ok := a.files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	if int64(len(b)) != d.Size {
		t.Errorf("blob %s: %d bytes, descriptor says %d", d.Digest, len(b), d.Size)
	}
	return b
}

type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		User       string            `json:"User"`
		Env        []string          `json:"Env"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		CreatedBy string `json:"created_by"`
	} `json:"history"`
}

type layerFile struct {
	typ  byte
	mode int64
	uid  int
	data []byte
	link string
}

// TestImageArchive builds the image from the real static binaries and
// checks it as skopeo, docker load and ctr import see it: the OCI layout
// (every blob's digest), docker's manifest.json, the config (entrypoint,
// user, labels), the files, then skopeo inspect, and — as root — the
// image's own iptables and ipset against a kernel in a test namespace and
// a run through containerd and runc.
func TestImageArchive(t *testing.T) {
	bins := staticBinaries(t)
	o := Options{BinDir: bins, Version: testVersion, Commit: testCommit, Created: testCreated}
	img, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "calyx-image.tar")
	if err := WriteArchive(img, o.Ref(), path, testCreated); err != nil {
		t.Fatal(err)
	}
	a := readArchive(t, path)

	var ociLayout struct{ ImageLayoutVersion string }
	if a.json(t, "oci-layout", &ociLayout); ociLayout.ImageLayoutVersion != "1.0.0" {
		t.Errorf("oci-layout %q", a.files["oci-layout"])
	}
	for name, b := range a.files {
		if hexd, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexd {
				t.Errorf("blob %s does not match its digest", name)
			}
		}
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	a.json(t, "index.json", &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(index.Manifests))
	}
	md := index.Manifests[0]
	if md.MediaType != "application/vnd.oci.image.manifest.v1+json" ||
		md.Annotations["org.opencontainers.image.ref.name"] != testVersion ||
		md.Annotations["io.containerd.image.name"] != Repository+":"+testVersion {
		t.Errorf("index entry %+v", md)
	}
	var manifest struct {
		MediaType string       `json:"mediaType"`
		Config    descriptor   `json:"config"`
		Layers    []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(a.blob(t, md), &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Config.MediaType != "application/vnd.oci.image.config.v1+json" || len(manifest.Layers) != 2 {
		t.Fatalf("manifest %+v", manifest)
	}
	var cfg imageConfig
	if err := json.Unmarshal(a.blob(t, manifest.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "amd64" && cfg.Architecture != "arm64" || cfg.OS != "linux" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/calyx-agent" {
		t.Errorf("entrypoint %q", cfg.Config.Entrypoint)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("user %q, want the non-root 65532:65532", cfg.Config.User)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  testVersion,
		"org.opencontainers.image.revision": testCommit,
		"org.opencontainers.image.source":   "https://github.com/calyx-net/calyx",
		"org.opencontainers.image.created":  "2026-12-01T12:00:00Z",
		"org.opencontainers.image.title":    "calyx",
	} {
		if got := cfg.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if len(cfg.RootFS.DiffIDs) != 2 || len(cfg.History) != 2 {
		t.Errorf("rootfs %v, history %v", cfg.RootFS.DiffIDs, cfg.History)
	}

	// docker load reads manifest.json.
	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	a.json(t, "manifest.json", &dm)
	if len(dm) != 1 || dm[0].Config != "blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:") ||
		len(dm[0].RepoTags) != 1 || dm[0].RepoTags[0] != Repository+":"+testVersion || len(dm[0].Layers) != 2 {
		t.Errorf("manifest.json %+v", dm)
	}

	// The files: each layer's uncompressed digest is its diff ID.
	files := map[string]layerFile{}
	for i, l := range manifest.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(a.blob(t, l)))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(zr)
		if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d: diff ID mismatch", i)
		}
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(tr)
			files["/"+strings.TrimSuffix(h.Name, "/")] = layerFile{h.Typeflag, h.Mode, h.Uid, b, h.Linkname}
		}
	}
	for _, name := range Binaries {
		want, _ := os.ReadFile(filepath.Join(bins, name))
		f := files["/usr/local/bin/"+name]
		if f.typ != tar.TypeReg || f.mode != 0o755 || !bytes.Equal(f.data, want) {
			t.Errorf("/usr/local/bin/%s: type %c mode %o, %d bytes (want the %d of %s)", name, f.typ, f.mode, len(f.data), len(want), filepath.Join(bins, name))
		}
	}
	for name, target := range map[string]string{"/usr/sbin/iptables-restore": "xtables-nft-multi", "/usr/sbin/ip6tables-legacy-save": "xtables-legacy-multi"} {
		if f := files[name]; f.typ != tar.TypeSymlink || f.link != target {
			t.Errorf("%s: %+v", name, f)
		}
	}
	for _, name := range []string{"/usr/sbin/xtables-nft-multi", "/usr/sbin/ipset"} {
		if f := files[name]; f.typ != tar.TypeReg || f.mode&0o111 == 0 {
			t.Errorf("%s missing or not executable", name)
		}
	}
	if !bytes.Contains(files["/etc/passwd"].data, []byte("nonroot:x:65532:65532:")) || files["/home/nonroot"].uid != 65532 {
		t.Error("no non-root user 65532 with its home")
	}
	if f := files["/tmp"]; f.mode&0o1777 != 0o1777 {
		t.Errorf("/tmp mode %o", f.mode)
	}

	// The same inputs give the same image.
	img2, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 || d1.String() != md.Digest {
		t.Errorf("not reproducible: %s, then %s (archive %s)", d1, d2, md.Digest)
	}

	// What the binaries print outside the image, they must print inside.
	hostOut, err := exec.Command(filepath.Join(bins, "calyxctl"), "version", "--client").Output()
	if err != nil {
		t.Fatal(err)
	}
	ctlVersion := strings.TrimSpace(string(hostOut))
	t.Run("skopeo", func(t *testing.T) { checkSkopeo(t, path, md.Digest) })
	t.Run("tools in the kernel", func(t *testing.T) { checkToolsInNetns(t, root(t, manifest.Layers, a), ctlVersion) })
	t.Run("containerd", func(t *testing.T) { checkContainerd(t, path, o.Ref(), ctlVersion) })
}

func checkSkopeo(t *testing.T, path, digest string) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("skopeo not installed (make deps-image installs it)")
	}
	out, err := exec.Command("skopeo", "inspect", "oci-archive:"+path).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	var info struct {
		Digest       string
		Architecture string
		Labels       map[string]string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Digest != digest || info.Labels["org.opencontainers.image.version"] != testVersion {
		t.Errorf("skopeo inspect: %s", out)
	}
	out, err = exec.Command("skopeo", "inspect", "--config", "oci-archive:"+path+":"+testVersion).Output()
	if err != nil {
		t.Fatalf("skopeo inspect --config with the tag: %v", err)
	}
	var cfg imageConfig
	json.Unmarshal(out, &cfg)
	if cfg.Config.User != User || len(cfg.Config.Entrypoint) != 1 {
		t.Errorf("skopeo inspect --config: %s", out)
	}
	// A copy verifies every blob against its digest.
	if out, err := exec.Command("skopeo", "copy", "--quiet", "oci-archive:"+path, "dir:"+t.TempDir()).CombinedOutput(); err != nil {
		t.Errorf("skopeo copy oci-archive: %v: %s", err, out)
	}
	// The same file read the way docker load reads it (manifest.json),
	// named by its RepoTag.
	out, err = exec.Command("skopeo", "inspect", "docker-archive:"+path+":"+Repository+":"+testVersion).Output()
	if err != nil {
		t.Fatalf("skopeo inspect docker-archive: %v", err)
	}
	info.Labels = nil
	if err := json.Unmarshal(out, &info); err != nil || info.Labels["org.opencontainers.image.revision"] != testCommit {
		t.Errorf("skopeo inspect docker-archive: %v %s", err, out)
	}
	if out, err := exec.Command("skopeo", "copy", "--quiet", "docker-archive:"+path, "dir:"+t.TempDir()).CombinedOutput(); err != nil {
		t.Errorf("skopeo copy docker-archive: %v: %s", err, out)
	}
}

// checkToolsInNetns extracts the image and runs its binaries with chroot:
// calyxctl as the image's non-root user, and the image's own iptables
// (both backends) and ipset against the kernel in a test namespace.
func checkToolsInNetns(t *testing.T, root, ctlVersion string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chroot and network namespaces")
	}
	run := func(argv ...string) string {
		t.Helper()
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
		return string(out)
	}
	if out := strings.TrimSpace(run("chroot", "--userspec=65532:65532", root, "/usr/local/bin/calyxctl", "version", "--client")); out != ctlVersion {
		t.Errorf("calyxctl version in the image: %q, outside: %q", out, ctlVersion)
	}
	if out := run("chroot", root, "/usr/local/bin/calyx-agent", "--version"); !strings.HasPrefix(out, "calyx-agent ") {
		t.Errorf("calyx-agent --version in the image: %s", out)
	}
	ns := netnstest.New(t, "image").Name
	in := func(argv ...string) string {
		t.Helper()
		return run(append([]string{"ip", "netns", "exec", ns, "chroot", root}, argv...)...)
	}
	in("/usr/sbin/ipset", "create", "cx-img", "hash:net")
	in("/usr/sbin/ipset", "add", "cx-img", "10.244.0.0/26")
	for _, ipt := range []string{"iptables", "iptables-legacy", "ip6tables"} {
		in("/usr/sbin/"+ipt, "-N", "cx-img")
		in("/usr/sbin/"+ipt, "-A", "cx-img", "-p", "tcp", "--dport", "5432", "-m", "comment", "--comment", "from the image", "-j", "ACCEPT")
	}
	in("/usr/sbin/iptables", "-A", "cx-img", "-m", "set", "--match-set", "cx-img", "src", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT")
	restore := "*filter\n:cx-img2 - [0:0]\n-A cx-img2 -j RETURN\nCOMMIT\n"
	cmd := exec.Command("ip", "netns", "exec", ns, "chroot", root, "/usr/sbin/iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(restore)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iptables-restore from the image: %v: %s", err, out)
	}
	// The host's own tools see what the image's wrote.
	got := run("ip", "netns", "exec", ns, "iptables-nft-save") + run("ip", "netns", "exec", ns, "iptables-legacy-save") + run("ip", "netns", "exec", ns, "ip6tables-nft-save")
	for _, want := range []string{`--dport 5432 -m comment --comment "from the image" -j ACCEPT`, "--match-set cx-img src", "-A cx-img2 -j RETURN"} {
		if !strings.Contains(got, want) {
			t.Errorf("host iptables-save lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "from the image") != 3 {
		t.Errorf("want the rule in nft v4, legacy v4 and nft v6:\n%s", got)
	}
	if out := run("ip", "netns", "exec", ns, "ipset", "list", "cx-img"); !strings.Contains(out, "10.244.0.0/26") {
		t.Errorf("ipset list: %s", out)
	}
}

// root extracts the layers into a directory (as root: ownership kept).
func root(t *testing.T, layers []descriptor, a archive) string {
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		return dir
	}
	for _, l := range layers {
		cmd := exec.Command("tar", "-xzf", "-", "-C", dir)
		cmd.Stdin = bytes.NewReader(a.blob(t, l))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("extracting a layer: %v: %s", err, out)
		}
	}
	return dir
}

// checkContainerd imports the archive into a containerd of its own and
// runs calyxctl from it with runc.
func checkContainerd(t *testing.T, path, ref, ctlVersion string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for containerd")
	}
	for _, c := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s not installed (make deps-image installs it)", c)
		}
	}
	dir, err := os.MkdirTemp("", "calyx-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	conf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "ttrpc.sock"))
	os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o600)
	logf, _ := os.Create(filepath.Join(dir, "containerd.log"))
	d := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	d.Stdout, d.Stderr = logf, logf
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Process.Kill()
		d.Wait()
		logf.Close()
		// Snapshots may still be mounted if a run was cut short.
		exec.Command("sh", "-c", "grep -o ' "+dir+"[^ ]*' /proc/self/mounts | sort -r | xargs -r umount -l").Run()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	ctr := func(argv ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"-a", sock, "-n", "calyx-test"}, argv...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("containerd did not start:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := ctr("images", "import", path); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	if out, _ := ctr("images", "ls", "-q"); strings.TrimSpace(out) != ref {
		t.Errorf("ctr images ls: %q, want %s", out, ref)
	}
	out, err := ctr("run", "--rm", ref, "calyx-image-test", "/usr/local/bin/calyxctl", "version", "--client")
	if err != nil || strings.TrimSpace(out) != ctlVersion {
		t.Errorf("ctr run calyxctl version: %v: %s", err, out)
	}
}

// staticBinaries is CALYX_BIN_DIR (make test's bin/, built static) when it
// holds static binaries, else a fresh static build.
func staticBinaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("CALYX_BIN_DIR"); dir != "" {
		ok := true
		for _, name := range Binaries {
			if _, err := staticArch(filepath.Join(dir, name)); err != nil {
				ok = false
			}
		}
		if ok {
			return dir
		}
	}
	dir := t.TempDir()
	args := []string{"build", "-ldflags", "-X github.com/calyx-net/calyx/internal/version.Version=" + testVersion +
		" -X github.com/calyx-net/calyx/internal/version.Commit=" + testCommit, "-o", dir + "/"}
	for _, name := range Binaries {
		args = append(args, "github.com/calyx-net/calyx/cmd/"+name)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building static binaries: %v: %s", err, out)
	}
	return dir
}

// The Dockerfile builds the same image: the same files (mkimage --rootfs
// from the same binaries), entrypoint, user, PATH and labels.
func TestDockerfileMatches(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Join continued lines, then read the final stage's instructions.
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var final []string
	var stageSrc string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			final = nil
		}
		if strings.Contains(line, "mkimage") {
			stageSrc = line
		}
		final = append(final, line)
	}
	instr := map[string]string{}
	for _, l := range final {
		k, v, _ := strings.Cut(l, " ")
		instr[k] += strings.TrimSpace(v) + "\n"
	}
	check := func(what, got, want string) {
		if strings.TrimSpace(got) != want {
			t.Errorf("Dockerfile %s: %q, want %q", what, strings.TrimSpace(got), want)
		}
	}
	check("final FROM", instr["FROM"], "scratch")
	check("COPY", instr["COPY"], "--from=build /out/rootfs/ /")
	check("ENTRYPOINT", instr["ENTRYPOINT"], `["`+Entrypoint+`"]`)
	check("USER", instr["USER"], User)
	check("ENV", instr["ENV"], "PATH="+Path)
	o := Options{Version: "x", Commit: "y"}
	for k := range o.Labels(Added{}) {
		if k != "org.opencontainers.image.created" && !strings.Contains(instr["LABEL"], k+"=") {
			t.Errorf("Dockerfile has no LABEL %s", k)
		}
	}
	if !strings.Contains(stageSrc, "--rootfs /out/rootfs") || !strings.Contains(stageSrc, "CGO_ENABLED=0") {
		t.Errorf("the build stage does not assemble /out/rootfs with mkimage from static binaries: %s", stageSrc)
	}
	for _, name := range Binaries {
		if !strings.Contains(stageSrc, "./cmd/"+name+" ") {
			t.Errorf("the build stage does not build %s", name)
		}
	}
}

package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// fixture is a bin dir, a conf dir and a fake plugin binary.
type fixture struct {
	bin, conf, plugin string
}

func newFixture(t *testing.T, pluginBytes []byte) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{bin: filepath.Join(root, "bin"), conf: filepath.Join(root, "net.d"), plugin: filepath.Join(root, "src", "calyx")}
	for _, d := range []string{f.bin, f.conf, filepath.Dir(f.plugin)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.plugin, pluginBytes, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) opts() Options {
	return Options{BinDir: f.bin, ConfDir: f.conf, Plugin: f.plugin, MTU: 1450, AgentSocket: "/run/calyx/agent.sock"}
}

func whats(acts []Action) map[string]string {
	m := map[string]string{}
	for _, a := range acts {
		m[filepath.Base(a.Path)] = a.What
	}
	return m
}

func TestInstallWritesPluginAndConflistLibcniLoads(t *testing.T) {
	f := newFixture(t, []byte("#!/bin/sh\necho plugin v1\n"))
	acts, err := Install(f.opts())
	if err != nil {
		t.Fatal(err)
	}
	if w := whats(acts); w["calyx"] != "installed" || w[DefaultConfName] != "installed" {
		t.Fatalf("actions %v", acts)
	}
	b, _ := os.ReadFile(filepath.Join(f.bin, "calyx"))
	if string(b) != "#!/bin/sh\necho plugin v1\n" {
		t.Fatalf("plugin copied as %q", b)
	}
	if st, _ := os.Stat(filepath.Join(f.bin, "calyx")); st.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode %v", st.Mode())
	}
	// What a runtime does: libcni finds and loads the conflist by name.
	list, err := libcni.LoadConfList(f.conf, "calyx")
	if err != nil {
		t.Fatalf("libcni cannot load what install wrote: %v", err)
	}
	if len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "calyx" {
		t.Fatalf("plugins %+v", list.Plugins)
	}
	var p struct {
		AgentSocket string `json:"agentSocket"`
		MTU         int    `json:"mtu"`
	}
	json.Unmarshal(list.Plugins[0].Bytes, &p)
	if p.AgentSocket != "/run/calyx/agent.sock" || p.MTU != 1450 {
		t.Errorf("plugin conf %s", list.Plugins[0].Bytes)
	}
}

// A second run with the same options rewrites nothing (a runtime watching
// the directory sees no event); a changed option rewrites the conflist only.
func TestInstallIdempotent(t *testing.T) {
	f := newFixture(t, []byte("binary"))
	if _, err := Install(f.opts()); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(f.conf, DefaultConfName)
	st1, _ := os.Stat(confPath)
	bst1, _ := os.Stat(filepath.Join(f.bin, "calyx"))
	acts, err := Install(f.opts())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.What != "unchanged" {
			t.Errorf("second run: %s", a)
		}
	}
	st2, _ := os.Stat(confPath)
	bst2, _ := os.Stat(filepath.Join(f.bin, "calyx"))
	if !os.SameFile(st1, st2) || !os.SameFile(bst1, bst2) {
		t.Error("second run replaced a file that had not changed")
	}

	o := f.opts()
	o.MTU = 9000
	acts, _ = Install(o)
	if w := whats(acts); w[DefaultConfName] != "installed" || w["calyx"] != "unchanged" {
		t.Errorf("MTU change: %v", acts)
	}
	if b, _ := os.ReadFile(confPath); !strings.Contains(string(b), `"mtu": 9000`) {
		t.Errorf("conflist after MTU change: %s", b)
	}
	entries, _ := os.ReadDir(f.conf)
	if len(entries) != 1 {
		t.Errorf("conf dir holds %d files, want 1", len(entries))
	}
}

// Conflists of earlier Calyx installs go; other networks, chains that use
// calyx with other plugins, and files libcni ignores stay.
func TestInstallRemovesOnlyStaleCalyxConfigs(t *testing.T) {
	f := newFixture(t, []byte("binary"))
	files := map[string]string{
		"05-calyx.conflist":    `{"cniVersion":"1.0.0","name":"calyx","plugins":[{"type":"calyx"}]}`,
		"20-calyx.conf":        `{"cniVersion":"0.4.0","name":"calyx","type":"calyx"}`,
		"10-bridge.conflist":   `{"cniVersion":"1.0.0","name":"mynet","plugins":[{"type":"bridge"}]}`,
		"30-chained.conflist":  `{"cniVersion":"1.0.0","name":"calyx","plugins":[{"type":"calyx"},{"type":"portmap"}]}`,
		"40-other.conf":        `{"cniVersion":"0.4.0","name":"other","type":"calyx"}`,
		"calyx.conflist.bak":   `{"cniVersion":"1.0.0","name":"calyx","plugins":[{"type":"calyx"}]}`,
		"99-broken.conflist":   `{not json`,
		tmpPrefix + "x-123456": "half a file",
	}
	for n, c := range files {
		os.WriteFile(filepath.Join(f.conf, n), []byte(c), 0o644)
	}
	acts, err := Install(f.opts())
	if err != nil {
		t.Fatal(err)
	}
	w := whats(acts)
	for _, gone := range []string{"05-calyx.conflist", "20-calyx.conf", tmpPrefix + "x-123456"} {
		if _, err := os.Stat(filepath.Join(f.conf, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there", gone)
		}
		if !strings.HasPrefix(w[gone], "removed") {
			t.Errorf("%s: action %q", gone, w[gone])
		}
	}
	for _, kept := range []string{"10-bridge.conflist", "30-chained.conflist", "40-other.conf", "calyx.conflist.bak", "99-broken.conflist"} {
		if b, err := os.ReadFile(filepath.Join(f.conf, kept)); err != nil || string(b) != files[kept] {
			t.Errorf("%s was touched: %v", kept, err)
		}
	}
}

// Bad options fail before anything is written.
func TestInstallRejectsBadOptions(t *testing.T) {
	f := newFixture(t, []byte("binary"))
	cases := map[string]func(*Options){
		"mtu":      func(o *Options) { o.MTU = 40 },
		"socket":   func(o *Options) { o.AgentSocket = "relative/agent.sock" },
		"bin-dir":  func(o *Options) { o.BinDir = filepath.Join(f.bin, "missing") },
		"conf-dir": func(o *Options) { o.ConfDir = "net.d" },
		"plugin":   func(o *Options) { o.Plugin = filepath.Join(f.bin, "nope") },
		"name":     func(o *Options) { o.ConfName = "../10-calyx.conflist" },
	}
	for name, mod := range cases {
		o := f.opts()
		mod(&o)
		_, err := Install(o)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error does not name the problem: %v", name, err)
		}
	}
	for _, d := range []string{f.bin, f.conf} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s not empty after refused installs", d)
		}
	}
}

// While installs alternate between two versions, readers of the conflist
// and of the plugin always see one whole version, never a partial file.
func TestInstallReadersNeverSeePartialFiles(t *testing.T) {
	// Large enough that a non-atomic copy would be caught mid-way.
	v1 := bytes.Repeat([]byte("1"), 4<<20)
	v2 := bytes.Repeat([]byte("2"), 4<<20+7)
	f := newFixture(t, v1)
	o1, o2 := f.opts(), f.opts()
	o2.MTU = 9000
	want := map[string]bool{}
	for _, o := range []Options{o1, o2} {
		c, err := o.Conflist()
		if err != nil {
			t.Fatal(err)
		}
		want[string(c)] = true
	}
	if _, err := Install(o1); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var reads, bad atomic.Int64
	var wg sync.WaitGroup
	reader := func(path string, ok func([]byte) bool) {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(path)
			if err != nil || !ok(b) {
				bad.Add(1)
			}
			reads.Add(1)
		}
	}
	wg.Add(2)
	go reader(filepath.Join(f.conf, DefaultConfName), func(b []byte) bool { return want[string(b)] })
	go reader(filepath.Join(f.bin, "calyx"), func(b []byte) bool { return bytes.Equal(b, v1) || bytes.Equal(b, v2) })
	for i := 0; i < 40; i++ {
		src, o := v1, o1
		if i%2 == 1 {
			src, o = v2, o2
		}
		if err := os.WriteFile(f.plugin, src, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := Install(o); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d reads saw a missing or partial file", bad.Load(), reads.Load())
	}
	t.Logf("%d reads, all whole", reads.Load())
}

// A failed write leaves the old file and no temporary file behind.
func TestWriteAtomicFailureLeavesOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "10-calyx.conflist")
	os.WriteFile(path, []byte("old"), 0o644)
	err := writeAtomic(path, 0o644, func(w io.Writer) error {
		w.Write([]byte("half"))
		return errors.New("disk full")
	})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("file now %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files in dir, want 1", len(entries))
	}
}

// Uninstall removes the plugin and Calyx's own conflists, nothing else,
// and a second run finds nothing to do.
func TestUninstall(t *testing.T) {
	f := newFixture(t, []byte("binary"))
	if _, err := Install(f.opts()); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(f.conf, "10-bridge.conflist")
	os.WriteFile(other, []byte(`{"cniVersion":"1.0.0","name":"mynet","plugins":[{"type":"bridge"}]}`), 0o644)
	os.WriteFile(filepath.Join(f.bin, "bridge"), []byte("x"), 0o755)
	acts, err := Uninstall(f.conf, f.bin, "")
	if err != nil {
		t.Fatal(err)
	}
	if w := whats(acts); len(w) != 2 || w["calyx"] != "removed" || w[DefaultConfName] != "removed" {
		t.Errorf("actions %v", acts)
	}
	for _, kept := range []string{other, filepath.Join(f.bin, "bridge")} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("%s: %v", kept, err)
		}
	}
	if acts, err := Uninstall(f.conf, f.bin, ""); err != nil || len(acts) != 0 {
		t.Errorf("second run: %v %v", acts, err)
	}
}

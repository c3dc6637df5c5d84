// Package deploy holds the systemd unit, the Kubernetes manifest and the
// example resources; its test checks that they agree with the binaries.
package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/calyx-net/calyx/agent"
	"github.com/calyx-net/calyx/cni/install"
	"github.com/calyx-net/calyx/cni/plugin"
	"github.com/calyx-net/calyx/internal/ociimage"
)

func noEnv(string) string { return "" }

// The agent config files we ship must load with the agent's own parser.
func TestShippedAgentConfigsLoad(t *testing.T) {
	if _, err := agent.LoadConfig([]string{"--config", "systemd/agent.yaml"}, noEnv); err != nil {
		t.Errorf("systemd/agent.yaml: %v", err)
	}
	cm := configMap(t)
	f := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(f, []byte(cm["agent.yaml"]), 0o600)
	if _, err := agent.LoadConfig([]string{"--config", f}, noEnv); err != nil {
		t.Errorf("kubernetes ConfigMap agent.yaml: %v", err)
	}
}

// The conflists we ship (the example and what the DaemonSet's install-cni
// writes) must parse with the plugin's own config parser.
func TestShippedConflists(t *testing.T) {
	b, err := os.ReadFile("cni/10-calyx.conflist")
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string]string{"cni/10-calyx.conflist": string(b)}
	o := installCNIOptions(t)
	gen, err := o.Conflist()
	if err != nil {
		t.Fatalf("the DaemonSet's install-cni: %v", err)
	}
	lists["install-cni of the DaemonSet"] = string(gen)
	for name, text := range lists {
		var l struct {
			CNIVersion string            `json:"cniVersion"`
			Name       string            `json:"name"`
			Plugins    []json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(text), &l); err != nil || len(l.Plugins) != 1 {
			t.Fatalf("%s: not a conflist with one plugin: %v", name, err)
		}
		conf := strings.Replace(string(l.Plugins[0]), "{", `{"cniVersion":"`+l.CNIVersion+`","name":"`+l.Name+`",`, 1)
		nc, err := plugin.ParseConfig([]byte(conf))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if nc.Type != "calyx" {
			t.Errorf("%s: type %q", name, nc.Type)
		}
	}
}

// The DaemonSet runs the agent with flags it knows, in the host network,
// privileged, with the socket directory shared with the host.
func TestDaemonSet(t *testing.T) {
	docs := manifests(t)
	ds := find(t, docs, "DaemonSet")
	spec := dig(t, ds, "spec", "template", "spec").(map[string]any)
	if spec["hostNetwork"] != true {
		t.Error("the agent must run in the host network namespace")
	}
	containers := spec["containers"].([]any)
	c := containers[0].(map[string]any)
	cmd := c["command"].([]any)
	var args []string
	for _, a := range cmd[1:] {
		args = append(args, a.(string))
	}
	// The same flags against an empty config file must parse.
	f := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(f, []byte("etcd-endpoints: [http://x:2379]\n"), 0o600)
	for i, a := range args {
		if a == "/config/agent.yaml" {
			args[i] = f
		}
	}
	if _, err := agent.LoadConfig(args, noEnv); err != nil {
		t.Errorf("DaemonSet command %v: %v", cmd, err)
	}
	for _, e := range c["env"].([]any) {
		name := e.(map[string]any)["name"].(string)
		if !strings.HasPrefix(name, "CALYX_") {
			t.Errorf("env %s is not a CALYX_ setting", name)
		}
		if _, err := agent.LoadConfig([]string{"--embedded-etcd", "/x"}, func(k string) string {
			if k == name {
				return "198.18.0.1"
			}
			return ""
		}); err != nil {
			t.Errorf("env %s: %v", name, err)
		}
	}
	if dig(t, c, "securityContext", "privileged") != true {
		t.Error("the agent needs a privileged container (netlink, iptables, netns)")
	}
	mounts := map[string]bool{}
	for _, m := range c["volumeMounts"].([]any) {
		mounts[m.(map[string]any)["mountPath"].(string)] = true
	}
	for _, want := range []string{"/var/run/calyx", "/var/run/netns", "/run/xtables.lock"} {
		if !mounts[want] {
			t.Errorf("agent container does not mount %s", want)
		}
	}
}

// systemd-analyze verify checks the unit (with ExecStart pointed at a real
// binary, since the shipped path does not exist on a build machine).
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("systemd/calyx-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	checkNotifyUnit(t, string(unit))
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/calyx-agent", "/bin/true")
	path := filepath.Join(dir, "calyx-agent.service")
	os.WriteFile(path, []byte(text), 0o644)
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	// verify exits 0 on unknown keys and bad values, it only warns: any
	// line about our unit is a finding.
	if err != nil || strings.Contains(string(out), "calyx-agent.service:") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// Every container runs the image make image builds: named by the version
// make stamps into the binaries (the VERSION file), run as root.
func TestManifestImage(t *testing.T) {
	v, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	want := ociimage.Repository + ":" + strings.TrimSpace(string(v))
	seen := 0
	for _, file := range []string{"kubernetes/calyx.yaml", "kubernetes/calyx-kube-controllers.yaml"} {
		for _, doc := range manifestFile(t, file) {
			spec, ok := digOK(doc, "spec", "template", "spec").(map[string]any)
			if !ok {
				continue
			}
			var all []any
			for _, k := range []string{"initContainers", "containers"} {
				if cs, ok := spec[k].([]any); ok {
					all = append(all, cs...)
				}
			}
			for _, c := range all {
				c := c.(map[string]any)
				seen++
				if c["image"] != want {
					t.Errorf("%s: container %s runs %v, want %s", file, c["name"], c["image"], want)
				}
				// Whatever it runs is in the image.
				cmd, _ := c["command"].([]any)
				if len(cmd) == 0 || !slices.Contains(ociimage.Binaries, strings.TrimPrefix(cmd[0].(string), ociimage.BinDir+"/")) {
					t.Errorf("%s: container %s runs %v, which is not one of the image's %s/%v", file, c["name"], cmd, ociimage.BinDir, ociimage.Binaries)
				}
				// The image's default user is 65532: the agent and
				// install-cni ask for root, the controllers need none.
				root := c["name"] == "calyx-agent" || c["name"] == "install-cni"
				if uid := digOK(c, "securityContext", "runAsUser"); root && uid != float64(0) {
					t.Errorf("%s: container %s does not ask for runAsUser: 0", file, c["name"])
				}
			}
		}
	}
	if seen < 3 {
		t.Errorf("only %d containers found in the manifests", seen)
	}
}

// digOK is dig without failing: nil when the path is not there.
func digOK(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// installCNIOptions parses the DaemonSet's init container as install-cni
// does.
func installCNIOptions(t *testing.T) install.Options {
	t.Helper()
	spec := dig(t, find(t, manifests(t), "DaemonSet"), "spec", "template", "spec").(map[string]any)
	for _, c := range spec["initContainers"].([]any) {
		var argv []string
		for _, a := range c.(map[string]any)["command"].([]any) {
			argv = append(argv, a.(string))
		}
		if len(argv) < 2 || argv[0] != "/usr/local/bin/calyx-agent" || argv[1] != "install-cni" {
			continue
		}
		var o install.Options
		fs := install.FlagSet(&o)
		if err := fs.Parse(argv[2:]); err != nil || fs.NArg() > 0 {
			t.Fatalf("init container %v: %v %v", argv, err, fs.Args())
		}
		return o
	}
	t.Fatal("no init container runs calyx-agent install-cni")
	return install.Options{}
}

// checkNotifyUnit: the agent speaks sd_notify (READY after the first
// programming, a watchdog fed by its loops), and only the main process
// may notify.
func checkNotifyUnit(t *testing.T, unit string) {
	t.Helper()
	keys := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			keys[k] = v
		}
	}
	if keys["Type"] != "notify" || keys["NotifyAccess"] != "main" {
		t.Errorf("unit: Type=%q NotifyAccess=%q, want notify and main", keys["Type"], keys["NotifyAccess"])
	}
	if d, err := time.ParseDuration(keys["WatchdogSec"] + "s"); err != nil || d < 10*time.Second {
		t.Errorf("unit: WatchdogSec=%q, want at least 10 seconds", keys["WatchdogSec"])
	}
}

func manifests(t *testing.T) []map[string]any {
	t.Helper()
	return manifestFile(t, "kubernetes/calyx.yaml")
}

func manifestFile(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, d := range strings.Split(string(b), "\n---\n") {
		var m map[string]any
		if err := yaml.UnmarshalStrict([]byte(d), &m); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
	return docs
}

func find(t *testing.T, docs []map[string]any, kind string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind {
			return d
		}
	}
	t.Fatalf("no %s in the manifest", kind)
	return nil
}

func configMap(t *testing.T) map[string]string {
	t.Helper()
	data := find(t, manifests(t), "ConfigMap")["data"].(map[string]any)
	out := map[string]string{}
	for k, v := range data {
		out[k] = v.(string)
	}
	return out
}

func dig(t *testing.T, m map[string]any, path ...string) any {
	t.Helper()
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("manifest: %v is not a map at %s", path, p)
		}
		cur = mm[p]
	}
	return cur
}

// Package install puts the calyx CNI plugin and its conflist where a
// container runtime finds them (calyx-agent install-cni). Every file is
// written to a temporary name in its final directory, synced and renamed,
// so a runtime reading the directory at any moment sees the old file or the
// new one, never a half-written one; an unchanged file is not rewritten.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/cni/client"
	"github.com/calyx-net/calyx/cni/plugin"
)

// Defaults of the install-cni flags.
const (
	DefaultBinDir   = "/opt/cni/bin"
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultConfName = "10-calyx.conflist"
	DefaultNetwork  = "calyx"
	DefaultMTU      = 1500
	PluginName      = "calyx"
	cniVersion      = "1.1.0"
	// tmpPrefix starts every temporary file; its names never end in .conf,
	// .conflist or .json, so libcni never loads one.
	tmpPrefix = ".calyx-install-"
)

// Options say what to install where.
type Options struct {
	BinDir  string // where the plugin binary goes
	ConfDir string // where the conflist goes
	// Plugin is the calyx binary to copy (default: "calyx" beside the
	// running executable).
	Plugin string
	// ConfName is the conflist's file name (default 10-calyx.conflist).
	ConfName string
	// Network is the network name in the conflist (default "calyx").
	Network     string
	MTU         int    // workload MTU written into the conflist; 0 leaves it to the agent
	AgentSocket string // the agent socket written into the conflist
}

// Action is one thing Install did or found already done.
type Action struct {
	Path string
	What string // "installed", "unchanged", "removed stale", "removed leftover"
}

func (a Action) String() string { return a.What + " " + a.Path }

// FlagSet is install-cni's flags, filling o.
func FlagSet(o *Options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("install-cni", pflag.ContinueOnError)
	fs.StringVar(&o.BinDir, "bin-dir", DefaultBinDir, "directory the container runtime runs CNI plugins from")
	fs.StringVar(&o.ConfDir, "conf-dir", DefaultConfDir, "directory the container runtime reads CNI network configurations from")
	fs.StringVar(&o.Plugin, "plugin", "", "the calyx plugin binary to install (default: calyx beside this executable)")
	fs.StringVar(&o.ConfName, "conf-name", DefaultConfName, "file name of the conflist")
	fs.StringVar(&o.Network, "network", DefaultNetwork, "network name in the conflist")
	fs.IntVar(&o.MTU, "mtu", DefaultMTU, "MTU of workload interfaces (0: the agent's default)")
	fs.StringVar(&o.AgentSocket, "agent-socket", client.DefaultSocket, "the agent socket the plugin calls")
	return fs
}

func (o *Options) defaults() error {
	o.confDefaults()
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if o.ConfDir == "" {
		o.ConfDir = DefaultConfDir
	}
	if o.Plugin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--plugin: cannot locate the running executable: %w", err)
		}
		o.Plugin = filepath.Join(filepath.Dir(exe), PluginName)
	}
	return nil
}

func (o *Options) confDefaults() {
	if o.ConfName == "" {
		o.ConfName = DefaultConfName
	}
	if o.Network == "" {
		o.Network = DefaultNetwork
	}
	if o.AgentSocket == "" {
		o.AgentSocket = client.DefaultSocket
	}
}

func (o *Options) validate() error {
	var errs []error
	for flag, d := range map[string]string{"--bin-dir": o.BinDir, "--conf-dir": o.ConfDir} {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", flag, d))
		} else if st, err := os.Stat(d); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", flag, d, err))
		} else if !st.IsDir() {
			errs = append(errs, fmt.Errorf("%s %s is not a directory", flag, d))
		}
	}
	if filepath.Base(o.ConfName) != o.ConfName || !isConfName(o.ConfName) {
		errs = append(errs, fmt.Errorf("--conf-name %q must be a file name ending in .conflist", o.ConfName))
	}
	if st, err := os.Stat(o.Plugin); err != nil {
		errs = append(errs, fmt.Errorf("--plugin: %w", err))
	} else if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		errs = append(errs, fmt.Errorf("--plugin %s is not an executable file", o.Plugin))
	}
	return errors.Join(errs...)
}

// Conflist renders the network configuration list Install writes. The
// plugin's own parser checks it, so a bad --mtu or --agent-socket fails
// here, before anything is written.
func (o Options) Conflist() ([]byte, error) {
	o.confDefaults()
	type pluginConf struct {
		Type         string          `json:"type"`
		AgentSocket  string          `json:"agentSocket"`
		MTU          int             `json:"mtu,omitempty"`
		Capabilities map[string]bool `json:"capabilities"`
	}
	p := pluginConf{Type: PluginName, AgentSocket: o.AgentSocket, MTU: o.MTU, Capabilities: map[string]bool{"labels": true}}
	list := struct {
		CNIVersion string       `json:"cniVersion"`
		Name       string       `json:"name"`
		Plugins    []pluginConf `json:"plugins"`
	}{cniVersion, o.Network, []pluginConf{p}}
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	// What libcni hands the plugin: the plugin entry plus name and version.
	conf, _ := json.Marshal(struct {
		pluginConf
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
	}{p, cniVersion, o.Network})
	if _, err := plugin.ParseConfig(conf); err != nil {
		msg := strings.TrimPrefix(err.Error(), "calyx: invalid network config: ")
		msg = strings.NewReplacer("agentSocket ", "--agent-socket ", "mtu ", "--mtu ", "name ", "--network ").Replace(msg)
		return nil, errors.New(msg)
	}
	return append(out, '\n'), nil
}

// Install copies the plugin into BinDir and then writes the conflist into
// ConfDir (in that order: a runtime that sees the conflist finds the
// binary), and removes the conflists of earlier Calyx installs that would
// otherwise shadow or duplicate this one. Running it again with the same
// options changes nothing.
func Install(o Options) ([]Action, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	conf, err := o.Conflist()
	if err != nil {
		return nil, err
	}
	var acts []Action
	for _, dir := range []string{o.BinDir, o.ConfDir} {
		left, err := removeLeftovers(dir)
		acts = append(acts, left...)
		if err != nil {
			return acts, err
		}
	}
	pluginDst := filepath.Join(o.BinDir, PluginName)
	act, err := installPlugin(o.Plugin, pluginDst)
	acts = append(acts, act)
	if err != nil {
		return acts, err
	}
	confDst := filepath.Join(o.ConfDir, o.ConfName)
	act, err = installBytes(conf, confDst, 0o644)
	acts = append(acts, act)
	if err != nil {
		return acts, err
	}
	stale, err := removeStale(o.ConfDir, o.ConfName, o.Network)
	return append(acts, stale...), err
}

// installPlugin copies src to dst unless dst already has the same bytes.
func installPlugin(src, dst string) (Action, error) {
	if same, err := sameFile(src, dst); err != nil || same {
		return Action{dst, "unchanged"}, err
	}
	f, err := os.Open(src)
	if err != nil {
		return Action{}, fmt.Errorf("reading the plugin: %w", err)
	}
	defer f.Close()
	if err := writeAtomic(dst, 0o755, func(w io.Writer) error { _, err := io.Copy(w, f); return err }); err != nil {
		return Action{}, err
	}
	return Action{dst, "installed"}, nil
}

// installBytes writes b to path unless it holds exactly b already.
func installBytes(b []byte, path string, mode os.FileMode) (Action, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == mode {
			return Action{path, "unchanged"}, nil
		}
	}
	if err := writeAtomic(path, mode, func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return Action{}, err
	}
	return Action{path, "installed"}, nil
}

// writeAtomic writes a temporary file beside path, syncs it, renames it
// over path and syncs the directory, so that after a crash path is either
// the old or the new file. The temporary file is removed on any failure.
func writeAtomic(path string, mode os.FileMode, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tmpPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if err = fill(tmp); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sameFile reports whether dst exists with the contents and mode of src.
func sameFile(src, dst string) (bool, error) {
	a, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("reading the plugin: %w", err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Size() != int64(len(a)) || st.Mode().Perm() != 0o755 {
		return false, nil
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		return false, nil
	}
	return bytes.Equal(a, b), nil
}

// removeLeftovers deletes temporary files an interrupted earlier run left.
func removeLeftovers(dir string) ([]Action, error) {
	names, err := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
	if err != nil {
		return nil, err
	}
	var acts []Action
	for _, n := range names {
		if err := os.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
			return acts, err
		}
		acts = append(acts, Action{n, "removed leftover"})
	}
	return acts, nil
}

// removeStale deletes, besides keep, every network configuration in dir
// that is Calyx's alone: the same network name and only calyx plugins.
// A configuration that chains calyx with other plugins is the operator's
// and stays.
func removeStale(dir, keep, network string) ([]Action, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var acts []Action
	for _, e := range entries {
		if e.Name() == keep || !e.Type().IsRegular() || !isConfName(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil || !isOurs(b, network) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return acts, err
		}
		acts = append(acts, Action{path, "removed stale"})
	}
	if len(acts) > 0 {
		return acts, syncDir(dir)
	}
	return acts, nil
}

// isConfName reports whether libcni would load a file of this name.
func isConfName(name string) bool {
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return true
	}
	return false
}

// isOurs reports whether a .conf or .conflist names network and runs
// nothing but the calyx plugin.
func isOurs(b []byte, network string) bool {
	var c struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(b, &c) != nil || c.Name != network {
		return false
	}
	if c.Plugins == nil {
		return c.Type == PluginName // a single-plugin .conf
	}
	for _, p := range c.Plugins {
		if p.Type != PluginName {
			return false
		}
	}
	return len(c.Plugins) > 0
}

// Uninstall removes what Install put in place: the Calyx-only conflists
// for network in confDir, then the plugin from binDir (in that order, so a
// runtime never finds a conflist without its plugin). An empty directory
// is skipped; what is not there is not an error.
func Uninstall(confDir, binDir, network string) ([]Action, error) {
	if network == "" {
		network = DefaultNetwork
	}
	var acts []Action
	if confDir != "" {
		stale, err := removeStale(confDir, "", network)
		for _, a := range stale {
			acts = append(acts, Action{a.Path, "removed"})
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return acts, err
		}
		left, err := removeLeftovers(confDir)
		acts = append(acts, left...)
		if err != nil {
			return acts, err
		}
	}
	if binDir != "" {
		left, err := removeLeftovers(binDir)
		acts = append(acts, left...)
		if err != nil {
			return acts, err
		}
		p := filepath.Join(binDir, PluginName)
		if err := os.Remove(p); err == nil {
			acts = append(acts, Action{p, "removed"})
		} else if !errors.Is(err, os.ErrNotExist) {
			return acts, err
		}
	}
	return acts, nil
}

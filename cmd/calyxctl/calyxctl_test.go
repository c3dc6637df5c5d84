package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
)

var ctlBin string

// TestMain builds the real calyxctl so the tests drive it as a user does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "calyxctl-test")
	if err != nil {
		panic(err)
	}
	ctlBin = filepath.Join(dir, "calyxctl")
	if out, err := exec.Command("go", "build", "-o", ctlBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building calyxctl: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func ctl(t *testing.T, endpoint, stdin string, args ...string) result {
	t.Helper()
	return ctlEnv(t, []string{"CALYX_ETCD_ENDPOINTS=" + endpoint}, stdin, args...)
}

// ctlEnv runs calyxctl with env added to the test's environment.
func ctlEnv(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(ctlBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func TestApplyGetRoundTripDelete(t *testing.T) {
	e := etcdtest.Start(t)
	examples, _ := filepath.Glob("../../deploy/examples/*.yaml")
	if len(examples) < 3 {
		t.Fatalf("examples missing: %v", examples)
	}
	for _, f := range examples {
		if r := ctl(t, e.Endpoint, "", "apply", "-f", f); r.code != 0 {
			t.Fatalf("apply %s: %d %s", f, r.code, r.stderr)
		}
	}

	// Table: aligned columns with a header.
	r := ctl(t, e.Endpoint, "", "get", "ippools")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("get ippools table: %d %q %s", r.code, r.stdout, r.stderr)
	}
	col := strings.Index(lines[0], "CIDR")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "10.244.0.0/16") && !strings.HasPrefix(l[col:], "fd00:10:244::/56") {
			t.Errorf("columns not aligned: %q", l)
		}
	}

	// Short and singular kinds, one object, JSON.
	r = ctl(t, e.Endpoint, "", "get", "pool", "default-ipv4", "-o", "json")
	var p datastore.IPPool
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.Spec.CIDR != "10.244.0.0/16" || !p.Spec.NATOutgoing {
		t.Fatalf("get -o json: %v %q", err, r.stdout)
	}

	// -o yaml is taken back by apply as it is, and changes nothing.
	before := ctl(t, e.Endpoint, "", "get", "policies", "-o", "yaml").stdout
	if r := ctl(t, e.Endpoint, before, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply of get -o yaml output: %s", r.stderr)
	}
	after := ctl(t, e.Endpoint, "", "get", "policies", "-o", "yaml").stdout
	if strip(before) != strip(after) {
		t.Errorf("round trip changed the policies:\n%s\nvs\n%s", before, after)
	}

	// label: set, refuse to overwrite without --overwrite, remove.
	if r := ctl(t, e.Endpoint, "", "label", "node", "host1", "zone=a", "tier=edge"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "label", "node", "host1", "zone=b"); r.code == 0 || !strings.Contains(r.stderr, "--overwrite") {
		t.Errorf("label overwrite without --overwrite: %d %s", r.code, r.stderr)
	}
	ctl(t, e.Endpoint, "", "label", "node", "host1", "zone=b", "--overwrite")
	ctl(t, e.Endpoint, "", "label", "node", "host1", "tier-")
	r = ctl(t, e.Endpoint, "", "get", "node", "host1", "-o", "json")
	var n datastore.Node
	json.Unmarshal([]byte(r.stdout), &n)
	if n.Metadata.Labels["zone"] != "b" || n.Metadata.Labels["rack"] != "r1" || n.Metadata.Labels["tier"] != "" {
		t.Errorf("labels after label commands: %v", n.Metadata.Labels)
	}

	// delete KIND NAME and delete -f.
	if r := ctl(t, e.Endpoint, "", "delete", "ippool", "default-ipv6"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "delete", "ippool", "default-ipv6"); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("second delete: %d %s", r.code, r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "delete", "-f", "../../deploy/examples/policy-db.yaml"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "get", "policies", "-o", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("policies left after delete -f: %s", r.stdout)
	}
}

func strip(yaml string) string {
	var keep []string
	for _, l := range strings.Split(yaml, "\n") {
		if !strings.Contains(l, "resourceVersion:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// A file with one bad document applies none of them, and every problem gets
// its own line naming the file, document, field and reason.
func TestApplyIsAllOrNothing(t *testing.T) {
	e := etcdtest.Start(t)
	bad := `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: good}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: bad}
spec: {cidr: 10.300.0.0/16, blockSize: 40}
---
apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 198.18.0.253, asNumber: 65000, pasword: x}
`
	r := ctl(t, e.Endpoint, bad, "apply", "-f", "-")
	if r.code == 0 {
		t.Fatal("bad file applied")
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 2 {
		t.Errorf("want one line per problem (2), got:\n%s", r.stderr)
	}
	for _, want := range []string{
		`calyxctl: stdin: document 2 (line 6): IPPool "bad": spec.cidr: "10.300.0.0/16" is not a CIDR`,
		`calyxctl: stdin: document 3 (line 11): spec.pasword: unknown field`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if r := ctl(t, e.Endpoint, "", "get", "ippools", "-o", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("something was applied: %s", r.stdout)
	}
	// Overlap with a pool already stored: refused, nothing written.
	ctl(t, e.Endpoint, "", "apply", "-f", "../../deploy/examples/cluster.yaml")
	over := "apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: over}\nspec: {cidr: 10.244.128.0/17}\n"
	r = ctl(t, e.Endpoint, over, "apply", "-f", "-")
	if r.code == 0 || !strings.Contains(r.stderr, `overlaps IPPool "default-ipv4"`) {
		t.Errorf("overlap: %d %s", r.code, r.stderr)
	}
	// create refuses what exists, and writes nothing of the file.
	r = ctl(t, e.Endpoint, "", "create", "-f", "../../deploy/examples/cluster.yaml")
	if r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("create of existing: %d %s", r.code, r.stderr)
	}
	// Usage errors exit 2.
	if r := ctl(t, e.Endpoint, "", "get", "pods"); r.code != 2 || !strings.Contains(r.stderr, `unknown kind "pods"`) {
		t.Errorf("unknown kind: %d %s", r.code, r.stderr)
	}
	_ = context.Background
}

// Global flags go before or after the verb, as with kubectl; a verb's own
// flag before the verb, or a global flag without its value, is a clear
// usage error.
func TestGlobalFlagsBeforeOrAfterTheVerb(t *testing.T) {
	e := etcdtest.Start(t)
	pool := "apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.9.0.0/24}\n"
	env := []string{"CALYX_ETCD_ENDPOINTS=http://127.0.0.1:1"} // wrong: the flag must win
	if r := ctlEnv(t, env, pool, "--etcd-endpoints", e.Endpoint, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("flag before the verb: %d %s", r.code, r.stderr)
	}
	for _, args := range [][]string{
		{"--etcd-endpoints", e.Endpoint, "get", "ippools"},
		{"--etcd-endpoints=" + e.Endpoint, "get", "ippools"},
		{"--timeout", "20s", "--etcd-endpoints", e.Endpoint, "get", "ippools", "-o", "yaml"},
		{"get", "ippools", "--etcd-endpoints", e.Endpoint},
		{"get", "--etcd-endpoints", e.Endpoint, "ippools"},
	} {
		if r := ctlEnv(t, env, "", args...); r.code != 0 || !strings.Contains(r.stdout, "10.9.0.0/24") {
			t.Errorf("calyxctl %s: %d %s %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	for args, want := range map[string]string{
		"-o json get ippools":  "unknown flag -o before the command",
		"--etcd-endpoints":     "flag --etcd-endpoints needs a value",
		"--bogus get ippools":  "unknown flag --bogus before the command",
		"--timeout 5s frobble": `unknown command "frobble"`,
	} {
		r := ctlEnv(t, env, "", strings.Fields(args)...)
		if r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("calyxctl %s: %d %q, want %q", args, r.code, r.stderr, want)
		}
	}
	if r := ctlEnv(t, env, "", "--etcd-endpoints", e.Endpoint, "--help"); r.code != 0 || !strings.Contains(r.stdout, "before or after the command") {
		t.Errorf("--help after a global flag: %d %s", r.code, r.stdout)
	}
}

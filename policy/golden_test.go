package policy

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/calyx-net/calyx/datastore"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// goldenInput is the readable fixture format: a config and the resources.
type goldenInput struct {
	Config struct {
		NodeName        string      `json:"nodeName"`
		IPv6            bool        `json:"ipv6"`
		FailsafeInbound []ProtoPort `json:"failsafeInbound"`
	} `json:"config"`
	Pools     []*datastore.IPPool           `json:"pools"`
	Endpoints []*datastore.WorkloadEndpoint `json:"endpoints"`
	Policies  []*datastore.Policy           `json:"policies"`
}

// renderGolden prints everything Render produced: the ipset batch, then one
// iptables-restore batch per family and table.
func renderGolden(t *testing.T, r *Rendered) string {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("### ipset restore\n")
	sb.WriteString(RenderSets(r.Sets()))
	for _, f := range r.Families() {
		for _, tb := range tables {
			fmt.Fprintf(&sb, "### IPv%d %s\n", f, tb)
			sb.WriteString(r.RestoreText(f, tb))
		}
	}
	return sb.String()
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./policy -run Golden -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the rendering (go test ./policy -run Golden -update rewrites it):\n%s",
			path, firstDiff(string(want), got))
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d\n want: %s\n  got: %s", i+1, w, g)
		}
	}
	return "(no difference)"
}

func TestGoldenFiles(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var gi goldenInput
			if err := yaml.UnmarshalStrict(data, &gi); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			cfg := Config{NodeName: gi.Config.NodeName, IPv6: gi.Config.IPv6, FailsafeInbound: gi.Config.FailsafeInbound}
			r, err := Render(cfg, gi.Policies, gi.Endpoints, gi.Pools)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", name+".golden"), renderGolden(t, r))
		})
	}
}

// TestGoldenDispatchTree renders enough selected endpoints (34 of 40; the
// 6 others are open) to split the dispatch chains into a tree keyed by the
// character after "cx".
func TestGoldenDispatchTree(t *testing.T) {
	var eps []*datastore.WorkloadEndpoint
	for i := 0; i < 40; i++ {
		app := "x"
		if i%7 == 0 {
			app = "y"
		}
		eps = append(eps, &datastore.WorkloadEndpoint{
			Metadata: datastore.Metadata{Name: fmt.Sprintf("ep-%02d", i), Labels: map[string]string{"app": app}},
			Spec: datastore.WorkloadEndpointSpec{
				Node:          "node-a",
				InterfaceName: fmt.Sprintf("cx%x%010d", i%5, i),
				IPNetworks:    []string{fmt.Sprintf("10.244.0.%d/32", i+1)},
			},
		})
	}
	x := &datastore.Policy{Metadata: datastore.Metadata{Name: "x-from-y"}, Spec: datastore.PolicySpec{
		Selector: `app == "x"`, Ingress: []datastore.Rule{{Action: datastore.ActionAllow, Source: datastore.EntityRule{Selector: `app == "y"`}}}}}
	r, err := Render(Config{NodeName: "node-a"}, []*datastore.Policy{x}, eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "testdata/dispatch-tree.golden", renderGolden(t, r))
}

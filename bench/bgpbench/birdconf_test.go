package bgpbench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchPrefixes(t *testing.T) {
	if got := benchPrefix(0).String(); got != "100.64.0.0/32" {
		t.Errorf("first prefix %s", got)
	}
	if got := benchPrefix(99_999).String(); got != "100.65.134.159/32" {
		t.Errorf("100000th prefix %s", got)
	}
	if !benchPrefixes.Contains(benchPrefix(99_999).Addr()) {
		t.Error("100k prefixes leave 100.64.0.0/10")
	}
}

// TestBirdAcceptsConfigs parses both configurations with BIRD itself
// (bird -p: parse and exit).
func TestBirdAcceptsConfigs(t *testing.T) {
	bird, err := exec.LookPath("bird")
	if err != nil {
		t.Skip("bird is not installed")
	}
	dir := t.TempDir()
	for name, cfg := range map[string]string{"origin": originConfig(3, "198.18.0.1", 64512), "receiver": receiveConfig()} {
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bird, "-p", "-c", path).CombinedOutput(); err != nil {
			t.Errorf("bird rejects the %s config: %v: %s\n%s", name, err, out, cfg)
		}
	}
	origin := originConfig(3, "198.18.0.1", 64512)
	for _, want := range []string{"route 100.64.0.2/32 blackhole;", "protocol static routes_calyx", "protocol static routes_bird", "neighbor 198.18.0.1 as 64512"} {
		if !strings.Contains(origin, want) {
			t.Errorf("origin config lacks %q", want)
		}
	}
	if strings.Count(origin, "disabled;") != 2 {
		t.Error("both static protocols must start disabled")
	}
}

package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeIptables puts an iptables script that prints version into a
// directory of its own at the front of PATH.
func fakeIptables(t *testing.T, name, version string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho '" + version + "'\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	return dir
}

func TestFindIptablesChecksVersion(t *testing.T) {
	fakeIptables(t, "iptables", "iptables v1.4.7")
	_, err := findIptables(BackendDefault, V4, 5)
	if err == nil || !strings.Contains(err.Error(), "1.4.7") || !strings.Contains(err.Error(), "1.6.2") {
		t.Fatalf("findIptables with iptables 1.4.7 = %v, want a version error naming both", err)
	}
	fakeIptables(t, "ip6tables-legacy", "ip6tables v1.8.9 (legacy)")
	tool, err := findIptables(BackendLegacy, V6, 5)
	if err != nil {
		t.Fatal(err)
	}
	if tool.version != [3]int{1, 8, 9} || tool.mode != "legacy" || filepath.Base(tool.path) != "ip6tables-legacy" {
		t.Fatalf("found %v", tool)
	}
	if _, err := findIptables(BackendNFT, V6, 5); err == nil || !strings.Contains(err.Error(), "ip6tables-nft") {
		t.Fatalf("a missing ip6tables-nft gave %v", err)
	}
}

func TestIptablesModeFollowsAlternatives(t *testing.T) {
	dir := t.TempDir()
	for _, multi := range []string{"xtables-nft-multi", "xtables-legacy-multi"} {
		if err := os.WriteFile(filepath.Join(dir, multi), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "iptables")
	for multi, want := range map[string]string{"xtables-nft-multi": "nf_tables", "xtables-legacy-multi": "legacy"} {
		os.Remove(link)
		if err := os.Symlink(filepath.Join(dir, multi), link); err != nil {
			t.Fatal(err)
		}
		if got := iptablesMode(link, BackendDefault); got != want {
			t.Errorf("iptables -> %s: mode %q, want %q", multi, got, want)
		}
	}
	if got := iptablesMode(link, BackendNFT); got != "nf_tables" {
		t.Errorf("forced nft: mode %q", got)
	}
}

// The hook rule go-iptables inserts is the one iptables-save shows and
// the parser recognizes.
func TestHookSpecMatchesHookLine(t *testing.T) {
	for _, h := range hooks {
		spec := hookSpec(h)
		line := strings.Join(spec[:3], " ") + ` "` + spec[3] + `" ` + strings.Join(spec[4:], " ")
		if line != hookLine(h) {
			t.Errorf("%v: spec %q, line %q", h, line, hookLine(h))
		}
	}
}

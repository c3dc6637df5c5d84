package benchkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// AddNetns and DelNetns create and remove namespaces in one batch; a
// missing one is fine for DelNetns. (Running code inside them is
// routes/netns.Do, tested there.)
func TestAddDelNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	names := []string{"benchkit-" + hex.EncodeToString(b) + "-a", "benchkit-" + hex.EncodeToString(b) + "-b"}
	t.Cleanup(func() {
		if err := DelNetns(names); err != nil {
			t.Error(err)
		}
	})
	if err := AddNetns(context.Background(), names); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := os.Stat(NetnsPath(name)); err != nil {
			t.Errorf("AddNetns: %v", err)
		}
	}
	if err := DelNetns(append([]string{names[0] + "-absent"}, names...)); err != nil {
		t.Fatalf("DelNetns: %v", err)
	}
	for _, name := range names {
		if _, err := os.Stat(NetnsPath(name)); err == nil {
			t.Errorf("%s still exists after DelNetns", name)
		}
	}
}

package kubebench

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/kubeapi"
)

// TestRunQuick runs the quick benchmark end to end (root and the
// kube-apiserver binary needed) and checks both figures are measured.
func TestRunQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if testing.Short() {
		t.Skip("benchmark")
	}
	if _, err := kubeapi.Binary(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	figs, err := Run(ctx, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 2 {
		t.Fatalf("got %d figures", len(figs))
	}
	for _, f := range figs {
		out, _ := json.Marshal(f)
		t.Log(string(out))
		if f.Calyx <= 0 {
			t.Errorf("%s: not measured: %+v", f.Name, f)
		}
	}
}

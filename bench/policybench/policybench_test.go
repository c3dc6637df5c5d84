package policybench

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netlab"
)

// TestRunQuick runs the quick benchmark end to end (root only) and checks
// every figure is measured. POLICYBENCH_FULL=1 runs the full sizes.
func TestRunQuick(t *testing.T) {
	if why := netlab.Available(); why != "" {
		t.Skip(why)
	}
	if testing.Short() {
		t.Skip("benchmark")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	figs, err := Run(ctx, os.Getenv("POLICYBENCH_FULL") == "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 4 {
		t.Fatalf("got %d figures", len(figs))
	}
	for _, f := range figs {
		out, _ := json.Marshal(f)
		t.Log(string(out))
		if f.Calyx <= 0 || f.Peer <= 0 {
			t.Errorf("%s: not measured: %+v", f.Name, f)
		}
	}
}

package datastore

import (
	"strings"
	"testing"
)

func TestLabelValue(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, tc := range []struct{ in, want string }{
		{"web-0", "web-0"},
		{"", ""},
		{strings.Repeat("x", 63), strings.Repeat("x", 63)},
	} {
		if got := LabelValue(tc.in); got != tc.want {
			t.Errorf("LabelValue(%q) = %q, want it unchanged", tc.in, got)
		}
	}
	seen := map[string]string{}
	for _, in := range []string{long, long + "b", strings.Repeat("x", 64), "-" + long + "-", "ünïcode/" + long, "..."} {
		got := LabelValue(in)
		if err := ValidateLabel(LabelPod, got); err != nil {
			t.Errorf("LabelValue(%q) = %q: %v", in, got, err)
		}
		if !strings.Contains(got, "_") {
			t.Errorf("LabelValue(%q) = %q has no '_': a Kubernetes name could equal it", in, got)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("%q and %q share the label value %q", prev, in, got)
		}
		seen[got] = in
	}
	if got := LabelValue(long); !strings.HasPrefix(got, strings.Repeat("a", 40)) {
		t.Errorf("LabelValue keeps too little of the name: %q", got)
	}
}

func TestIsReservedLabel(t *testing.T) {
	for key, want := range map[string]bool{
		"calyx.dev/pod": true, "x.calyx.dev/role": true, "pcns.team": true,
		"app": false, "calyx.dev": false, "notcalyx.dev/x": false, "example.com/calyx.dev": false,
	} {
		if got := IsReservedLabel(key); got != want {
			t.Errorf("IsReservedLabel(%q) = %v, want %v", key, got, want)
		}
	}
}

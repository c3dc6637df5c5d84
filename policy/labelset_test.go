package policy

import (
	"strconv"
	"testing"
)

// A packed label set answers as the map it was packed from: keys that
// prefix one another, empty values, absent keys, known or never seen.
func TestLabelSet(t *testing.T) {
	m := map[string]string{"app": "web", "app.kubernetes.io/name": "", "calyx.dev/namespace": "prod", "z": "last"}
	keyID("zz-known-elsewhere", true)
	l := packLabels(m)
	for k, want := range m {
		if v, ok := l.get(k); !ok || v != want {
			t.Errorf("get(%q) = %q, %v; want %q", k, v, ok, want)
		}
	}
	for _, k := range []string{"", "a", "ap", "apps", "calyx.dev/node", "zz-known-elsewhere", "web"} {
		if v, ok := l.get(k); ok {
			t.Errorf("get(%q) = %q: found, want absent", k, v)
		}
	}
	if v, ok := packLabels(nil).get("app"); ok {
		t.Errorf("empty set has app=%q", v)
	}
}

// Once every key number is taken, new keys are written out in the set
// and still found, beside numbered ones.
func TestLabelSetKeysWrittenOut(t *testing.T) {
	labelKeys.Lock()
	saved := labelKeys.ids
	labelKeys.ids = map[string]uint16{"app": 1}
	for i := len(labelKeys.ids); i < maxLabelKeys; i++ {
		labelKeys.ids["k"+strconv.Itoa(i)] = uint16(i + 1)
	}
	labelKeys.Unlock()
	t.Cleanup(func() { labelKeys.Lock(); labelKeys.ids = saved; labelKeys.Unlock() })
	m := map[string]string{"app": "web", "new-a": "1", "new-b": "", "k7": "seven"}
	l := packLabels(m)
	for k, want := range m {
		if v, ok := l.get(k); !ok || v != want {
			t.Errorf("get(%q) = %q, %v; want %q", k, v, ok, want)
		}
	}
	for _, k := range []string{"new", "new-c", "k8"} {
		if v, ok := l.get(k); ok {
			t.Errorf("get(%q) = %q: found, want absent", k, v)
		}
	}
}

package main

import (
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	ps, err := parsePorts("http:80/tcp, dns:53/UDP,sig:9000")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 || ps[0].Name != "http" || ps[0].ContainerPort != 80 || ps[0].Protocol != "TCP" ||
		ps[1].Protocol != "UDP" || ps[2].Protocol != "TCP" || ps[2].ContainerPort != 9000 {
		t.Errorf("parsePorts = %+v", ps)
	}
	for in, want := range map[string]string{
		"80":           "not name:port/PROTO",
		"http:0":       "not 1-65535",
		"http:80/ICMP": `protocol "ICMP"`,
		"http:x/TCP":   "not 1-65535",
	} {
		if _, err := parsePorts(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parsePorts(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

package datastore

import "testing"

// FuzzDecodeFile: decoding never panics, and whatever is accepted is printed
// back (-o yaml) in a form that is accepted again unchanged.
func FuzzDecodeFile(f *testing.F) {
	for _, s := range []string{
		"apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.244.0.0/16}\n",
		"apiVersion: calyx.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {selector: all(), ingress: [{action: Allow, protocol: tcp, destination: {ports: [80, \"1:2\"]}}]}\n",
		"apiVersion: calyx.dev/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 198.18.0.253, asNumber: 65000, password: x}\n---\nkind: Node\n",
		`[{"apiVersion":"calyx.dev/v1","kind":"Node","metadata":{"name":"h1"},"spec":{"address":"198.18.0.1"}}]`,
		"apiVersion: calyx.dev/v1\nkind: BGPConfig\nmetadata: {name: default}\nspec: {asNumber: 1, gracefulRestart: {restartTimeSeconds: 3}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := DecodeFile(data)
		if err != nil {
			return
		}
		rs := make([]Resource, len(docs))
		for i, d := range docs {
			rs[i] = d.Resource
		}
		y, err := EncodeYAML(rs)
		if err != nil {
			t.Fatalf("accepted input cannot be printed: %v", err)
		}
		again, err := DecodeFile(y)
		if err != nil {
			t.Fatalf("own output rejected: %v\n%s", err, y)
		}
		rs2 := make([]Resource, len(again))
		for i, d := range again {
			rs2[i] = d.Resource
		}
		y2, _ := EncodeYAML(rs2)
		if string(y) != string(y2) {
			t.Fatalf("output changed on a round trip:\n%s\nvs\n%s", y, y2)
		}
	})
}

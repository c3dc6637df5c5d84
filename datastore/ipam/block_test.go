package ipam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustBlock(t *testing.T, cidr string) *Block {
	t.Helper()
	return newBlock(netip.MustParsePrefix(cidr), "p", "n1", time.Now())
}

func takeNext(t *testing.T, b *Block, handle string) netip.Addr {
	t.Helper()
	o, ok := b.nextFree()
	if !ok {
		t.Fatalf("block %s: no free address with %d used", b.Prefix, b.Used())
	}
	ip := addrAt(b.Prefix, o)
	b.take(Allocation{IP: ip, Handle: handle})
	return ip
}

func TestBlockHandsOutEveryAddressOnceAndSkipsRecentlyFreed(t *testing.T) {
	for _, cidr := range []string{"10.0.0.16/28", "10.0.0.0/26", "10.0.0.0/20", "fd00::40/122", "fd00::1000/116", "10.0.0.7/32"} {
		b := mustBlock(t, cidr)
		seen := map[netip.Addr]bool{}
		for k := 0; k < b.Size(); k++ {
			ip := takeNext(t, b, "h")
			if seen[ip] || !b.Prefix.Contains(ip) {
				t.Fatalf("%s: %s handed out twice or outside the block", cidr, ip)
			}
			seen[ip] = true
		}
		if _, ok := b.nextFree(); ok || b.Free() != 0 {
			t.Fatalf("%s: full block still offers an address", cidr)
		}
		if b.Size() == 1 {
			continue
		}
		// Free two; the cursor is past both, so the later one comes first
		// only when it is after the cursor: here the cursor wrapped to 0.
		first, mid := addrAt(b.Prefix, 0), addrAt(b.Prefix, b.Size()/2)
		if !b.release(mid, "h") || !b.release(first, "h") {
			t.Fatalf("%s: release failed", cidr)
		}
		if b.release(first, "h") {
			t.Fatalf("%s: releasing twice succeeded", cidr)
		}
		if got := takeNext(t, b, "h2"); got != first {
			t.Fatalf("%s: next = %s, want %s (cursor at start)", cidr, got, first)
		}
		// The cursor now points after first: mid comes next, not first
		// again even if released.
		b.release(first, "h2")
		if got := takeNext(t, b, "h3"); got != mid {
			t.Fatalf("%s: next = %s, want %s (the address just freed waits its turn)", cidr, got, mid)
		}
	}
}

func TestBlockEncodingRoundTripsAndRejectsNonsense(t *testing.T) {
	b := mustBlock(t, "10.0.0.0/26")
	ip := takeNext(t, b, "h1")
	b.Allocations[0].Borrowed = true
	b.Allocations[0].Node = "n2"
	data, err := b.encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeBlock(data)
	if err != nil {
		t.Fatal(err)
	}
	// The compact layout keeps who holds an address to the handle record.
	if a, ok := back.Lookup(ip); !ok || a.Handle != "" || a.Node != "n2" || !a.Borrowed || back.Affinity != "n1" || !back.taken(0) || back.Cursor != b.Cursor {
		t.Fatalf("decoded block lost data: %+v", back)
	}
	if !bytes.Contains(data, []byte(`"v":2`)) || bytes.Contains(data, []byte(`"h1"`)) {
		t.Fatalf("encode wrote %s, want the compact layout without handles", data)
	}
	if got := back.BorrowedBy("n2"); len(got) != 1 || got[0] != ip {
		t.Fatalf("BorrowedBy(n2) = %v", got)
	}
	for name, bad := range map[string]string{
		"duplicate":  `{"cidr":"10.0.0.0/26","allocations":[{"ip":"10.0.0.1","handle":"a"},{"ip":"10.0.0.1","handle":"b"}]}`,
		"outside":    `{"cidr":"10.0.0.0/26","allocations":[{"ip":"10.0.1.1","handle":"a"}]}`,
		"unaligned":  `{"cidr":"10.0.0.1/26"}`,
		"too large":  `{"cidr":"10.0.0.0/16"}`,
		"not a cidr": `{"cidr":"banana"}`,
		"v3":         `{"v":3,"prefix":"10.0.0.0/26","used":"0000000000000000"}`,
		"short map":  `{"v":2,"prefix":"10.0.0.0/26","used":"00"}`,
		"bad hex":    `{"v":2,"prefix":"10.0.0.0/26","used":"zz00000000000000"}`,
		"free other": `{"v":2,"prefix":"10.0.0.0/26","used":"0000000000000000","others":[{"o":3,"node":"n2"}]}`,
		"far other":  `{"v":2,"prefix":"10.0.0.0/26","used":"0100000000000000","others":[{"o":64,"node":"n2"}]}`,
		"no prefix":  `{"v":2,"cidr":"10.0.0.0/26","used":"0000000000000000"}`,
	} {
		if _, err := DecodeBlock([]byte(bad)); err == nil {
			t.Errorf("DecodeBlock accepted a %s block", name)
		}
	}
}

func TestKeysRoundTrip(t *testing.T) {
	for _, s := range []string{"10.244.0.0/26", "fd00:244::/122", "fd00::1000/116"} {
		p := netip.MustParsePrefix(s)
		got, err := parseBlockKey(BlockKey(p))
		if err != nil || got != p {
			t.Errorf("parseBlockKey(%q) = %v, %v", BlockKey(p), got, err)
		}
		node, got, err := parseAffinityKey(AffinityKey("node-1.example", p))
		if err != nil || got != p || node != "node-1.example" {
			t.Errorf("parseAffinityKey = %q %v %v", node, got, err)
		}
	}
	if k := BlockKey(netip.MustParsePrefix("10.244.0.0/26")); k != "/calyx/v1/ipam/blocks/10.244.0.0-26" {
		t.Errorf("BlockKey = %q", k)
	}
	if _, err := parseBlockKey(BlocksPrefix + "10.244.0.0"); err == nil {
		t.Error("a block key without a length parsed")
	}
}

func TestAddressArithmetic(t *testing.T) {
	if got := addLow(netip.MustParseAddr("fd00::ffff:ffff:ffff:ffff"), 1); got != netip.MustParseAddr("fd00:0:0:1::") {
		t.Errorf("IPv6 carry: %s", got)
	}
	if got := addLow(netip.MustParseAddr("10.0.0.255"), 1); got != netip.MustParseAddr("10.0.1.0") {
		t.Errorf("IPv4 add: %s", got)
	}
	pool := netip.MustParsePrefix("10.244.0.0/21")
	if n := blockCount(pool, 26); n != 32 {
		t.Errorf("blockCount = %d, want 32", n)
	}
	if got := nthBlock(pool, 26, 31); got != netip.MustParsePrefix("10.244.7.192/26") {
		t.Errorf("nthBlock(31) = %s", got)
	}
	if n := blockCount(netip.MustParsePrefix("fd00::/48"), 122); n != maxCandidateBlocks {
		t.Errorf("blockCount of a /48 = %d, want the cap", n)
	}
	if got := nthBlock(netip.MustParsePrefix("fd00::/48"), 122, 1<<10); got != netip.MustParsePrefix("fd00::1:0/122") {
		t.Errorf("IPv6 nthBlock = %s", got)
	}
	if o := ordinal(netip.MustParsePrefix("fd00::1000/116"), netip.MustParseAddr("fd00::1fff")); o != 4095 {
		t.Errorf("ordinal = %d", o)
	}
}

func TestFreeBlockSkipsTakenAndOverlappingBlocks(t *testing.T) {
	pool := &poolInfo{name: "p", cidr: netip.MustParsePrefix("10.244.0.0/24"), blockBits: 26}
	existing := map[netip.Prefix]bool{}
	p := &plan{blocks: map[netip.Prefix]*workBlock{}}
	// A /25 left from an older blockSize covers two /26 positions.
	existing[netip.MustParsePrefix("10.244.0.0/25")] = true
	got := map[netip.Prefix]bool{}
	for k := 0; k < 2; k++ {
		c, ok := freeBlock(pool, existing, p, "n1")
		if !ok {
			t.Fatalf("no free block found at step %d", k)
		}
		if c.Addr().Compare(netip.MustParseAddr("10.244.0.128")) < 0 {
			t.Fatalf("picked %s, which overlaps the /25", c)
		}
		got[c] = true
		existing[c] = true
	}
	if len(got) != 2 {
		t.Fatalf("picked %v", got)
	}
	if c, ok := freeBlock(pool, existing, p, "n1"); ok {
		t.Fatalf("picked %s from a full pool", c)
	}
}

func TestUsageTableAndJSON(t *testing.T) {
	st := &clusterState{
		blocks: map[netip.Prefix]*Block{}, pools: []*poolInfo{
			{name: "v4", cidr: netip.MustParsePrefix("10.244.0.0/24"), blockBits: 26},
			{name: "v6", cidr: netip.MustParsePrefix("fd00::/48"), blockBits: 122},
		},
	}
	b := mustBlock(t, "10.244.0.0/26")
	takeNext(t, b, "h1")
	b.take(Allocation{IP: netip.MustParseAddr("10.244.0.9"), Handle: "h2", Node: "n2", Borrowed: true})
	st.blocks[b.Prefix] = b
	u := st.usage()
	var buf bytes.Buffer
	if err := u.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"POOL", "10.244.0.0/24", "2 (0.8%)", "BLOCK", "10.244.0.0/26", "NODE", "n2", "1208925819614629174706176"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	j, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"size":1208925819614629174706176`) || !strings.Contains(string(j), `"borrowed":1`) {
		t.Errorf("JSON = %s", j)
	}
	buf.Reset()
	if err := WriteProblems(&buf, []Problem{{Kind: ProblemLeakedAllocation, Subject: "h", Detail: "x", GCRepairs: true}}); err != nil || !strings.Contains(buf.String(), "allocation-without-endpoint") {
		t.Errorf("WriteProblems = %q, %v", buf.String(), err)
	}
	t.Logf("\n%s", out)
}

// The legacy layout (every allocation in full, as binaries before the
// compact one wrote it) still decodes with everything it holds.
func TestBlockLegacyLayoutDecodes(t *testing.T) {
	b := mustBlock(t, "10.0.0.0/26")
	ip := takeNext(t, b, "h1")
	b.Allocations[0].Endpoint, b.Allocations[0].Node = "ep1", "n1"
	legacy, err := json.Marshal(b) // what the legacy encode wrote
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeBlock(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := back.Lookup(ip); !ok || a.Handle != "h1" || a.Endpoint != "ep1" || !back.taken(0) || back.Free() != 63 {
		t.Fatalf("legacy block decoded as %+v", back)
	}
}

// A binary that knows only the legacy layout must refuse a compact block
// rather than take it for an empty one (it would hand its addresses out
// again during a rolling upgrade).
func TestBlockCompactLayoutRefusedByLegacyDecoder(t *testing.T) {
	b := mustBlock(t, "10.0.0.0/26")
	takeNext(t, b, "h1")
	data, err := b.encode()
	if err != nil {
		t.Fatal(err)
	}
	var old Block // the legacy decoder: json into Block, then index
	if err := json.Unmarshal(data, &old); err == nil {
		if err := old.index(); err == nil {
			t.Fatalf("the legacy decoder read the compact block %s as %+v", data, old)
		}
	}
}

// What an ADD writes into the block must not grow with the block's fill.
func TestBlockEncodingSizeIndependentOfFill(t *testing.T) {
	for _, cidr := range []string{"10.244.13.64/26", "fd00:244::1:0/122", "10.0.0.0/20"} {
		b := newBlock(netip.MustParsePrefix(cidr), "default-ipv4-ippool", "node-0042.example.internal", time.Now())
		empty, _ := b.encode()
		for o, ok := b.nextFree(); ok; o, ok = b.nextFree() {
			b.take(Allocation{IP: addrAt(b.Prefix, o), Node: b.Affinity, Time: time.Now(), Attributes: Attributes{Namespace: "default", Pod: "web-7d4b9c8f6-x2x9k", Endpoint: "node-0042.example.internal-k8s-web-7d4b9c8f6-x2x9k-eth0"},
				Handle: "node-0042.example.internal/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/eth0"})
		}
		full, _ := b.encode()
		legacy, _ := json.Marshal(b)
		t.Logf("%s: compact empty %d B, full %d B; legacy full %d B", cidr, len(empty), len(full), len(legacy))
		if grow := len(full) - len(empty); grow > 2*b.Size()/4+8 { // the bitmap's hex, nothing per allocation
			t.Errorf("%s: the compact block grew %d B from empty to full (%d addresses)", cidr, grow, b.Size())
		}
	}
}

// An agent keeps other nodes' blocks without their allocations, except
// those of its own node; the counts stay the block's.
func TestBlockForNodeKeepsOnlyWhatTheNodeNeeds(t *testing.T) {
	b := mustBlock(t, "10.0.0.0/26") // affinity n1
	for k, node := range []string{"n1", "n1", "n2", "n1", "n3", "n2"} {
		b.take(Allocation{IP: addrAt(b.Prefix, k), Node: node, Borrowed: node != "n1", Handle: fmt.Sprint("h", k)})
	}
	if got := b.ForNode("n1"); got != b {
		t.Fatalf("ForNode of the block's own node copied it")
	}
	n2 := b.ForNode("n2")
	if len(n2.Allocations) != 2 || n2.Used() != 6 || n2.Free() != 58 || n2.Empty() || b.Used() != 6 {
		t.Fatalf("ForNode(n2): %d allocations kept, Used %d, Free %d; the block's Used %d", len(n2.Allocations), n2.Used(), n2.Free(), b.Used())
	}
	if got, want := n2.BorrowedBy("n2"), b.BorrowedBy("n2"); !slices.Equal(got, want) {
		t.Fatalf("ForNode(n2).BorrowedBy(n2) = %v, want %v", got, want)
	}
	if n4 := b.ForNode("n4"); len(n4.Allocations) != 0 || n4.Used() != 6 {
		t.Fatalf("ForNode(n4) = %+v", n4)
	}
	if _, err := n2.encode(); err == nil {
		t.Fatalf("a trimmed block was encoded: its hidden allocations would be lost")
	}
}

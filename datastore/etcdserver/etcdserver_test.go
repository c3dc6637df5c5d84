package etcdserver_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdserver"
	"github.com/calyx-net/calyx/datastore/etcdtest"
)

// With a certificate, key and CA the embedded etcd serves TLS and accepts
// only clients holding a certificate its CA signed; plaintext gets nothing.
func TestEmbeddedServesMutualTLS(t *testing.T) {
	before := listeningSockets(t)
	e := etcdtest.StartTLS(t)
	if !strings.HasPrefix(e.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("endpoint %s: want https on loopback", e.Endpoint)
	}
	good, err := datastore.NewClient(datastore.Config{Endpoints: []string{e.Endpoint}, CAFile: e.ClientCert.CA, CertFile: e.ClientCert.Cert, KeyFile: e.ClientCert.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := good.List(ctx, datastore.KindIPPool); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if _, err := datastore.NewClient(datastore.Config{Endpoints: []string{e.Endpoint}, CAFile: e.ClientCert.CA}); err == nil || !strings.Contains(err.Error(), "client certificate") {
		t.Errorf("client without a certificate: want a refusal naming the client certificate, got %v", err)
	}
	// A plaintext gRPC client gets no answer from a TLS port.
	plain, err := datastore.NewClient(datastore.Config{Endpoints: []string{strings.Replace(e.Endpoint, "https", "http", 1)}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	if _, _, err := plain.List(short, datastore.KindIPPool); err == nil {
		t.Error("a plaintext client read from the TLS etcd")
	}

	// It binds only where told: the client URL and a loopback peer port.
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(e.Endpoint, "https://"))
	var added []string
	for _, s := range listeningSockets(t) {
		if !slices.Contains(before, s) {
			added = append(added, s)
		}
	}
	if len(added) != 2 || !slices.Contains(added, net.JoinHostPort(host, port)) {
		t.Fatalf("embedded etcd listens on %v: want only %s:%s and one loopback peer port", added, host, port)
	}
	for _, a := range added {
		if ap, err := netip.ParseAddrPort(a); err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("listener %s is not on loopback", a)
		}
	}
}

// Half a TLS configuration, or a scheme that does not match it, is refused
// before etcd starts.
func TestEmbeddedTLSMisconfigurationRefused(t *testing.T) {
	_, server, _ := etcdtest.NewPKI(t, t.TempDir())
	cases := []struct {
		name string
		o    etcdserver.Options
		want string
	}{
		{"https without certificates", etcdserver.Options{ClientURL: "https://127.0.0.1:0"}, "no certificate was given"},
		{"no CA", etcdserver.Options{ClientURL: "https://127.0.0.1:0", CertFile: server.Cert, KeyFile: server.Key}, "--embedded-etcd-ca"},
		{"no key", etcdserver.Options{ClientURL: "https://127.0.0.1:0", CertFile: server.Cert, CAFile: server.CA}, "--embedded-etcd-key"},
		{"http with certificates", etcdserver.Options{ClientURL: "http://127.0.0.1:0", CertFile: server.Cert, KeyFile: server.Key, CAFile: server.CA}, "must be https://"},
		{"http peer with certificates", etcdserver.Options{ClientURL: "https://127.0.0.1:0", PeerURL: "http://127.0.0.1:0", CertFile: server.Cert, KeyFile: server.Key, CAFile: server.CA}, "must be https://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Dir = t.TempDir()
			s, err := etcdserver.Start(context.Background(), tc.o)
			if err == nil {
				s.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want %q in %v", tc.want, err)
			}
		})
	}
}

// listeningSockets lists this process's listening TCP sockets as addr:port,
// matched by inode so that other processes in the namespace do not count.
func listeningSockets(t *testing.T) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.Trim(strings.TrimPrefix(l, "socket:"), "[]")] = true
		}
	}
	var out []string
	for _, file := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			out = append(out, procAddr(t, fields[1]))
		}
		f.Close()
	}
	return out
}

// procAddr decodes /proc/net/tcp's "0100007F:0929" (little-endian words).
func procAddr(t *testing.T, s string) string {
	hexIP, hexPort, _ := strings.Cut(s, ":")
	raw, err := hex.DecodeString(hexIP)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	ip, _ := netip.AddrFromSlice(raw)
	port, _ := strconv.ParseUint(hexPort, 16, 16)
	return net.JoinHostPort(ip.Unmap().String(), fmt.Sprint(port))
}

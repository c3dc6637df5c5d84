package main

import (
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore/etcdtest"
)

// calyxctl speaks mutual TLS, with the files as flags or environment, and a
// missing client certificate is refused at once with a message that says so.
func TestCtlMutualTLS(t *testing.T) {
	e := etcdtest.StartTLS(t)
	pool := "apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.244.0.0/16}\n"
	env := []string{"CALYX_ETCD_ENDPOINTS=" + e.Endpoint, "CALYX_ETCD_CA=" + e.ClientCert.CA,
		"CALYX_ETCD_CERT=" + e.ClientCert.Cert, "CALYX_ETCD_KEY=" + e.ClientCert.Key}
	if r := ctlEnv(t, env, pool, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply over TLS (environment): %s", r.stderr)
	}
	r := ctl(t, e.Endpoint, "", "get", "ippools", "--etcd-ca", e.ClientCert.CA, "--etcd-cert", e.ClientCert.Cert, "--etcd-key", e.ClientCert.Key)
	if r.code != 0 || !strings.Contains(r.stdout, "10.244.0.0/16") {
		t.Fatalf("get over TLS (flags): %d %s %s", r.code, r.stdout, r.stderr)
	}

	start := time.Now()
	r = ctl(t, e.Endpoint, "", "get", "ippools", "--etcd-ca", e.ClientCert.CA)
	if r.code == 0 || !strings.Contains(r.stderr, "refused the client certificate") || !strings.Contains(r.stderr, "--etcd-cert") {
		t.Errorf("no client certificate: %d %s", r.code, r.stderr)
	}
	if time.Since(start) > 4*time.Second {
		t.Errorf("the refusal took %s", time.Since(start))
	}
	plain := strings.Replace(e.Endpoint, "https://", "http://", 1)
	r = ctl(t, plain, "", "get", "ippools", "--etcd-ca", e.ClientCert.CA, "--etcd-cert", e.ClientCert.Cert, "--etcd-key", e.ClientCert.Key)
	if r.code == 0 || !strings.Contains(r.stderr, "use https://") {
		t.Errorf("TLS files with http://: %d %s", r.code, r.stderr)
	}
}

// BGP passwords print as <redacted> in every format unless --show-secrets;
// applying the redacted YAML keeps the stored password, and the marker
// itself can never become a password.
func TestCtlRedactsSecrets(t *testing.T) {
	e := etcdtest.Start(t)
	peer := "apiVersion: calyx.dev/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 198.18.0.253, asNumber: 65000, password: s3cret-md5}\n"
	if r := ctl(t, e.Endpoint, peer, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	for _, format := range []string{"table", "yaml", "json"} {
		r := ctl(t, e.Endpoint, "", "get", "bgppeers", "-o", format)
		if r.code != 0 || strings.Contains(r.stdout, "s3cret") {
			t.Errorf("get -o %s shows the password: %s %s", format, r.stdout, r.stderr)
		}
		if format != "table" && !strings.Contains(r.stdout, "<redacted>") {
			t.Errorf("get -o %s: no <redacted> marker: %s", format, r.stdout)
		}
	}
	shown := ctl(t, e.Endpoint, "", "get", "bgppeer", "tor", "-o", "yaml", "--show-secrets")
	if !strings.Contains(shown.stdout, "password: s3cret-md5") {
		t.Fatalf("--show-secrets: %s %s", shown.stdout, shown.stderr)
	}

	// Round trip: edit something else in the redacted YAML, apply it back.
	redacted := ctl(t, e.Endpoint, "", "get", "bgppeer", "tor", "-o", "yaml").stdout
	edited := strings.Replace(redacted, "asNumber: 65000", "asNumber: 65001", 1)
	if r := ctl(t, e.Endpoint, edited, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply of redacted yaml: %s", r.stderr)
	}
	after := ctl(t, e.Endpoint, "", "get", "bgppeer", "tor", "-o", "yaml", "--show-secrets").stdout
	if !strings.Contains(after, "password: s3cret-md5") || !strings.Contains(after, "asNumber: 65001") {
		t.Errorf("round trip lost the password or the edit:\n%s", after)
	}

	// A redacted password with nothing stored to keep is refused.
	other := strings.ReplaceAll(redacted, "name: tor", "name: tor2")
	if r := ctl(t, e.Endpoint, other, "apply", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "none is stored") {
		t.Errorf("redacted password for a new peer: %d %s", r.code, r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "get", "bgppeer", "tor2"); r.code == 0 {
		t.Error("tor2 was created")
	}
}

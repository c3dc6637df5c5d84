package datastore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
)

// The redaction marker is never stored as a secret, on any write path, and
// Redact leaves the object it is given alone.
func TestRedactionMarkerNeverStored(t *testing.T) {
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	r, _ := datastore.NewResource(datastore.KindBGPPeer)
	p := r.(*datastore.BGPPeer)
	p.Metadata.Name = "tor"
	p.Spec.PeerIP, p.Spec.ASNumber, p.Spec.Password = "198.18.0.253", 65000, "s3cret"

	red, err := datastore.Redact(p)
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.Password != "s3cret" || red.(*datastore.BGPPeer).Spec.Password != datastore.Redacted {
		t.Fatalf("Redact: original %q, copy %q", p.Spec.Password, red.(*datastore.BGPPeer).Spec.Password)
	}
	for name, write := range map[string]func() error{
		"Create": func() error { _, err := c.Create(ctx, red); return err },
		"Put":    func() error { _, err := c.Put(ctx, red); return err },
		"Apply":  func() error { _, err := c.Apply(ctx, red); return err },
	} {
		if err := write(); err == nil || !strings.Contains(err.Error(), "spec.password") {
			t.Errorf("%s stored the marker: %v", name, err)
		}
	}
	if _, err := c.Get(ctx, datastore.KindBGPPeer, "tor"); err == nil {
		t.Error("the peer was stored")
	}
}

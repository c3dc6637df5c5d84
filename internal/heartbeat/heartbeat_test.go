package heartbeat

import (
	"context"
	"testing"
)

func TestBeat(t *testing.T) {
	Beat(context.Background()) // no owner: nothing happens
	n := 0
	ctx, cancel := context.WithCancel(With(context.Background(), func() { n++ }))
	defer cancel()
	Beat(ctx)
	Beat(ctx)
	if n != 2 {
		t.Errorf("beats seen: %d, want 2", n)
	}
}

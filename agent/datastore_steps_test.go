package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
)

func TestDatastoreStepRetriesTransientFailures(t *testing.T) {
	for name, transient := range map[string]error{
		"member gone":    status.Error(codes.Unavailable, "connection refused"),
		"leader changed": fmt.Errorf("IPAM transaction in etcd: %w", rpctypes.ErrLeaderChanged),
		"timed out":      rpctypes.ErrTimeout,
		"no leader":      rpctypes.ErrNoLeader,
	} {
		t.Run(name, func(t *testing.T) {
			calls := 0
			err := withDatastoreTimeout(context.Background(), func(ctx context.Context) error {
				calls++
				if md, _ := metadata.FromOutgoingContext(ctx); len(md.Get(rpctypes.MetadataRequireLeaderKey)) == 0 {
					t.Error("the attempt does not require a leader")
				}
				if calls < 3 {
					return transient
				}
				return nil
			})
			if err != nil || calls != 3 {
				t.Errorf("%d calls, err %v: want success on the third", calls, err)
			}
		})
	}
}

func TestDatastoreStepGivesUpFast(t *testing.T) {
	// Without quorum: "no leader" for longer than an election fails the
	// step soon after noLeaderGrace, not at datastoreTimeout.
	start := time.Now()
	err := withDatastoreTimeout(context.Background(), func(context.Context) error { return rpctypes.ErrNoLeader })
	took := time.Since(start)
	if !errors.Is(err, rpctypes.ErrNoLeader) || took < noLeaderGrace || took > noLeaderGrace+time.Second {
		t.Errorf("no leader: %v after %s", err, took)
	}
	if ce, ok := apipb.CNIErrorFrom(datastoreError("allocating", err)); !ok || ce.Code != apipb.CodeTryAgainLater {
		t.Errorf("no leader maps to %+v, want code %d", ce, apipb.CodeTryAgainLater)
	}
	// A real refusal is not retried.
	calls := 0
	refused := errors.New("etcdserver: permission denied")
	if err := withDatastoreTimeout(context.Background(), func(context.Context) error { calls++; return refused }); !errors.Is(err, refused) || calls != 1 {
		t.Errorf("a permanent error: %d calls, %v", calls, err)
	}
	if ce, _ := apipb.CNIErrorFrom(datastoreError("allocating", refused)); ce.Code == apipb.CodeTryAgainLater {
		t.Errorf("a permanent error maps to try again later")
	}
	// A request whose own context ends stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	_ = withDatastoreTimeout(ctx, func(context.Context) error { calls++; return rpctypes.ErrTimeout })
	if calls != 1 {
		t.Errorf("a cancelled request was tried %d times", calls)
	}
}

// An attempt that hangs (a proposal forwarded to a dead leader) is cut at
// datastoreAttempt and tried again.
func TestDatastoreStepCutsHungAttempts(t *testing.T) {
	calls := 0
	start := time.Now()
	err := withDatastoreTimeout(context.Background(), func(ctx context.Context) error {
		calls++
		if calls == 1 {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls != 2 || time.Since(start) > datastoreAttempt+time.Second {
		t.Errorf("%d calls in %s, err %v", calls, time.Since(start), err)
	}
}

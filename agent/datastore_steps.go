package agent

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
)

// The etcd steps of a CNI request (allocate, record the endpoint, release,
// delete the record) are each idempotent: Allocate returns what a handle
// already holds, Put and Delete of one key repeat harmlessly. So a step
// that meets a transient failure of an etcd cluster (the member it talked
// to died, a leader election is under way) is tried again within the
// request's budget, and one member lost costs a CNI request at most a
// retry. A cluster without quorum is told apart quickly: every attempt
// requires a leader, so members that have none say so at once instead of
// holding the request until it times out; after noLeaderGrace of that
// (longer than an election) the request fails with "try again later".

const (
	// datastoreTimeout bounds all the attempts of one etcd step of a CNI
	// request, well inside the plugin's own deadline, so that an etcd
	// outage is answered with "try again later" rather than left to time
	// out.
	datastoreTimeout = 5 * time.Second
	// datastoreAttempt bounds one attempt: a proposal forwarded to a
	// leader that just died is never answered, and waiting for it would
	// spend the whole budget.
	datastoreAttempt = 2500 * time.Millisecond
	// noLeaderGrace is how long "no leader" is retried before the step
	// fails: an election after a leader's loss takes one to two election
	// timeouts (etcd's default 1 s; the lab's 0.5 s).
	noLeaderGrace = time.Second
)

// withDatastoreTimeout runs fn, an idempotent etcd step, with the request's
// context bounded by datastoreTimeout, retrying transient failures.
func withDatastoreTimeout(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, datastoreTimeout)
	defer cancel()
	ctx = clientv3.WithRequireLeader(ctx)
	var noLeaderSince time.Time
	backoff := 20 * time.Millisecond
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, datastoreAttempt)
		err := fn(attempt)
		cancelAttempt()
		if err == nil || ctx.Err() != nil || !transientEtcd(err) {
			return err
		}
		if errors.Is(err, rpctypes.ErrNoLeader) {
			if noLeaderSince.IsZero() {
				noLeaderSince = time.Now()
			} else if time.Since(noLeaderSince) >= noLeaderGrace {
				return err
			}
		} else {
			noLeaderSince = time.Time{}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// transientEtcd: a failure that another attempt (another member, a new
// leader) may not meet: the connection failed, no leader, a leader change,
// an attempt's time ran out.
func transientEtcd(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// datastoreError maps an etcd failure: unreachable, without quorum or too
// slow is transient (CNI code 11, the runtime retries); anything else is
// 102.
func datastoreError(what string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader):
		return apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "%s: the datastore (etcd) has no leader (quorum lost?); try again later: %v", what, err)
	case errors.Is(err, context.Canceled) || transientEtcd(err):
		return apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "%s: the datastore (etcd) did not answer in time; try again later: %v", what, err)
	}
	return apipb.Errorf(codes.Unavailable, apipb.CodeDatastoreFailed, "%s: %v", what, err)
}

// datastoreUp: etcd answers and the syncer follows it (its watch needs a
// member with a leader, so a cluster without quorum is down too).
func (a *Agent) datastoreUp() bool {
	return a.client.Reachable() && (a.syncer == nil || a.syncer.Live())
}

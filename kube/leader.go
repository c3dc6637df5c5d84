package kube

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease names the leader-election Lease: one active replica.
const (
	LeaseNamespace = "kube-system"
	LeaseName      = "calyx-kube-controllers"
)

// Leading is true while this process holds the Lease.
var Leading atomic.Bool

// LeaderTiming is the leader election's timing (client-go's meaning).
type LeaderTiming struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultLeaderTiming is kube-controller-manager's.
var DefaultLeaderTiming = LeaderTiming{LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}

// RunLeader runs fn while this process holds the Lease and returns when
// it loses it (fn's context is cancelled first) or ctx ends. A replica
// that loses the Lease must exit: another one is running the controllers.
// An empty identity is hostname-pid; a zero timing the default.
func RunLeader(ctx context.Context, kc kubernetes.Interface, identity string, timing LeaderTiming, log *slog.Logger, fn func(ctx context.Context)) error {
	if timing == (LeaderTiming{}) {
		timing = DefaultLeaderTiming
	}
	if identity == "" {
		host, _ := os.Hostname()
		identity = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: LeaseNamespace, Name: LeaseName},
		Client:     kc.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	lost := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   timing.LeaseDuration,
		RenewDeadline:   timing.RenewDeadline,
		RetryPeriod:     timing.RetryPeriod,
		Name:            LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				Leading.Store(true)
				log.Info("leading: controllers start", "identity", identity)
				fn(ctx)
			},
			OnStoppedLeading: func() {
				Leading.Store(false)
				log.Info("not leading", "identity", identity)
				close(lost)
			},
			OnNewLeader: func(id string) {
				if id != identity {
					log.Info("another replica leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	select {
	case <-lost:
		if ctx.Err() == nil {
			return fmt.Errorf("lost the %s/%s Lease", LeaseNamespace, LeaseName)
		}
	default:
	}
	return ctx.Err()
}

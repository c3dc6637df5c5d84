// Command calyx-kube-controllers translates the Kubernetes API into the
// Calyx datastore: NetworkPolicies, namespace and pod labels, node
// removal. See docs/kubernetes.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/internal/version"
	"github.com/calyx-net/calyx/kube"
)

type options struct {
	kubeconfig, etcdEndpoints, etcdCA, etcdCert, etcdKey string
	healthAddr, metricsAddr, logLevel                    string
	leaderElect                                          bool
	identity                                             string
	timing                                               kube.LeaderTiming
	resync, gcGrace                                      time.Duration
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println(version.String("calyx-kube-controllers"))
		return
	}
	o, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "calyx-kube-controllers: "+err.Error())
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "calyx-kube-controllers: --log-level %q: want debug, info, warn or error\n", o.logLevel)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	log.Info(version.String("calyx-kube-controllers"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("calyx-kube-controllers failed", "err", err)
		os.Exit(1)
	}
}

// parseFlags reads the flags; each also comes from CALYX_<FLAG> in the
// environment (the flag wins).
func parseFlags(args []string, getenv func(string) string) (*options, error) {
	o := &options{}
	fs := pflag.NewFlagSet("calyx-kube-controllers", pflag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster service account)")
	fs.StringVar(&o.etcdEndpoints, "etcd-endpoints", "", "etcd endpoints, comma separated")
	fs.StringVar(&o.etcdCA, "etcd-ca", "", "CA file for etcd's certificate")
	fs.StringVar(&o.etcdCert, "etcd-cert", "", "client certificate for etcd")
	fs.StringVar(&o.etcdKey, "etcd-key", "", "client key for etcd")
	fs.StringVar(&o.healthAddr, "health-addr", "127.0.0.1:9098", "/livez and /readyz address (empty: off)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9097", "Prometheus /metrics address (empty: off)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "run only while holding the kube-system/calyx-kube-controllers Lease")
	fs.StringVar(&o.identity, "leader-elect-identity", "", "this replica's name in the Lease (default hostname-pid)")
	fs.DurationVar(&o.timing.LeaseDuration, "leader-elect-lease-duration", kube.DefaultLeaderTiming.LeaseDuration, "how long a standby waits after the last renewal before it takes the Lease")
	fs.DurationVar(&o.timing.RenewDeadline, "leader-elect-renew-deadline", kube.DefaultLeaderTiming.RenewDeadline, "how long the leader retries renewing before it gives up leading")
	fs.DurationVar(&o.timing.RetryPeriod, "leader-elect-retry-period", kube.DefaultLeaderTiming.RetryPeriod, "how often the Lease is tried")
	fs.DurationVar(&o.resync, "resync-interval", 5*time.Minute, "how often everything is checked again")
	fs.DurationVar(&o.gcGrace, "endpoint-gc-grace", 5*time.Minute, "how long a pod must be gone from the API before its endpoint and addresses are released")
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		env := "CALYX_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.etcdEndpoints == "" {
		return nil, errors.New("--etcd-endpoints (or CALYX_ETCD_ENDPOINTS) is required")
	}
	if o.gcGrace < 0 || o.resync <= 0 {
		return nil, errors.New("--endpoint-gc-grace must not be negative and --resync-interval must be positive")
	}
	if t := o.timing; t.RetryPeriod <= 0 || t.RenewDeadline <= t.RetryPeriod || t.LeaseDuration <= t.RenewDeadline {
		return nil, fmt.Errorf("leader election: want 0 < --leader-elect-retry-period (%s) < --leader-elect-renew-deadline (%s) < --leader-elect-lease-duration (%s)", t.RetryPeriod, t.RenewDeadline, t.LeaseDuration)
	}
	return o, nil
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	rc, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "calyx-kube-controllers"
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ds, err := datastore.NewClient(datastore.Config{Endpoints: strings.Split(o.etcdEndpoints, ","), CAFile: o.etcdCA, CertFile: o.etcdCert, KeyFile: o.etcdKey})
	if err != nil {
		return err
	}
	defer ds.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctrl := kube.New(kube.Config{Kube: kc, Datastore: ds, IPAM: ipam.New(ds, log), Log: log,
		Resync: o.resync, EndpointGCGrace: o.gcGrace, Metrics: kube.NewMetrics(reg)})

	if err := serve(ctx, o.healthAddr, healthMux(ctrl, o.leaderElect), log); err != nil {
		return err
	}
	mm := http.NewServeMux()
	mm.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err := serve(ctx, o.metricsAddr, mm, log); err != nil {
		return err
	}
	if !o.leaderElect {
		kube.Leading.Store(true)
		return ctrl.Run(ctx)
	}
	// Controllers that stop on their own (an informer that cannot sync)
	// end the process, and with it the Lease, for another replica.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var runErr error
	err = kube.RunLeader(ctx, kc, o.identity, o.timing, log, func(lctx context.Context) {
		runErr = ctrl.Run(lctx)
		cancel()
	})
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return err
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// healthMux: /livez answers while the process runs; /readyz once the
// controllers are in sync, or while this replica stands by.
func healthMux(ctrl *kube.Controllers, leaderElect bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case ctrl.Synced():
			fmt.Fprintln(w, "ok")
		case leaderElect && !kube.Leading.Load():
			fmt.Fprintln(w, "ok: standing by (another replica leads)")
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not in sync with Kubernetes and etcd yet")
		}
	})
	return mux
}

func serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", addr, "err", err)
		}
	}()
	return nil
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readiness is one named condition of /readyz; the agent is ready when all
// hold.
type readiness func() (ok bool, detail string)

// healthHandler serves /livez (every loop the agent owns is running and
// beating: live returns no problem) and /readyz (every condition holds).
// A failing answer is 503 with one line per problem.
func healthHandler(live func() []string, conds map[string]readiness) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		writeProblems(w, live())
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		var failing []string
		for name, c := range conds {
			if ok, detail := c(); !ok {
				failing = append(failing, name+": "+detail)
			}
		}
		sort.Strings(failing)
		writeProblems(w, failing)
	})
	return mux
}

func writeProblems(w http.ResponseWriter, problems []string) {
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// metricsHandler serves Prometheus /metrics from reg.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// pprofHandler serves Go's profiles (net/http/pprof) under /debug/pprof/.
// Off unless --pprof-addr is set: a profile shows memory contents.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// listenHTTP listens now (so a port clash fails the start) and returns the
// loop that serves until its context ends; nil when addr is empty (off).
func listenHTTP(addr string, h http.Handler, what string) (func(context.Context) error, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s endpoint on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}
	return func(ctx context.Context) error {
		return serveUntil(ctx, func() error { return srv.Serve(l) }, shutdown, http.ErrServerClosed)
	}, nil
}

// serveUntil runs serve until ctx ends, then stop, and waits for serve to
// return. An error of serve before that is the loop's death; after stop,
// closed (the server's "closed" error) is not an error.
func serveUntil(ctx context.Context, serve func() error, stop func(), closed error) error {
	served := make(chan error, 1)
	go func() { served <- serve() }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	stop()
	if err := <-served; err != nil && (closed == nil || !errors.Is(err, closed)) {
		return err
	}
	return nil
}

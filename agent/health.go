package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readiness is one named condition of /readyz; the agent is ready when all
// hold.
type readiness func() (ok bool, detail string)

// serveHealth serves /livez (the process answers) and /readyz (every
// condition holds; the body names those that do not).
func serveHealth(ctx context.Context, addr string, conds map[string]readiness, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		var failing []string
		for name, c := range conds {
			if ok, detail := c(); !ok {
				failing = append(failing, name+": "+detail)
			}
		}
		if len(failing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(failing, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return serveHTTP(ctx, addr, mux, "health", log)
}

// serveMetrics serves Prometheus /metrics from reg.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return serveHTTP(ctx, addr, mux, "metrics", log)
}

// serveHTTP listens now (so a port clash fails the start) and serves until
// ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler, what string, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s endpoint on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "what", what, "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	return nil
}

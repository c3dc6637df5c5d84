package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTPGet fetches http://addr/path from inside target's namespace (a
// host, "etcd", a workload): etcd's and the agents' /metrics listen on
// their namespace's loopback. The body is limited to 64 MiB.
func (l *Lab) HTTPGet(ctx context.Context, target, addr, path string) ([]byte, error) {
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, a string) (net.Conn, error) { return l.Dial(ctx, target, a) },
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s in %s: %w", path, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s in %s: %w", path, target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s in %s: %s", path, target, resp.Status)
	}
	return body, nil
}

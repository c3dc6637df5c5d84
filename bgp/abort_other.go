//go:build !linux

package bgp

import "errors"

// abortSessions needs /proc and Linux socket calls; elsewhere a graceful
// Close falls back to StopBgp (peers get a Cease).
func abortSessions([]Peer, int) (int, error) {
	return 0, errors.New("shutting BGP connections down is only implemented on Linux")
}

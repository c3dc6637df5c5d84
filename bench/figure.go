// Package bench holds the shared shape of a benchmark figure. Each area
// (ipam, cni, bgp, policy) measures itself beside a peer or a limit in the
// same run and returns Figures; cmd/calyx-bench prints them as a table and
// writes bench/results.json.
package bench

// Figure is one measured quantity beside its peer, as written to
// bench/results.json.
type Figure struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Calyx    float64 `json:"calyx"`
	Peer     float64 `json:"peer"`
	PeerName string  `json:"peer_name"`
	// Ratio is Calyx/Peer for "lower is better" units (latency, seconds)
	// and for rates as well; Goal says which way it must go.
	Ratio float64 `json:"ratio"`
	// Goal is human-readable, e.g. "ratio <= 0.5" or "<= 50 ms".
	Goal  string `json:"goal"`
	Met   bool   `json:"met"`
	Notes string `json:"notes,omitempty"`
}

// NewRatio fills Ratio from Calyx and Peer (0 when Peer is 0).
func NewRatio(f Figure) Figure {
	if f.Peer != 0 {
		f.Ratio = f.Calyx / f.Peer
	}
	return f
}

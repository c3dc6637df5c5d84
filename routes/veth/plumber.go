package veth

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
)

// Step names a point in Setup, for injected failures in tests.
type Step string

const (
	StepVethCreated         Step = "veth-created"
	StepContainerConfigured Step = "container-configured"
	StepHostConfigured      Step = "host-configured"
)

// Options configures a Plumber.
type Options struct {
	// HostNetNSPath is the namespace of the host ends; empty means the one
	// the agent runs in.
	HostNetNSPath string
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// FailAfter, if set, is called after each Step of Setup; a non-nil
	// error fails Setup there (and rolls it back). For tests.
	FailAfter func(Step) error
}

// Plumber wires workloads to the host.
type Plumber struct {
	opts Options
	log  *slog.Logger
}

// New returns a Plumber.
func New(opts Options) *Plumber {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Plumber{opts: opts, log: log.With("component", "veth")}
}

func (p *Plumber) step(s Step) error {
	if p.opts.FailAfter == nil {
		return nil
	}
	if err := p.opts.FailAfter(s); err != nil {
		return fmt.Errorf("after %s: %w", s, err)
	}
	return nil
}

// isNotFound reports netlink's "no such link" in all its forms.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// Command testagent is calyx-agent with the test hooks switched on by its
// own leading flags. The agent's integration tests build and run it; it is
// never shipped (make build builds ./cmd/... only), so the real binary has
// no hidden switch.
//
//	testagent [--test-fault-after STEP] [--test-stall-when FILE] [--test-dataplane-deadline D] [agent settings]
//
// --test-fault-after fails every CNI ADD after STEP (ipam-allocated,
// veth-created, veth-configured, dataplane-programmed) or in place of an
// etcd write (ipam-commit, endpoint-write); --test-stall-when blocks the
// dataplane loop once FILE exists, so that its heartbeat stops;
// --test-dataplane-deadline shortens that loop's stall deadline.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/calyx-net/calyx/agent"
)

func main() {
	args := os.Args[1:]
	var opts []agent.Option
	for len(args) >= 2 {
		switch args[0] {
		case "--test-fault-after":
			step := args[1]
			opts = append(opts, agent.WithFaults(func(s string) error {
				if s == step {
					return errors.New("testagent --test-fault-after")
				}
				return nil
			}))
		case "--test-stall-when":
			file := args[1]
			opts = append(opts, agent.WithDataplaneBeatHook(func(ctx context.Context) {
				if _, err := os.Stat(file); err == nil {
					<-ctx.Done()
				}
			}))
		case "--test-dataplane-deadline":
			d, err := time.ParseDuration(args[1])
			if err != nil {
				fmt.Fprintln(os.Stderr, "testagent: --test-dataplane-deadline:", err)
				os.Exit(2)
			}
			opts = append(opts, agent.WithDataplaneStall(d))
		default:
			os.Exit(agent.Main(args, opts...))
		}
		args = args[2:]
	}
	os.Exit(agent.Main(args, opts...))
}

package agent

// Checks of a CNI ADD's target, made before anything is allocated or
// created: where the runtime asks the agent to wire a workload must be a
// workload's network namespace, and the interface name must be free (or,
// for a repeated ADD, a veth of this attachment). They are the trust
// helper's: kept apart from the ADD path itself.

import (
	"errors"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/routes/netns"
)

// checkTargetNetns refuses a CNI_NETNS that is not a network namespace,
// or is the agent's own or the host's (pid 1's): wiring there would move
// a host interface's name, addresses and routes under a workload's
// control.
func checkTargetNetns(path string) error {
	refuse := func(format string, args ...any) error {
		return apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidNetNS, "CNI_NETNS %s "+format, append([]any{path}, args...)...)
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// As before these checks: a missing path is a bad CNI_* variable.
		return apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidEnvironment, "CNI_NETNS %s: %v", path, err)
	}
	if err != nil {
		return refuse("cannot be opened: %v", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return refuse("cannot be read: %v", err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return refuse("is not a namespace file (want a mounted network namespace such as /run/netns/NAME or /proc/PID/ns/net)")
	}
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		return refuse("is a namespace, but not a network namespace")
	}
	var target unix.Stat_t
	if err := unix.Fstat(fd, &target); err != nil {
		return refuse("cannot be read: %v", err)
	}
	for _, own := range []struct{ path, what string }{
		{"/proc/self/ns/net", "calyx-agent's own network namespace"},
		{"/proc/1/ns/net", "the host's network namespace (that of pid 1)"},
	} {
		var st unix.Stat_t
		if unix.Stat(own.path, &st) == nil && st.Dev == target.Dev && st.Ino == target.Ino {
			return refuse("is %s: workloads are wired only into namespaces of their own", own.what)
		}
	}
	return nil
}

// checkTargetIfName refuses a CNI_IFNAME that already exists in the
// workload's namespace, unless it is a veth and the ADD rebuilds this
// attachment's broken wiring (whose teardown checks the veth is ours).
func checkTargetIfName(at attachment, rebuild bool) error {
	var existing netlink.Link
	err := netns.DoHandle(at.netns, func(h *netlink.Handle) error {
		l, lerr := h.LinkByName(at.ifName)
		if _, missing := lerr.(netlink.LinkNotFoundError); missing {
			return nil
		}
		existing = l
		return lerr
	})
	if err != nil {
		return apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidNetNS, "CNI_NETNS %s: looking up CNI_IFNAME %s: %v", at.netns, at.ifName, err)
	}
	switch {
	case existing == nil:
		return nil
	case existing.Type() != "veth":
		return apipb.Errorf(codes.AlreadyExists, apipb.CodeInvalidEnvironment,
			"CNI_IFNAME %s already exists in %s as a %s interface, which Calyx never takes over", at.ifName, at.netns, existing.Type())
	case !rebuild:
		return apipb.Errorf(codes.AlreadyExists, apipb.CodeInvalidEnvironment,
			"CNI_IFNAME %s already exists in %s (a veth this agent did not make for container %s)", at.ifName, at.netns, shortID(at.containerID))
	}
	return nil
}

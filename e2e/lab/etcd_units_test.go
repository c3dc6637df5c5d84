package lab

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestEtcdMembersOption(t *testing.T) {
	for _, n := range []int{0, 1, 3, 5} {
		o, err := Options{Dir: t.TempDir(), EtcdMembers: n}.withDefaults()
		if err != nil {
			t.Errorf("--etcd-members %d: %v", n, err)
			continue
		}
		if want := max(n, 1); o.EtcdMembers != want || len(etcdEndpoints(o)) != want {
			t.Errorf("--etcd-members %d: %d members, endpoints %v", n, o.EtcdMembers, etcdEndpoints(o))
		}
	}
	for _, n := range []int{-1, 2, 4, 6, 7} {
		if _, err := (Options{Dir: t.TempDir(), EtcdMembers: n}).withDefaults(); err == nil || !strings.Contains(err.Error(), "--etcd-members") {
			t.Errorf("--etcd-members %d accepted (%v)", n, err)
		}
	}
}

// A cluster's members each get their own namespace, address and data, and
// every client gets every member.
func TestEtcdClusterLayout(t *testing.T) {
	o, err := Options{Dir: t.TempDir(), Hosts: 2, EtcdMembers: 3}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	l := &Lab{dir: o.Dir, opts: o, names: names{Prefix(o.Dir)}}
	ms := l.EtcdMembers()
	if len(ms) != 3 || ms[0].IP != EtcdIP || ms[0].Netns != l.names.etcd() || ms[0].Endpoint != EtcdEndpoint {
		t.Fatalf("member 1 must be the single etcd's: %+v", ms)
	}
	seen := map[string]bool{}
	for i, m := range ms {
		if m.Name != EtcdMemberName(i+1) {
			t.Errorf("member %d named %s", i+1, m.Name)
		}
		for _, v := range []string{m.IP, m.Netns, m.Endpoint} {
			if seen[v] {
				t.Errorf("%s shared between members", v)
			}
			seen[v] = true
		}
		if a := netip.MustParseAddr(m.IP).As4(); a[3] <= MaxHosts || m.IP == TorIP || m.IP == FabricGateway {
			t.Errorf("member %s at %s collides with a host, the ToR or the gateway", m.Name, m.IP)
		}
		argv := strings.Join(l.etcdArgv("etcd", m), " ")
		for _, want := range []string{
			"--name " + m.Name, "--listen-peer-urls https://" + m.IP + ":2380", "--peer-client-cert-auth", "--client-cert-auth",
			"--initial-cluster etcd1=https://" + EtcdMemberIP(1) + ":2380,etcd2=https://" + EtcdMemberIP(2) + ":2380,etcd3=https://" + EtcdMemberIP(3) + ":2380",
		} {
			if !strings.Contains(argv, want) {
				t.Errorf("%s's command line lacks %q: %s", m.Name, want, argv)
			}
		}
		if got, err := l.memberByName(m.Name); err != nil || got != m {
			t.Errorf("memberByName(%s) = %+v, %v", m.Name, got, err)
		}
	}
	for _, bad := range []string{"etcd0", "etcd4", "etcd01", "etcd", "etcdx"} {
		if _, err := l.memberByName(bad); err == nil {
			t.Errorf("memberByName(%q) accepted", bad)
		}
	}
	agent := AgentArgv(o, Host{Name: "host1", IP: HostIP(1)})
	if i := slices.Index(agent, "--etcd-endpoints"); i < 0 || agent[i+1] != strings.Join(etcdEndpoints(o), ",") {
		t.Errorf("the agent does not get every member: %v", agent)
	}
	env := strings.Join(etcdClientEnv(o), " ")
	if !strings.Contains(env, "CALYX_ETCD_ENDPOINTS="+strings.Join(etcdEndpoints(o), ",")) || !strings.Contains(env, "ETCDCTL_ENDPOINTS="+strings.Join(etcdEndpoints(o), ",")) {
		t.Errorf("calyxctl and etcdctl do not get every member: %s", env)
	}
}

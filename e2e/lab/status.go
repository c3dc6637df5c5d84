package lab

import (
	"context"
	"strings"
	"sync"
)

// Status is what `calyx-lab status -o json` prints: the lab, its etcd
// members, hosts, workloads and every process, so that tests and users
// can act on them (kill -9 a member by its pid, exec into a namespace).
type Status struct {
	Dir       string             `json:"dir"`
	Prefix    string             `json:"prefix"`
	Ready     bool               `json:"ready"`
	Pool      string             `json:"pool"`
	Pool6     string             `json:"pool6,omitempty"`
	Etcd      []EtcdMemberStatus `json:"etcd"`
	Hosts     []HostStatus       `json:"hosts"`
	Workloads []Workload         `json:"workloads"`
	Processes []ProcStatus       `json:"processes"`
}

// HostStatus is a host with what its agent says.
type HostStatus struct {
	Host
	// AgentReady is the agent's readiness; Error says why it did not
	// answer.
	AgentReady bool         `json:"agentReady"`
	Error      string       `json:"error,omitempty"`
	BGPPeers   []PeerStatus `json:"bgpPeers,omitempty"`
}

// PeerStatus is one BGP session of a host's agent.
type PeerStatus struct {
	Address string `json:"address"`
	Type    string `json:"type"`
	State   string `json:"state"`
}

// ProcStatus is one process of the lab.
type ProcStatus struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Netns string `json:"netns"`
	Alive bool   `json:"alive"`
	Log   string `json:"log"`
}

// Status asks every etcd member and agent (in parallel) and returns the
// lab as it is now.
func (l *Lab) Status(ctx context.Context) Status {
	st := Status{Dir: l.dir, Prefix: l.names.prefix, Pool: l.opts.Pool, Pool6: l.opts.Pool6}
	l.mu.Lock()
	st.Ready = l.st.Ready
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		st.Etcd = l.EtcdStatus(ctx)
	}()
	hosts := l.Hosts()
	st.Hosts = make([]HostStatus, len(hosts))
	for i, h := range hosts {
		st.Hosts[i].Host = h
		if l.opts.SkipAgents {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs := &st.Hosts[i]
			ns, err := nodeStatus(ctx, h)
			if err != nil {
				hs.Error = err.Error()
				return
			}
			hs.AgentReady = ns.GetReady()
			for _, p := range ns.GetBgpPeers() {
				hs.BGPPeers = append(hs.BGPPeers, PeerStatus{
					Address: p.GetAddress(),
					Type:    enumName(p.GetType().String(), "BGP_PEER_TYPE_"),
					State:   enumName(p.GetState().String(), "BGP_SESSION_STATE_"),
				})
			}
		}()
	}
	st.Workloads = l.Workloads()
	for _, p := range l.Processes() {
		st.Processes = append(st.Processes, ProcStatus{Name: p.Name, PID: p.PID, Netns: p.Netns, Alive: p.alive(), Log: p.Log})
	}
	wg.Wait()
	return st
}

// enumName turns BGP_SESSION_STATE_ESTABLISHED into "Established".
func enumName(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	if s == "" {
		return "?"
	}
	return strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
}

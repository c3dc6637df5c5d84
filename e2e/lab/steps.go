package lab

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StepReport is what one step of Up took: wall time and the CPU time spent
// meanwhile by the lab's processes, by kind, and by the lab itself (with
// the commands and CNI plugin runs it waited for), so that the time of a
// large lab can be laid out by cause.
type StepReport struct {
	Step string        `json:"step"`
	Took time.Duration `json:"took"`
	// CPU seconds by kind: "agents", "etcd", "bird", "lab" (this process
	// and the children it reaped: ip, the calyx plugin).
	CPU map[string]float64 `json:"cpu"`
}

// Steps reports Up's steps, in order.
func (l *Lab) Steps() []StepReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]StepReport(nil), l.steps...)
}

// cpuSample is the CPU seconds used so far by kind.
type cpuSample map[string]float64

func (l *Lab) sampleCPU() cpuSample {
	s := cpuSample{"lab": ownCPU()}
	for _, p := range l.st.Processes {
		if !p.alive() {
			continue
		}
		s[procKind(p.Name)] += procCPU(p.PID)
	}
	return s
}

func (a cpuSample) since(b cpuSample) map[string]float64 {
	out := map[string]float64{}
	for k, v := range a {
		if d := v - b[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func procKind(name string) string {
	switch {
	case strings.HasPrefix(name, "agent-"):
		return "agents"
	case strings.HasPrefix(name, "etcd"):
		return "etcd"
	}
	return name
}

// clockTicks is USER_HZ, what /proc/PID/stat counts in (100 on Linux).
const clockTicks = 100

// procCPU is the user+system CPU seconds of a process (0 if it is gone).
func procCPU(pid int) float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	// fields[11], fields[12] are utime and stime (fields 14 and 15).
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / clockTicks
}

// ProcCPU is the CPU seconds a lab process has used so far.
func (p Proc) CPU() float64 { return procCPU(p.PID) }

func ownCPU() float64 {
	var total float64
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += tv(ru.Utime) + tv(ru.Stime)
		}
	}
	return total
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func fmtCPU(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.2f ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

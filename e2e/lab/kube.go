package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/deploy"
	"github.com/calyx-net/calyx/internal/kubeapi"
	"github.com/calyx-net/calyx/internal/pki"
)

// A Kubernetes lab (Options.Kubernetes) adds, before the agents start:
//
//   - the real kube-apiserver (`make kube-apiserver`) in the etcd
//     namespace on KubeAPIServerURL, on the lab's etcd (TLS, its own
//     client certificate), serving a certificate of the lab's CA, token
//     authentication, Node and RBAC authorization, privileged pods allowed;
//   - the RBAC of deploy/kubernetes (ServiceAccounts, roles, bindings) and
//     one Kubernetes Node per host;
//   - calyx-kube-controllers (Options.KubeControllers replicas, leader
//     election on the kube-system Lease) in the etcd namespace, with the
//     token of its ServiceAccount;
//
// and every agent runs with --kubeconfig (the calyx-agent ServiceAccount's
// token, the lab CA). No kubelet: AddPod makes the API object bound to a
// host and wires its sandbox through the calyx plugin with the CNI_ARGS
// containerd passes. Every kubeconfig verifies the server's certificate.

const (
	// KubeAPIPort is the API server's port on EtcdIP.
	KubeAPIPort = 6443
	// KubeAPIServerBinary is the process name of the API server.
	KubeAPIServerBinary = "kube-apiserver"
	// KubeControllersBinary is calyx-kube-controllers in the bin dir.
	KubeControllersBinary = "calyx-kube-controllers"
	// LabNamespace is the Kubernetes namespace of plain workloads
	// (AddWorkload) in a Kubernetes lab.
	LabNamespace = "lab"
)

// KubeAPIServerURL is the API server's address on the fabric.
var KubeAPIServerURL = "https://" + net.JoinHostPort(EtcdIP, strconv.Itoa(KubeAPIPort))

// Service-account identities of the tokens the lab hands out.
const (
	agentUser       = "system:serviceaccount:kube-system:calyx-agent"
	controllersUser = "system:serviceaccount:kube-system:calyx-kube-controllers"
)

var saGroups = []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}

func kubeDir(dir string) string { return filepath.Join(dir, "kube") }

// KubeconfigPath is a kubeconfig of the lab: "admin" (system:masters),
// "agent" or "controllers" (their ServiceAccounts' rights).
func KubeconfigPath(dir, who string) string { return filepath.Join(kubeDir(dir), who+".kubeconfig") }

// KubeControllersName is the process name of replica i (1-based).
func KubeControllersName(i int) string {
	if i == 1 {
		return "kube-controllers"
	}
	return "kube-controllers" + strconv.Itoa(i)
}

// KubeControllersAddrs are replica i's health and metrics addresses on
// the etcd namespace's loopback.
func KubeControllersAddrs(i int) (health, metrics string) {
	return "127.0.0.1:" + strconv.Itoa(9198+2*i), "127.0.0.1:" + strconv.Itoa(9199+2*i)
}

// KubeControllersArgv is replica i's command line.
func KubeControllersArgv(o Options, i int) []string {
	tls := clientFiles(o.Dir, "kube-controllers")
	health, metrics := KubeControllersAddrs(i)
	argv := []string{
		filepath.Join(o.BinDir, KubeControllersBinary),
		"--kubeconfig", KubeconfigPath(o.Dir, "controllers"),
		"--etcd-endpoints", joinComma(etcdEndpoints(o)),
		"--etcd-ca", tls.CA, "--etcd-cert", tls.Cert, "--etcd-key", tls.Key,
		"--health-addr", health, "--metrics-addr", metrics,
		"--leader-elect-identity", KubeControllersName(i),
		// A lab replica taken down is replaced within seconds.
		"--leader-elect-lease-duration", "6s", "--leader-elect-renew-deadline", "4s", "--leader-elect-retry-period", "1s",
		"--log-level", "debug",
	}
	return append(argv, o.KubeControllerArgs...)
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

// startKube runs the API server, bootstraps it and starts the controllers;
// the caller holds l.mu.
func (l *Lab) startKube(ctx context.Context) error {
	bin, err := kubeapi.Binary()
	if err != nil {
		return err
	}
	d := kubeDir(l.dir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("kube directory: %w", err)
	}
	pd := pkiDir(l.dir)
	ca, err := pki.LoadCA(filepath.Join(pd, "ca.crt"), filepath.Join(pd, "ca.key"))
	if err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	serving, err := ca.IssueFiles(pd, "kube-apiserver-serving", "kube-apiserver", pki.Server,
		[]string{EtcdIP, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1"}, certValidity)
	if err != nil {
		return fmt.Errorf("kube-apiserver serving certificate: %w", err)
	}
	etcdTLS, err := l.EtcdClientFiles("kube-apiserver")
	if err != nil {
		return err
	}
	if _, err := l.EtcdClientFiles("kube-controllers"); err != nil {
		return err
	}
	s, err := kubeapi.Prepare(kubeapi.Options{
		Dir: d, BindAddress: EtcdIP, Port: KubeAPIPort, EtcdServers: etcdEndpoints(l.opts),
		EtcdCA: etcdTLS.CA, EtcdCert: etcdTLS.Cert, EtcdKey: etcdTLS.Key,
		TLSCert: serving.Cert, TLSKey: serving.Key, CAFile: serving.CA,
		Users: []kubeapi.User{
			{File: "agent", Name: agentUser, Groups: saGroups},
			{File: "controllers", Name: controllersUser, Groups: saGroups},
		},
	})
	if err != nil {
		return err
	}
	logPath := filepath.Join(logDir(l.dir), KubeAPIServerBinary+".log")
	if err := l.startProc(KubeAPIServerBinary, l.names.etcd(), append([]string{bin}, s.Args...), logPath, nil); err != nil {
		return err
	}
	rc, err := l.kubeConfig("admin")
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, l.opts.StepTimeout)
	defer cancel()
	exited := make(chan struct{})
	go l.watchExit(wctx, KubeAPIServerBinary, exited)
	if err := kubeapi.WaitReadyConfig(wctx, rc, exited); err != nil {
		if p, ok := l.st.proc(KubeAPIServerBinary); ok && !p.alive() {
			return errProcDied(*p)
		}
		return waitFailed(ctx, "kube-apiserver", l.opts.StepTimeout, err, "log: "+logPath)
	}
	kc, err := l.KubeClient()
	if err != nil {
		return err
	}
	if err := applyRBAC(wctx, kc); err != nil {
		return err
	}
	for i := 1; i <= l.opts.Hosts; i++ {
		if err := createNode(wctx, kc, HostName(i), HostIP(i)); err != nil {
			return err
		}
	}
	for i := 1; i <= l.opts.KubeControllers; i++ {
		if err := l.startKubeControllers(i); err != nil {
			return err
		}
	}
	return l.waitKubeControllers(wctx)
}

// watchExit closes exited when the recorded process name dies.
func (l *Lab) watchExit(ctx context.Context, name string, exited chan<- struct{}) {
	p, ok := l.st.proc(name)
	if !ok {
		close(exited)
		return
	}
	proc := *p
	for {
		if !proc.alive() {
			close(exited)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (l *Lab) startKubeControllers(i int) error {
	name := KubeControllersName(i)
	return l.startProc(name, l.names.etcd(), KubeControllersArgv(l.opts, i), filepath.Join(logDir(l.dir), name+".log"), nil)
}

// waitKubeControllers waits until a replica leads and has translated the
// namespaces: the Profile of kube-system is in etcd.
func (l *Lab) waitKubeControllers(ctx context.Context) error {
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	for {
		_, err := ds.Get(ctx, datastore.KindProfile, "kns.kube-system")
		if err == nil {
			return nil
		}
		for i := 1; i <= l.opts.KubeControllers; i++ {
			if p, ok := l.st.proc(KubeControllersName(i)); ok && !p.alive() {
				return errProcDied(*p)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("calyx-kube-controllers did not translate the kube-system namespace (logs in %s): %w", logDir(l.dir), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StopKubeControllers stops replica i (1-based): SIGKILL when kill is set,
// as a crash (its Lease is not released), else SIGTERM.
func (l *Lab) StopKubeControllers(i int, kill bool) error {
	return l.locked(context.Background(), func() error { return l.stopNamed(KubeControllersName(i), kill) })
}

// StartKubeControllers starts replica i again.
func (l *Lab) StartKubeControllers(i int) error {
	return l.locked(context.Background(), func() error {
		if p, ok := l.st.proc(KubeControllersName(i)); ok && p.alive() {
			return fmt.Errorf("%s already runs (pid %d)", p.Name, p.PID)
		}
		return l.startKubeControllers(i)
	})
}

// stopNamed stops a recorded process; the caller holds the lock.
func (l *Lab) stopNamed(name string, kill bool) error {
	p, ok := l.st.proc(name)
	if !ok {
		return nil
	}
	if kill {
		signalGroup(p.PID, 9)
		if !waitGone(*p, 5*time.Second) {
			return fmt.Errorf("%s (pid %d) survived SIGKILL", name, p.PID)
		}
	} else if err := stopProc(*p, 10*time.Second); err != nil {
		return err
	}
	l.st.removeProc(name)
	return l.save()
}

// kubeConfig is the client configuration of one of the lab's kubeconfigs
// whose connections start in the fabric namespace, so that it works from
// the root namespace.
func (l *Lab) kubeConfig(who string) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", KubeconfigPath(l.dir, who))
	if err != nil {
		return nil, fmt.Errorf("lab kubeconfig %s: %w", who, err)
	}
	dial := dialerIn(l.names.fabric())
	rc.Dial = func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }
	rc.QPS, rc.Burst = 200, 400
	rc.UserAgent = "calyx-lab"
	return rc, nil
}

// KubeConfig is the admin client configuration of the lab's API server
// (from the root namespace).
func (l *Lab) KubeConfig() (*rest.Config, error) {
	if !l.opts.Kubernetes {
		return nil, errors.New("this lab runs no Kubernetes API server (calyx-lab up --kubernetes)")
	}
	return l.kubeConfig("admin")
}

// KubeClient is an admin client of the lab's API server; the Lab keeps it.
func (l *Lab) KubeClient() (kubernetes.Interface, error) {
	l.kubeMu.Lock()
	defer l.kubeMu.Unlock()
	if l.kube != nil {
		return l.kube, nil
	}
	rc, err := l.KubeConfig()
	if err != nil {
		return nil, err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	l.kube = kc
	return kc, nil
}

// applyRBAC creates the ServiceAccounts, roles and bindings of the
// shipped manifests (nothing else of them: no kubelet runs their pods).
func applyRBAC(ctx context.Context, kc kubernetes.Interface) error {
	files, err := fs.Glob(deploy.Kubernetes, "kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		return fmt.Errorf("the embedded manifests: %v", err)
	}
	for _, f := range files {
		data, err := deploy.Kubernetes.ReadFile(f)
		if err != nil {
			return err
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := rd.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if err := createRBAC(ctx, kc, obj); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	return nil
}

func createRBAC(ctx context.Context, kc kubernetes.Interface, obj runtime.Object) error {
	var err error
	opts := metav1.CreateOptions{}
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		_, err = kc.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = kc.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = kc.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = kc.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = kc.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	default:
		return nil
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// createNode registers a host as a Kubernetes Node, as its kubelet would.
func createNode(ctx context.Context, kc kubernetes.Interface, name, ip string) error {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
	_, err := kc.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("registering node %s in Kubernetes: %w", name, err)
	}
	return nil
}

// Package kubeapi runs the real kube-apiserver (built by `make
// kube-apiserver` into a cache) for tests and the lab: its keys, token
// file and kubeconfig, its command line, and the wait until it serves.
package kubeapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// BinaryEnv names the kube-apiserver binary; the Makefile sets it.
const BinaryEnv = "CALYX_KUBE_APISERVER"

// Binary is the kube-apiserver to run: $CALYX_KUBE_APISERVER, else the
// Makefile's cache path. It says how to get one when there is none.
func Binary() (string, error) {
	p := os.Getenv(BinaryEnv)
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "calyx", "kube-apiserver-v1.37.2")
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return "", fmt.Errorf("kube-apiserver not found at %s (run `make kube-apiserver`, or set %s)", p, BinaryEnv)
	}
	return p, nil
}

// Options say where the API server listens and which etcd it uses.
type Options struct {
	Dir         string // keys, tokens, certificates, kubeconfig
	BindAddress string // default 127.0.0.1
	Port        int    // default: a free port on BindAddress
	EtcdServers []string
	// EtcdCA, EtcdCert, EtcdKey: TLS to etcd with a client certificate.
	EtcdCA, EtcdCert, EtcdKey string
	// EtcdPrefix keeps several API servers on one etcd apart
	// (default /registry).
	EtcdPrefix string
	// TLSCert and TLSKey are the serving certificate, issued by CAFile,
	// which every kubeconfig then verifies. Without them the server makes
	// a self-signed one and the kubeconfigs skip verification (loopback
	// tests only).
	TLSCert, TLSKey, CAFile string
	// Users get a token each and a kubeconfig Dir/<Name>.kubeconfig.
	Users []User
}

// User is an identity of the token file: a name (a service account's is
// system:serviceaccount:NS:NAME) and its groups.
type User struct {
	File   string // kubeconfig base name, e.g. "agent"
	Name   string
	Groups []string
}

// Server is a prepared API server: the command line to run and the
// admin kubeconfig.
type Server struct {
	Args       []string // without the binary
	Kubeconfig string   // admin (system:masters) kubeconfig
	URL        string
	// Kubeconfigs are the Users' kubeconfigs by User.File.
	Kubeconfigs map[string]string
}

// Prepare writes the service-account key pair, a token file with one
// admin token and the admin kubeconfig into o.Dir, and returns the
// command line: token auth, Node and RBAC authorization, privileged pods
// allowed (the Calyx DaemonSet is privileged).
func Prepare(o Options) (*Server, error) {
	if o.BindAddress == "" {
		o.BindAddress = "127.0.0.1"
	}
	if o.Port == 0 {
		p, err := freePort(o.BindAddress)
		if err != nil {
			return nil, err
		}
		o.Port = p
	}
	if len(o.EtcdServers) == 0 {
		return nil, errors.New("kube-apiserver: no etcd servers")
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "certs"), 0o700); err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	saKey, saPub := filepath.Join(o.Dir, "sa.key"), filepath.Join(o.Dir, "sa.pub")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return nil, err
	}
	url := "https://" + net.JoinHostPort(o.BindAddress, strconv.Itoa(o.Port))
	users := append([]User{{File: "admin", Name: "calyx-admin", Groups: []string{"system:masters"}}}, o.Users...)
	var tokenLines strings.Builder
	srv := &Server{URL: url, Kubeconfigs: map[string]string{}}
	for _, u := range users {
		tok := make([]byte, 16)
		if _, err := rand.Read(tok); err != nil {
			return nil, err
		}
		token := hex.EncodeToString(tok)
		fmt.Fprintf(&tokenLines, "%s,%s,%s,%q\n", token, u.Name, u.Name, strings.Join(u.Groups, ","))
		path := filepath.Join(o.Dir, u.File+".kubeconfig")
		if err := os.WriteFile(path, []byte(kubeconfig(url, o.CAFile, u.Name, token)), 0o600); err != nil {
			return nil, err
		}
		srv.Kubeconfigs[u.File] = path
	}
	srv.Kubeconfig = srv.Kubeconfigs["admin"]
	tokens := filepath.Join(o.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(tokenLines.String()), 0o600); err != nil {
		return nil, err
	}
	args := []string{
		"--etcd-servers", strings.Join(o.EtcdServers, ","),
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--token-auth-file", tokens,
		"--authorization-mode", "Node,RBAC",
		"--secure-port", strconv.Itoa(o.Port),
		"--bind-address", o.BindAddress,
		"--advertise-address", o.BindAddress,
		"--cert-dir", filepath.Join(o.Dir, "certs"),
		"--service-cluster-ip-range", "10.96.0.0/12",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		// No kubernetes Service endpoints: the address may be loopback.
		"--endpoint-reconciler-type", "none",
		"--profiling=false",
	}
	if o.EtcdPrefix != "" {
		args = append(args, "--etcd-prefix", o.EtcdPrefix)
	}
	if o.TLSCert != "" {
		args = append(args, "--tls-cert-file", o.TLSCert, "--tls-private-key-file", o.TLSKey)
	}
	if o.EtcdCA != "" {
		args = append(args, "--etcd-cafile", o.EtcdCA, "--etcd-certfile", o.EtcdCert, "--etcd-keyfile", o.EtcdKey)
	}
	srv.Args = args
	return srv, nil
}

// kubeconfig is a token user's kubeconfig; with a CA it verifies the
// server's certificate, else (a self-signed one on loopback) it cannot.
func kubeconfig(url, caFile, user, token string) string {
	tls := "insecure-skip-tls-verify: true"
	if caFile != "" {
		tls = fmt.Sprintf("certificate-authority: %q", caFile)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: calyx
  cluster: {server: %q, %s}
users:
- name: %q
  user: {token: %q}
contexts:
- name: calyx
  context: {cluster: calyx, user: %q}
current-context: calyx
`, url, tls, user, token, user)
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Client is a client of the admin kubeconfig.
func Client(kubeconfig string) (*kubernetes.Clientset, *rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	rc.QPS, rc.Burst = 200, 400
	kc, err := kubernetes.NewForConfig(rc)
	return kc, rc, err
}

// WaitReady waits until the API server answers /readyz and the
// kube-system namespace exists, or exited is closed (when not nil) or ctx
// ends.
func WaitReady(ctx context.Context, kubeconfig string, exited <-chan struct{}) error {
	_, rc, err := Client(kubeconfig)
	if err != nil {
		return err
	}
	return WaitReadyConfig(ctx, rc, exited)
}

// WaitReadyConfig is WaitReady with a client configuration (one that
// dials inside a network namespace, say).
func WaitReadyConfig(ctx context.Context, rc *rest.Config, exited <-chan struct{}) error {
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		if err == nil {
			_, err = kc.CoreV1().Namespaces().Get(rctx, "kube-system", metav1.GetOptions{})
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w (last: %v)", ctx.Err(), last)
		case <-exited:
			return errors.New("kube-apiserver exited")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// EnsureServiceAccount creates a namespace's service account if missing:
// without kube-controller-manager nobody makes "default", and pods are
// refused until the one they name exists.
func EnsureServiceAccount(ctx context.Context, kc kubernetes.Interface, ns, name string) error {
	_, err := kc.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// Command is the exec.Cmd of a prepared server (for tests; the lab runs
// it in a namespace its own way).
func Command(bin string, s *Server) *exec.Cmd {
	return exec.Command(bin, s.Args...)
}

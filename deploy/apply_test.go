package deploy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/calyx-net/calyx/datastore/etcdtest"
	"github.com/calyx-net/calyx/internal/kubeapi"
)

// startAPIServer runs the real kube-apiserver on an embedded etcd on
// loopback; it is stopped when the test ends.
func startAPIServer(t *testing.T) string {
	t.Helper()
	bin, err := kubeapi.Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	e := etcdtest.Start(t)
	s, err := kubeapi.Prepare(kubeapi.Options{Dir: t.TempDir(), EtcdServers: []string{e.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	cmd := kubeapi.Command(bin, s)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("kube-apiserver log (tail):\n%s", tail(logs.String(), 3000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kubeapi.WaitReady(ctx, s.Kubeconfig, exited); err != nil {
		t.Fatalf("%v\n%s", err, tail(logs.String(), 3000))
	}
	return s.Kubeconfig
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestManifestsOnRealAPIServer applies every shipped manifest to a real
// kube-apiserver with server-side apply (the server validates each field),
// then checks each ServiceAccount's rights with SubjectAccessReviews: what
// it needs, and not a write of pods or a read of secrets.
func TestManifestsOnRealAPIServer(t *testing.T) {
	kubeconfig := startAPIServer(t)
	kc, rc, err := kubeapi.Client(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(kc.Discovery()))
	ctx := context.Background()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) < 2 {
		t.Fatalf("manifests: %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for i := 0; ; i++ {
			var obj unstructured.Unstructured
			if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			gvk := obj.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %s: %v", f, gvk, err)
			}
			body, _ := obj.MarshalJSON()
			force := true
			_, err = dyn.Resource(m.Resource).Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, body,
				metav1.PatchOptions{FieldManager: "calyx-deploy-test", Force: &force, FieldValidation: "Strict"})
			if err != nil {
				t.Errorf("%s: server-side apply of %s %s/%s refused: %v", f, gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
			}
		}
	}

	type access struct {
		verb, group, resource, ns, name string
		allowed                         bool
	}
	rights := map[string][]access{
		"calyx-agent": {
			{"get", "", "pods", "default", "", true},
			{"get", "", "nodes", "", "", true},
			{"list", "", "pods", "", "", false},
			{"create", "", "pods", "default", "", false},
			{"update", "", "pods", "default", "", false},
			{"get", "", "secrets", "kube-system", "", false},
			{"list", "networking.k8s.io", "networkpolicies", "", "", false},
		},
		"calyx-kube-controllers": {
			{"list", "", "pods", "", "", true},
			{"watch", "", "pods", "", "", true},
			{"watch", "", "namespaces", "", "", true},
			{"watch", "", "nodes", "", "", true},
			{"list", "", "serviceaccounts", "", "", true},
			{"watch", "networking.k8s.io", "networkpolicies", "", "", true},
			{"create", "coordination.k8s.io", "leases", "kube-system", "", true},
			{"update", "coordination.k8s.io", "leases", "kube-system", "calyx-kube-controllers", true},
			{"update", "coordination.k8s.io", "leases", "kube-system", "kube-scheduler", false},
			{"update", "coordination.k8s.io", "leases", "default", "calyx-kube-controllers", false},
			{"create", "", "pods", "default", "", false},
			{"delete", "", "pods", "default", "", false},
			{"patch", "", "pods", "default", "", false},
			{"get", "", "secrets", "kube-system", "", false},
			{"list", "", "secrets", "", "", false},
			{"update", "networking.k8s.io", "networkpolicies", "default", "", false},
		},
	}
	for sa, checks := range rights {
		for _, a := range checks {
			if got := can(t, kc, "system:serviceaccount:kube-system:"+sa, a.verb, a.group, a.resource, a.ns, a.name); got != a.allowed {
				t.Errorf("%s may %s %s %s (ns %q, name %q): %v, want %v", sa, a.verb, a.group, a.resource, a.ns, a.name, got, a.allowed)
			}
		}
	}
}

func can(t *testing.T, kc kubernetes.Interface, user, verb, group, resource, ns, name string) bool {
	t.Helper()
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: ns, Name: name},
	}}
	out, err := kc.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out.Status.Allowed
}

package k8s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const (
	// hpaSyncPeriod is the controller manager's HPA resync (15 s by
	// default): short, so a scenario takes seconds.
	hpaSyncPeriod = time.Second
	// kedaNamespace holds KEDA's cluster objects, as the KEDA chart does.
	kedaNamespace = "keda"
)

// cluster is the control plane and KEDA, started once for the whole run by
// TestMain inside the private network namespace and stopped by it.
type cluster struct {
	dir        string
	tools      *toolset
	pki        *pki
	kubeconfig string
	server     string
	cfg        *rest.Config
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	mapper     *restmapper.DeferredDiscoveryRESTMapper
	procs      []*proc // in start order
	logw       io.Writer
	started    map[string]time.Duration
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// Inside the test's own network namespace nothing else competes for them.
func freePorts(n int) ([]int, error) {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ps := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ps = append(ps, ln.Addr().(*net.TCPAddr).Port)
	}
	return ps, nil
}

func baseEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, extra...)
}

func (c *cluster) start(name, bin string, args, env []string) (*proc, error) {
	p, err := startProcess(c.dir, name, bin, args, env)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// waitFor polls check every 100 ms until it returns nil, the process dies
// or the timeout passes.
func waitFor(ctx context.Context, p *proc, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s (%w)\n%s", p.name, what, p.waitErr, p.tail(30))
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			tail := ""
			if p != nil {
				tail = "\n" + p.tail(30)
			}
			return fmt.Errorf("%s not ready within %s: %w%s", what, timeout, last, tail)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func httpGetOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return nil
}

// startCluster starts etcd, kube-apiserver, kube-controller-manager, KEDA's
// CRDs, operator and metrics adapter, and waits until the external metrics
// API answers through the aggregator.
func startCluster(ctx context.Context, ts *toolset, logw io.Writer) (_ *cluster, err error) {
	dir, err := os.MkdirTemp("", "kos-k8s-cluster-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, tools: ts, logw: logw, started: map[string]time.Duration{}}
	defer func() {
		if err != nil {
			c.stop(true)
		}
	}()
	begin := time.Now()
	if c.pki, err = writePKI(filepath.Join(dir, "pki")); err != nil {
		return c, fmt.Errorf("pki: %w", err)
	}
	ports, err := freePorts(9)
	if err != nil {
		return c, err
	}
	etcdClient, etcdPeer, apiPort, kcmPort := ports[0], ports[1], ports[2], ports[3]
	opMetrics, opProbe, opGRPC, adapterPort, adapterMetrics := ports[4], ports[5], ports[6], ports[7], ports[8]

	// etcd
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	etcd, err := c.start("etcd", ts.Etcd, []string{
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-url=" + etcdURL,
		"--listen-peer-url=http://127.0.0.1:" + strconv.Itoa(etcdPeer),
	}, baseEnv())
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, etcd, "etcd", 60*time.Second, func(ctx context.Context) error {
		return httpGetOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return c, err
	}
	c.started["etcd"] = time.Since(begin)

	// kube-apiserver
	p := c.pki
	c.server = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	api, err := c.start("kube-apiserver", ts.APIServer, []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver"),
		"--tls-cert-file=" + p.APIServerCert,
		"--tls-private-key-file=" + p.APIServerKey,
		"--client-ca-file=" + p.CA,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.ServiceAccount,
		"--service-account-signing-key-file=" + p.ServiceAccountKey,
		// Addresses the API allocates to Services: bookkeeping only, no
		// packet goes anywhere (the namespace has nothing but loopback).
		"--service-cluster-ip-range=10.96.0.0/16",
		// The API server refuses loopback Endpoints for the "kubernetes"
		// Service; nothing here needs them.
		"--endpoint-reconciler-type=none",
		// Aggregation, for KEDA's external metrics APIService.
		"--requestheader-client-ca-file=" + p.FrontProxyCA,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.ProxyClientCert,
		"--proxy-client-key-file=" + p.ProxyClientKey,
		"--profiling=false",
		"--v=1",
	}, baseEnv())
	if err != nil {
		return c, err
	}
	if err := c.writeKubeconfig(); err != nil {
		return c, err
	}
	adminTLS, err := c.adminHTTPClient()
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, api, "kube-apiserver", 120*time.Second, func(ctx context.Context) error {
		return httpGetOK(ctx, adminTLS, c.server+"/readyz")
	}); err != nil {
		return c, err
	}
	c.started["kube-apiserver"] = time.Since(begin)
	if c.cfg, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig); err != nil {
		return c, err
	}
	// The test's own clients hold the admin pair in memory: with file paths
	// client-go starts a certificate-reloading goroutine that never stops.
	if err := rest.LoadTLSFiles(c.cfg); err != nil {
		return c, err
	}
	c.cfg.CertFile, c.cfg.KeyFile, c.cfg.CAFile = "", "", ""
	c.cfg.QPS, c.cfg.Burst = 100, 200
	if c.kube, err = kubernetes.NewForConfig(c.cfg); err != nil {
		return c, err
	}
	if c.dyn, err = dynamic.NewForConfig(c.cfg); err != nil {
		return c, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.cfg)
	if err != nil {
		return c, err
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))

	// kube-controller-manager: only what moves a Deployment's replicas.
	kcm, err := c.start("kube-controller-manager", ts.ControllerManager, []string{
		"--kubeconfig=" + c.kubeconfig,
		"--authentication-kubeconfig=" + c.kubeconfig,
		"--authorization-kubeconfig=" + c.kubeconfig,
		"--controllers=deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller,garbage-collector-controller,serviceaccount-controller",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--cert-dir=" + filepath.Join(dir, "kcm"),
		"--use-service-account-credentials=false",
		"--horizontal-pod-autoscaler-sync-period=" + hpaSyncPeriod.String(),
		"--profiling=false",
		"--v=1",
	}, baseEnv())
	if err != nil {
		return c, err
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // its own self-signed serving cert on loopback
	if err := waitFor(ctx, kcm, "kube-controller-manager", 60*time.Second, func(ctx context.Context) error {
		return httpGetOK(ctx, insecure, "https://127.0.0.1:"+strconv.Itoa(kcmPort)+"/healthz")
	}); err != nil {
		return c, err
	}
	c.started["kube-controller-manager"] = time.Since(begin)

	// KEDA's CRDs, from the KEDA module itself, and the namespaces.
	if err := c.applyCRDs(ctx, ts.KEDACRDs, ""); err != nil {
		return c, err
	}
	for _, ns := range []string{kedaNamespace} {
		if err := c.createNamespace(ctx, ns); err != nil {
			return c, err
		}
	}

	// KEDA's operator. Outside a cluster it needs the namespace it would run
	// in; its gRPC metrics service (for the adapter) uses the KEDA pair.
	kedaEnv := baseEnv("KUBECONFIG="+c.kubeconfig, "WATCH_NAMESPACE=", "POD_NAMESPACE="+kedaNamespace, "KEDA_CLUSTER_OBJECT_NAMESPACE="+kedaNamespace)
	op, err := c.start("keda-operator", ts.Operator, []string{
		"--leader-elect=false",
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(opMetrics),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(opProbe),
		"--metrics-service-bind-address=127.0.0.1:" + strconv.Itoa(opGRPC),
		"--cert-dir=" + p.KEDADir,
		"--ca-dir=" + filepath.Join(dir, "no-custom-ca"),
		"--zap-log-level=info",
		"--zap-encoder=console",
	}, kedaEnv)
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, op, "keda-operator", 60*time.Second, func(ctx context.Context) error {
		return httpGetOK(ctx, http.DefaultClient, "http://127.0.0.1:"+strconv.Itoa(opProbe)+"/readyz")
	}); err != nil {
		return c, err
	}
	c.started["keda-operator"] = time.Since(begin)

	// KEDA's metrics adapter, and the APIService that routes
	// external.metrics.k8s.io to it through an ExternalName Service.
	ad, err := c.start("keda-adapter", ts.Adapter, []string{
		"--secure-port=" + strconv.Itoa(adapterPort),
		"--bind-address=127.0.0.1",
		"--cert-dir=" + p.KEDADir,
		"--tls-cert-file=" + filepath.Join(p.KEDADir, "tls.crt"),
		"--tls-private-key-file=" + filepath.Join(p.KEDADir, "tls.key"),
		"--lister-kubeconfig=" + c.kubeconfig,
		"--authentication-kubeconfig=" + c.kubeconfig,
		"--authorization-kubeconfig=" + c.kubeconfig,
		"--metrics-service-address=127.0.0.1:" + strconv.Itoa(opGRPC),
		// Its own /metrics listener binds every interface (hard-coded):
		// only loopback exists in this namespace.
		"--port=" + strconv.Itoa(adapterMetrics),
		"--zap-log-level=info",
		"--zap-encoder=console",
	}, kedaEnv)
	if err != nil {
		return c, err
	}
	if err := c.registerAdapter(ctx, adapterPort); err != nil {
		return c, err
	}
	if err := waitFor(ctx, ad, "external metrics API through the aggregator", 120*time.Second, func(ctx context.Context) error {
		return httpGetOK(ctx, adminTLS, c.server+"/apis/external.metrics.k8s.io/v1beta1")
	}); err != nil {
		return c, err
	}
	c.started["keda-adapter"] = time.Since(begin)
	adminTLS.CloseIdleConnections()
	insecure.CloseIdleConnections()
	return c, nil
}

func (c *cluster) writeKubeconfig() error {
	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
`, c.server, c.pki.CA, c.pki.AdminCert, c.pki.AdminKey)
	return os.WriteFile(c.kubeconfig, []byte(kc), 0o600)
}

func (c *cluster) adminHTTPClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(c.pki.AdminCert, c.pki.AdminKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.pki.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
	}}}, nil
}

// stop ends every process in reverse start order. keepLogs keeps the
// directory (and says where) for a failed run.
func (c *cluster) stop(keepLogs bool) {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].Stop(10 * time.Second)
	}
	if keepLogs {
		_, _ = fmt.Fprintf(c.logw, "k8s: control-plane logs kept in %s\n", c.dir)
		return
	}
	_ = os.RemoveAll(c.dir)
}

// decodeYAMLDocs splits a multi-document YAML file into objects.
func decodeYAMLDocs(b []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(string(b), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// applyCRDs creates every CRD in dir whose file name contains match and
// waits until each is Established.
func (c *cluster) applyCRDs(ctx context.Context, dir, match string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no CRDs in %s", dir)
	}
	var names []string
	for _, f := range files {
		if !strings.Contains(filepath.Base(f), match) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		objs, err := decodeYAMLDocs(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, o := range objs {
			if _, err := c.dyn.Resource(crdGVR).Create(ctx, o, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create CRD %s: %w", o.GetName(), err)
			}
			names = append(names, o.GetName())
		}
	}
	for _, n := range names {
		if err := waitFor(ctx, nil, "CRD "+n, 30*time.Second, func(ctx context.Context) error {
			o, err := c.dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
			for _, cd := range conds {
				m, _ := cd.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return errors.New("not established")
		}); err != nil {
			return err
		}
	}
	c.mapper.Reset()
	return nil
}

// createNamespace creates ns (if needed) with its default ServiceAccount, so
// the ReplicaSet controller can create Pods in it at once.
func (c *cluster) createNamespace(ctx context.Context, ns string) error {
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	_, err = c.kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service account in %s: %w", ns, err)
	}
	return nil
}

// registerAdapter creates what KEDA's chart creates for the adapter, except
// that the Service is an ExternalName for localhost (the API server refuses
// loopback Endpoints) and the APIService names the adapter's port.
func (c *cluster) registerAdapter(ctx context.Context, port int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-operator-metrics-apiserver", Namespace: kedaNamespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"},
	}
	if _, err := c.kube.CoreV1().Services(kedaNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("adapter service: %w", err)
	}
	apiSvc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": "v1beta1.external.metrics.k8s.io"},
		"spec": map[string]any{
			"group":                 "external.metrics.k8s.io",
			"version":               "v1beta1",
			"groupPriorityMinimum":  int64(100),
			"versionPriority":       int64(100),
			"insecureSkipTLSVerify": true,
			"service": map[string]any{
				"name":      svc.Name,
				"namespace": kedaNamespace,
				"port":      int64(port),
			},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	if _, err := c.dyn.Resource(gvr).Create(ctx, apiSvc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("external metrics APIService: %w", err)
	}
	return nil
}

// resourceFor maps an object's kind to its resource and scope.
func (c *cluster) resourceFor(o *unstructured.Unstructured) (schema.GroupVersionResource, bool, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return schema.GroupVersionResource{}, false, err
	}
	return m.Resource, m.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

// serverDryRun sends o to the API server as a create with dryRun=All and
// strict field validation, as `kubectl apply --dry-run=server` does for a
// new object: admission and validation run, nothing is stored.
func (c *cluster) serverDryRun(ctx context.Context, o *unstructured.Unstructured, defaultNS string) error {
	gvr, namespaced, err := c.resourceFor(o)
	if err != nil {
		return err
	}
	opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict}
	if !namespaced {
		_, err = c.dyn.Resource(gvr).Create(ctx, o, opts)
		return err
	}
	ns := o.GetNamespace()
	if ns == "" {
		ns = defaultNS
	}
	_, err = c.dyn.Resource(gvr).Namespace(ns).Create(ctx, o, opts)
	return err
}

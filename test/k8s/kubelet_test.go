package k8s

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// podRunner stands in for the kubelet: for every Pod the ReplicaSet
// controller creates for the Deployment it starts a fake vLLM server with a
// collector sidecar carrying that Pod's real name, and stops them when the
// Pod is deleted. The running requests sit on the oldest pod (requests do
// not move between pods; new pods start idle), so the fleet's total is what
// the test sets. One goroutine owns the watch and the pods; Stop ends all.
type podRunner struct {
	t        *testing.T
	c        *cluster
	ns, dep  string
	cfgPath  string
	otlpAddr string
	fixture  []string
	logDir   string

	mu   sync.Mutex
	pods map[string]*runnerPod
	load float64

	cancel context.CancelFunc
	done   chan struct{}
}

type runnerPod struct {
	*fakePod
	created time.Time
}

func startPodRunner(t *testing.T, c *cluster, ns, deploy, cfgPath, otlpAddr string, fixture []string) *podRunner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &podRunner{
		t: t, c: c, ns: ns, dep: deploy, cfgPath: cfgPath, otlpAddr: otlpAddr, fixture: fixture, logDir: t.TempDir(),
		pods: map[string]*runnerPod{}, cancel: cancel, done: make(chan struct{}),
	}
	go r.run(ctx)
	t.Cleanup(r.Stop)
	return r
}

func (r *podRunner) Stop() {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, p := range r.pods {
		p.stop()
		delete(r.pods, n)
	}
}

func (r *podRunner) run(ctx context.Context) {
	defer close(r.done)
	sel := "app=" + r.dep
	for ctx.Err() == nil {
		list, err := r.c.kube.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		live := map[string]bool{}
		for i := range list.Items {
			live[list.Items[i].Name] = true
			r.observe(&list.Items[i], false)
		}
		r.mu.Lock()
		var gone []string
		for n := range r.pods {
			if !live[n] {
				gone = append(gone, n)
			}
		}
		r.mu.Unlock()
		for _, n := range gone {
			r.remove(n)
		}
		w, err := r.c.kube.CoreV1().Pods(r.ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok {
				r.observe(p, ev.Type == watch.Deleted)
			}
		}
		w.Stop()
	}
}

func (r *podRunner) observe(p *corev1.Pod, deleted bool) {
	if deleted || p.DeletionTimestamp != nil {
		r.remove(p.Name)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pods[p.Name]; ok {
		return
	}
	fp, err := startFakePodE(r.logDir, r.cfgPath, r.otlpAddr, r.ns, r.dep, p.Name, r.fixture, 0)
	if err != nil {
		r.t.Errorf("start fake pod %s: %v", p.Name, err)
		return
	}
	r.pods[p.Name] = &runnerPod{fakePod: fp, created: p.CreationTimestamp.Time}
	r.applyLoadLocked()
}

func (r *podRunner) remove(name string) {
	r.mu.Lock()
	p, ok := r.pods[name]
	delete(r.pods, name)
	r.mu.Unlock()
	if ok {
		p.stop()
	}
}

// SetLoad puts total running requests on the oldest pod, none elsewhere.
func (r *podRunner) SetLoad(total float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.load = total
	r.applyLoadLocked()
}

func (r *podRunner) applyLoadLocked() {
	ps := make([]*runnerPod, 0, len(r.pods))
	for _, p := range r.pods {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].created.Equal(ps[j].created) {
			return ps[i].created.Before(ps[j].created)
		}
		return ps[i].name < ps[j].name
	})
	for i, p := range ps {
		if i == 0 {
			p.vllm.Set(r.load)
		} else {
			p.vllm.Set(0)
		}
	}
}

// waitPods waits until n pods run and each has been scraped twice.
func (r *podRunner) waitPods(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		ready := len(r.pods) == n
		for _, p := range r.pods {
			if p.col.exited() {
				r.mu.Unlock()
				t.Fatalf("collector of %s exited: %v\n%s", p.name, p.col.waitErr, p.col.tail(30))
			}
			if p.vllm.scrapes.Load() < 2 {
				ready = false
			}
		}
		count := len(r.pods)
		r.mu.Unlock()
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pods running after %s, want %d scraped", count, timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

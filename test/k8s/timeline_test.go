package k8s

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	appsv1 "k8s.io/api/apps/v1"
)

// event is one line of a scenario's timeline.
type event struct {
	at   time.Time
	what string
	spec int32 // the Deployment's .spec.replicas after a replica event; -1 otherwise
}

// timeline records a Deployment's replicas (from a watch, so every change
// is seen with the time it arrived), its HPA's status (polled) and the
// test's own actions. One goroutine owns the watch; Stop ends it.
type timeline struct {
	name   string
	start  time.Time
	mu     sync.Mutex
	events []event
	spec   int32
	seen   bool
	notify chan struct{} // closed and replaced on every replica event
	cancel context.CancelFunc
	done   chan struct{}
}

func (tl *timeline) add(at time.Time, what string, spec int32) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, event{at: at, what: what, spec: spec})
	if spec >= 0 {
		tl.spec, tl.seen = spec, true
		close(tl.notify)
		tl.notify = make(chan struct{})
	}
}

// note records an action of the test and returns its time.
func (tl *timeline) note(format string, args ...any) time.Time {
	now := time.Now()
	tl.add(now, fmt.Sprintf(format, args...), -1)
	return now
}

// watchScenario starts recording Deployment ns/name and the HPA KEDA
// creates for ScaledObject so (keda-hpa-<so>).
func watchScenario(t *testing.T, c *cluster, name, ns, deploy, so string) *timeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tl := &timeline{name: name, start: time.Now(), notify: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); tl.watchDeployment(ctx, c, ns, deploy) }()
		go func() { defer wg.Done(); tl.pollHPA(ctx, c, ns, "keda-hpa-"+so) }()
		wg.Wait()
	}()
	t.Cleanup(tl.Stop)
	return tl
}

func (tl *timeline) Stop() {
	tl.cancel()
	<-tl.done
}

func (tl *timeline) watchDeployment(ctx context.Context, c *cluster, ns, name string) {
	var lastSpec, lastStatus int32 = -1, -1
	record := func(d *appsv1.Deployment) {
		spec := int32(1)
		if d.Spec.Replicas != nil {
			spec = *d.Spec.Replicas
		}
		if spec != lastSpec || d.Status.Replicas != lastStatus {
			what := fmt.Sprintf("deployment spec.replicas=%d status.replicas=%d", spec, d.Status.Replicas)
			s := int32(-1)
			if spec != lastSpec {
				s = spec
			}
			tl.add(time.Now(), what, s)
			lastSpec, lastStatus = spec, d.Status.Replicas
		}
	}
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for ctx.Err() == nil {
		list, err := c.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		for i := range list.Items {
			record(&list.Items[i])
		}
		w, err := c.kube.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				record(d)
			}
		}
		w.Stop()
	}
}

// hpaSummary is what the report shows of an HPA's status.
func hpaSummary(h *autoscalingv2.HorizontalPodAutoscaler) string {
	var ms []string
	for _, m := range h.Status.CurrentMetrics {
		if m.External == nil {
			continue
		}
		v := "?"
		switch {
		case m.External.Current.AverageValue != nil:
			v = "average " + m.External.Current.AverageValue.String()
		case m.External.Current.Value != nil:
			v = "value " + m.External.Current.Value.String()
		}
		ms = append(ms, m.External.Metric.Name+" "+v)
	}
	active := ""
	for _, cd := range h.Status.Conditions {
		if cd.Type == autoscalingv2.ScalingActive && cd.Status != "True" {
			active = fmt.Sprintf(" ScalingActive=%s (%s)", cd.Status, cd.Reason)
		}
	}
	return fmt.Sprintf("hpa current=%d desired=%d metrics=[%s]%s", h.Status.CurrentReplicas, h.Status.DesiredReplicas, strings.Join(ms, ", "), active)
}

func (tl *timeline) pollHPA(ctx context.Context, c *cluster, ns, name string) {
	last := ""
	for ctx.Err() == nil {
		h, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if s := hpaSummary(h); s != last {
				tl.add(time.Now(), s, -1)
				last = s
			}
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitSpec waits until the Deployment's .spec.replicas is want and returns
// the time the watch delivered that change.
func (tl *timeline) waitSpec(t *testing.T, want int32, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		tl.mu.Lock()
		cur, seen, ch := tl.spec, tl.seen, tl.notify
		var at time.Time
		if seen && cur == want {
			for i := len(tl.events) - 1; i >= 0; i-- {
				if tl.events[i].spec >= 0 {
					at = tl.events[i].at
					break
				}
			}
		}
		tl.mu.Unlock()
		if !at.IsZero() {
			return at
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: .spec.replicas is %d after %s, want %d\n%s", tl.name, cur, timeout, want, tl.String())
			return time.Time{}
		}
	}
}

// replicaSequence is the Deployment's .spec.replicas values in order, each
// change once.
func (tl *timeline) replicaSequence() []int32 {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var seq []int32
	for _, e := range tl.events {
		if e.spec >= 0 && (len(seq) == 0 || seq[len(seq)-1] != e.spec) {
			seq = append(seq, e.spec)
		}
	}
	return slices.Clip(seq)
}

func (tl *timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	for _, e := range tl.events {
		fmt.Fprintf(&b, "  %s t+%6.2fs  %s\n", tl.name, e.at.Sub(tl.start).Seconds(), e.what)
	}
	return b.String()
}

// print writes the timeline into the run's report.
func (tl *timeline) print() {
	for _, l := range strings.Split(strings.TrimRight(tl.String(), "\n"), "\n") {
		report("%s", strings.TrimLeft(l, " "))
	}
}

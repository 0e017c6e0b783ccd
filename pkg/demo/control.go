package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Trigger is one trigger of the simulated ScaledObject.
type Trigger struct {
	// Label names the trigger in the terminal view.
	Label string
	// Push marks an external-push trigger (KEDA opens StreamIsActive).
	Push bool
	// MetricType is AverageValue (default) or Value.
	MetricType string
	// Metadata is the trigger's metadata map, sent as scalerMetadata.
	Metadata map[string]string
}

// ScaledObject is the KEDA ScaledObject the control loop plays out.
type ScaledObject struct {
	Name, Namespace          string
	MinReplicas, MaxReplicas int
	// PollingInterval and CooldownPeriod are in simulated seconds.
	PollingInterval, CooldownPeriod float64
	Triggers                        []Trigger
}

func (so *ScaledObject) ref(i int) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: so.Name, Namespace: so.Namespace, ScalerMetadata: so.Triggers[i].Metadata}
}

// Event is one scaling decision.
type Event struct {
	T float64 // simulated seconds
	// Source is "push" (StreamIsActive true at zero), "poll" (IsActive
	// true at zero), "hpa" or "cooldown" (KEDA scaling to zero).
	Source   string
	From, To int
	Detail   string
}

// String formats the event for the summary: time, source, from→to, detail.
func (e Event) String() string {
	return fmt.Sprintf("%s %s %d→%d %s", clock(e.T), e.Source, e.From, e.To, e.Detail)
}

// triggerState is what the control loop knows about one trigger.
type triggerState struct {
	metricName string // KEDA's HPA metric name: s<index>-<spec name>
	target     float64
	value      float64 // last GetMetrics value; NaN before the first
	active     bool
	lastErr    string
}

// Controller plays KEDA's scale loop and the HPA for one ScaledObject,
// talking to the scaler only through the externalscaler client.
type Controller struct {
	so       ScaledObject
	behavior HPABehavior
	client   externalscaler.ExternalScalerClient

	triggers   []triggerState
	replicas   int // the scale target's spec.replicas
	lastActive float64
	everActive bool
	stab       Stabilizer
	events     []Event
	rpcErrors  int
}

// NewController returns a controller for so, starting at zero replicas.
func NewController(client externalscaler.ExternalScalerClient, so ScaledObject, b HPABehavior) *Controller {
	b.MinReplicas = max(so.MinReplicas, 1)
	b.MaxReplicas = so.MaxReplicas
	c := &Controller{so: so, behavior: b, client: client, triggers: make([]triggerState, len(so.Triggers))}
	for i := range c.triggers {
		c.triggers[i].value = math.NaN()
	}
	return c
}

// Init asks GetMetricSpec for every trigger, as KEDA does when it builds
// the HPA. An error here is a bad trigger: the demo stops with it.
func (c *Controller) Init(ctx context.Context) error {
	for i := range c.so.Triggers {
		spec, err := c.client.GetMetricSpec(ctx, c.so.ref(i))
		if err != nil {
			return fmt.Errorf("GetMetricSpec for trigger %d (%s): %w", i, c.so.Triggers[i].Label, err)
		}
		if len(spec.GetMetricSpecs()) != 1 {
			return fmt.Errorf("GetMetricSpec for trigger %d returned %d specs, want 1", i, len(spec.GetMetricSpecs()))
		}
		ms := spec.GetMetricSpecs()[0]
		c.triggers[i].metricName = fmt.Sprintf("s%d-%s", i, ms.GetMetricName())
		c.triggers[i].target = targetOf(ms)
	}
	return nil
}

// targetOf reads a MetricSpec as KEDA >= 2.17 does: the float when > 0.
func targetOf(ms *externalscaler.MetricSpec) float64 {
	if f := ms.GetTargetSizeFloat(); f > 0 {
		return f
	}
	return float64(ms.GetTargetSize())
}

// valueOf reads a MetricValue as KEDA >= 2.17 does: the float when > 0.
func valueOf(mv *externalscaler.MetricValue) float64 {
	if f := mv.GetMetricValueFloat(); f > 0 {
		return f
	}
	return float64(mv.GetMetricValue())
}

// Replicas returns the scale target's desired replica count.
func (c *Controller) Replicas() int { return c.replicas }

// Events returns every scaling decision so far.
func (c *Controller) Events() []Event { return c.events }

// Value returns the last value GetMetrics gave for trigger i (NaN if none).
func (c *Controller) Value(i int) float64 { return c.triggers[i].value }

func (c *Controller) scale(now float64, to int, source, detail string) {
	if to == c.replicas {
		return
	}
	c.events = append(c.events, Event{T: now, Source: source, From: c.replicas, To: to, Detail: detail})
	if to == 0 {
		c.stab.Reset()
	}
	c.replicas = to
}

// OnPush handles a true received on StreamIsActive: KEDA requests scaling
// at once; at zero replicas that means max(minReplicaCount, 1).
func (c *Controller) OnPush(now float64, trigger int) {
	c.lastActive, c.everActive = now, true
	if c.replicas == 0 {
		c.scale(now, max(c.so.MinReplicas, 1), "push", "StreamIsActive true from "+c.so.Triggers[trigger].Label)
	}
}

// Poll is one pass of KEDA's scale loop: per trigger GetMetricSpec, then
// GetMetrics immediately followed by IsActive. Any active trigger
// activates; when none is, replicas drop to zero once cooldownPeriod has
// passed since the last activity (only with minReplicaCount 0).
func (c *Controller) Poll(ctx context.Context, now float64) {
	active := false
	for i := range c.so.Triggers {
		ref := c.so.ref(i)
		if _, err := c.client.GetMetricSpec(ctx, ref); err != nil {
			c.rpcError(i, err)
			continue
		}
		if _, err := c.getMetrics(ctx, i); err != nil {
			continue
		}
		resp, err := c.client.IsActive(ctx, ref)
		if err != nil {
			c.rpcError(i, err)
			continue
		}
		c.triggers[i].active = resp.GetResult()
		active = active || resp.GetResult()
	}
	switch {
	case active:
		c.lastActive, c.everActive = now, true
		if c.replicas == 0 {
			c.scale(now, max(c.so.MinReplicas, 1), "poll", "IsActive true")
		}
	case c.replicas > 0 && c.so.MinReplicas == 0 && c.everActive && now-c.lastActive >= c.so.CooldownPeriod:
		c.scale(now, 0, "cooldown", fmt.Sprintf("inactive for %.0fs", now-c.lastActive))
	}
}

func (c *Controller) getMetrics(ctx context.Context, i int) (float64, error) {
	resp, err := c.client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: c.so.ref(i), MetricName: c.triggers[i].metricName})
	if err != nil {
		c.rpcError(i, err)
		return 0, err
	}
	if len(resp.GetMetricValues()) != 1 {
		err := fmt.Errorf("GetMetrics returned %d values, want 1", len(resp.GetMetricValues()))
		c.rpcError(i, err)
		return 0, err
	}
	v := valueOf(resp.GetMetricValues()[0])
	c.triggers[i].value = v
	c.triggers[i].lastErr = ""
	return v, nil
}

func (c *Controller) rpcError(i int, err error) {
	c.rpcErrors++
	c.triggers[i].lastErr = err.Error()
}

// HPASync is one HPA sync: for each trigger's metric, GetMetricSpec for
// every trigger (the metrics adapter looks the metric up) and GetMetrics
// for the owner; the largest per-metric proposal wins, then stabilisation,
// rate limits and min/max apply. At zero replicas the HPA does nothing.
func (c *Controller) HPASync(ctx context.Context, now float64) {
	if c.replicas == 0 {
		return
	}
	desired, ok := 0, false
	detail := ""
	for i, t := range c.so.Triggers {
		for j := range c.so.Triggers {
			_, _ = c.client.GetMetricSpec(ctx, c.so.ref(j))
		}
		v, err := c.getMetrics(ctx, i)
		if err != nil {
			continue
		}
		n := DesiredReplicas(t.MetricType, v, c.triggers[i].target, c.replicas, c.behavior.Tolerance)
		if !ok || n >= desired { // on a tie name the later (scaling) trigger
			desired, ok = n, true
			detail = fmt.Sprintf("%s=%s target %s", t.Label, fmtNum(v), fmtNum(c.triggers[i].target))
		}
	}
	if !ok {
		return // no metric could be read: the HPA keeps the count
	}
	c.scale(now, c.stab.Next(now, desired, c.replicas, c.behavior), "hpa", detail)
}

func fmtNum(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// pushStream keeps KEDA's StreamIsActive open for one external-push
// trigger and forwards every true to out (coalesced: out has capacity 1).
// It reconnects like KEDA: at once, then after d, where d starts at 2 s,
// doubles up to 60 s, and resets only after a clean end (io.EOF). Delays
// are simulated seconds divided by speed. It returns when ctx ends.
func pushStream(ctx context.Context, wg *sync.WaitGroup, client externalscaler.ExternalScalerClient,
	ref *externalscaler.ScaledObjectRef, speed float64, out chan<- struct{},
) {
	defer wg.Done()
	const first, ceiling = 2 * time.Second, 60 * time.Second
	d := first
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(float64(d) / speed)):
			}
		}
		err := readStream(ctx, client, ref, out)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, io.EOF) {
			d = first
		} else {
			d = min(2*d, ceiling)
		}
	}
}

func readStream(ctx context.Context, client externalscaler.ExternalScalerClient, ref *externalscaler.ScaledObjectRef, out chan<- struct{}) error {
	stream, err := client.StreamIsActive(ctx, ref)
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Canceled {
				return ctx.Err()
			}
			return err
		}
		if msg.GetResult() {
			select {
			case out <- struct{}{}:
			default: // one pending true is enough
			}
		}
	}
}

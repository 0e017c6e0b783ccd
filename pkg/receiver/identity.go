package receiver

import (
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// twinDetector spots the sidecar pitfall of otlp-contract.md §8.3: two
// live series with the same metric name and visible labels, distinct only
// through resource or scope attributes that are not labels (every pod's
// sidecar reports instance="localhost:8000"). Both series are kept and
// counted; the detector counts each new twin and logs a warning once per
// metric name, so the operator adds the pod identity as a label.
//
// It runs when a series is created, never per sample: a direct-mapped
// table remembers the visible-label hash and ref of recently created
// series. A new series whose hash sits in its slot is a twin if the
// remembered series is still live with equal labels (checked through the
// store, so a deleted or reused ref or a hash collision is no twin). A
// slot holds the latest series of its hash, so twins created more than
// about twinSlots creations apart can be missed; one detection per metric
// name is all the warning needs, and a fleet's pods create their series
// close together.
type twinDetector struct {
	mu     sync.Mutex // guards the fields below
	hashes [twinSlots]uint64
	refs   [twinSlots]store.SeriesRef
	warned map[string]struct{}
}

const (
	twinSlots = 1 << 15 // 384 KiB
	// maxTwinWarnings bounds the metric names remembered as warned.
	maxTwinWarnings = 1024
)

// twinHint is the advice logged with a twin warning.
const twinHint = "series differ only in resource or scope attributes that are not labels; " +
	"add the pod identity as a label: a resource's k8s.pod.name becomes pod when the point has no pod label, " +
	"and --otlp-promote-resource-attributes promotes others"

// check records a series the receiver just created and reports twins.
func (d *twinDetector) check(r *Receiver, st *store.Store, ref store.SeriesRef, lset labels.Labels) {
	h := lset.Hash()
	i := h & (twinSlots - 1)
	d.mu.Lock()
	oldH, oldRef := d.hashes[i], d.refs[i]
	d.hashes[i], d.refs[i] = h, ref
	d.mu.Unlock()
	if oldH != h || oldRef == ref || oldRef == 0 || !labels.Equal(st.Labels(oldRef), lset) {
		return
	}
	r.m.twins.Inc()
	name := lset.Get(model.MetricNameLabel)
	d.mu.Lock()
	_, seen := d.warned[name]
	warn := !seen && len(d.warned) < maxTwinWarnings
	if warn {
		if d.warned == nil {
			d.warned = make(map[string]struct{})
		}
		d.warned[name] = struct{}{}
	}
	d.mu.Unlock()
	if warn {
		r.logger.Warn("Series with identical labels from different resources", "metric", name, "series", lset.String(), "hint", twinHint)
	}
}

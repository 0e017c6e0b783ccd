package helm

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// prometheusRule is the part of a monitoring.coreos.com/v1 PrometheusRule
// the chart renders; strict decoding rejects any other field.
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// wantAlerts are the alerts docs/operations.md documents.
var wantAlerts = []string{
	"KedaOtelScalerDown", "KedaOtelScalerNotReady", "KedaOtelScalerPointsRejected",
	"KedaOtelScalerSeriesLimitNear", "KedaOtelScalerPushStreamErrors", "KedaOtelScalerTriggerErrors",
}

// ruleExprs decodes the rendered PrometheusRule and returns each alert's
// expression parsed by Prometheus's own parser (server defaults), keyed by
// alert name. A rule that does not parse fails the test.
func ruleExprs(t *testing.T, o objects) (prometheusRule, map[string]parser.Expr) {
	t.Helper()
	var pr prometheusRule
	o.decode(t, ruleKey(t, o), &pr)
	p := parser.NewParser(parser.Options{})
	exprs := map[string]parser.Expr{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			e, err := p.ParseExpr(r.Expr)
			require.NoError(t, err, "alert %s: %s", r.Alert, r.Expr)
			exprs[r.Alert] = e
		}
	}
	return pr, exprs
}

// ruleKey is the rendered release's one PrometheusRule.
func ruleKey(t *testing.T, o objects) string {
	t.Helper()
	var keys []string
	for _, k := range o.kinds() {
		if strings.HasPrefix(k, "PrometheusRule/") {
			keys = append(keys, k)
		}
	}
	require.Len(t, keys, 1, "rendered objects: %v", o.kinds())
	return keys[0]
}

// selectors returns every vector selector of e with its metric name (from
// the __name__ equality matcher).
func selectors(e parser.Expr) map[string][]*parser.VectorSelector {
	out := map[string][]*parser.VectorSelector{}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					out[m.Value] = append(out[m.Value], vs)
				}
			}
		}
		return nil
	})
	return out
}

// ruleMetricNames lists the scaler's own metric names the rendered alerts
// query (Prometheus's synthetic up excluded), sorted.
func ruleMetricNames(t *testing.T, o objects) []string {
	t.Helper()
	_, exprs := ruleExprs(t, o)
	seen := map[string]bool{}
	for _, e := range exprs {
		for name := range selectors(e) {
			if name != "up" {
				seen[name] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func hasMatcher(vs *parser.VectorSelector, typ labels.MatchType, name, value string) bool {
	for _, m := range vs.LabelMatchers {
		if m.Type == typ && m.Name == name && m.Value == value {
			return true
		}
	}
	return false
}

// TestPrometheusRule renders the optional PrometheusRule and checks it
// with Prometheus's parser: every expression parses, reads only
// keda_otel_scaler_* metrics (and up), and restricts every selector to the
// scaler's job; every for is a Prometheus duration; the series-limit alert
// uses the configured limit and ratio. That the named metrics exist on
// /metrics is checked against the running server in
// TestRenderedConfigStartsServer.
func TestPrometheusRule(t *testing.T) {
	o := mustRender(t, readValues(t, "all-optional-values.yaml"))
	pr, exprs := ruleExprs(t, o)
	assert.Equal(t, "monitoring.coreos.com/v1", pr.APIVersion)
	assert.Equal(t, "monitoring", pr.Metadata.Namespace)
	assert.Equal(t, "kube-prometheus-stack", pr.Metadata.Labels["release"])
	require.Len(t, pr.Spec.Groups, 1)

	var alerts []string
	for _, r := range pr.Spec.Groups[0].Rules {
		alerts = append(alerts, r.Alert)
		_, err := model.ParseDuration(r.For)
		require.NoError(t, err, "alert %s: for %q", r.Alert, r.For)
		assert.Contains(t, []string{"critical", "warning"}, r.Labels["severity"], r.Alert)
		assert.Equal(t, "ml-platform", r.Labels["team"], "ruleLabels reach %s", r.Alert)
		assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
		assert.NotEmpty(t, r.Annotations["description"], r.Alert)
		for name, vss := range selectors(exprs[r.Alert]) {
			assert.True(t, name == "up" || strings.HasPrefix(name, "keda_otel_scaler_"), "alert %s reads %s", r.Alert, name)
			for _, vs := range vss {
				assert.True(t, hasMatcher(vs, labels.MatchEqual, "job", "keda-otel-scaler"),
					"alert %s: selector %s is not restricted to the scaler's job", r.Alert, vs)
			}
		}
	}
	assert.ElementsMatch(t, wantAlerts, alerts)

	// The series limit: config.maxSeries (500000 in this file) × the ratio.
	for _, r := range pr.Spec.Groups[0].Rules {
		if r.Alert == "KedaOtelScalerSeriesLimitNear" {
			assert.Contains(t, r.Expr, "> 0.9 * 500000", r.Expr)
		}
	}
}

// TestPrometheusRuleValues checks the values that shape the expressions:
// the selector, the series limit and its defaults.
func TestPrometheusRuleValues(t *testing.T) {
	seriesExpr := func(t *testing.T, vals map[string]any) string {
		t.Helper()
		pr, _ := ruleExprs(t, mustRender(t, vals)) // every expression parses
		for _, r := range pr.Spec.Groups[0].Rules {
			if r.Alert == "KedaOtelScalerSeriesLimitNear" {
				return r.Expr
			}
		}
		t.Fatal("no KedaOtelScalerSeriesLimitNear alert")
		return ""
	}
	t.Run("server default limit", func(t *testing.T) {
		assert.Contains(t, seriesExpr(t, set("prometheusRule.enabled", true)), "> 0.8 * 1000000")
	})
	t.Run("config.maxSeries", func(t *testing.T) {
		assert.Contains(t, seriesExpr(t, set("prometheusRule.enabled", true, "config.maxSeries", "250000")), "> 0.8 * 250000")
	})
	t.Run("prometheusRule.maxSeries wins", func(t *testing.T) {
		assert.Contains(t, seriesExpr(t, set("prometheusRule.enabled", true, "config.maxSeries", 250000, "prometheusRule.maxSeries", 2000)), "> 0.8 * 2000")
	})
	t.Run("selector", func(t *testing.T) {
		o := mustRender(t, set("prometheusRule.enabled", true, "prometheusRule.selector", `namespace="keda", service=~"kos.*"`))
		_, exprs := ruleExprs(t, o)
		require.Len(t, exprs, len(wantAlerts))
		for alert, e := range exprs {
			for name, vss := range selectors(e) {
				for _, vs := range vss {
					assert.True(t, hasMatcher(vs, labels.MatchEqual, "namespace", "keda") && hasMatcher(vs, labels.MatchRegexp, "service", "kos.*"),
						"alert %s: selector of %s lacks the configured matchers: %s", alert, name, vs)
					assert.False(t, slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool { return m.Name == "job" }),
						"alert %s: the configured selector replaces the default job matcher", alert)
				}
			}
		}
	})
	t.Run("fullnameOverride moves the default job", func(t *testing.T) {
		o := mustRender(t, set("prometheusRule.enabled", true, "fullnameOverride", "otel-scaler"))
		_, exprs := ruleExprs(t, o)
		for alert, e := range exprs {
			for _, vss := range selectors(e) {
				for _, vs := range vss {
					assert.True(t, hasMatcher(vs, labels.MatchEqual, "job", "otel-scaler"), "alert %s: %s", alert, vs)
				}
			}
		}
	})
}

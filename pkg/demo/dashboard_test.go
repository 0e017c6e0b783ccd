package demo

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestGrafanaDashboard checks examples/grafana/keda-otel-scaler-dashboard.json:
// valid JSON; every query parses; every panel on the scaler data source is
// an instant query (the scaler serves /api/v1/query, not query_range) that
// the scaler's own engine compiles; every self-metric panel names a
// keda_otel_scaler_* metric.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../examples/grafana/keda-otel-scaler-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		UID       string `json:"uid"`
		Templates struct {
			List []struct {
				Name  string `json:"name"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr    string `json:"expr"`
				Instant bool   `json:"instant"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	assert.Equal(t, "keda-otel-scaler", dash.UID)
	vars := map[string]string{"$__rate_interval": "1m"}
	for _, v := range dash.Templates.List {
		vars["$"+v.Name] = v.Query
	}
	expand := func(s string) string {
		for range 3 { // $trigger_query contains $model
			for k, v := range vars {
				s = strings.ReplaceAll(s, k, v)
			}
		}
		return s
	}
	full := parser.NewParser(parser.Options{})
	engine := query.NewEngine(store.New(store.Config{Retention: time.Minute, Freshness: time.Second, MaxSeries: 1}, store.Settings{}))
	scalerPanels, selfPanels := 0, 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			expr := expand(tg.Expr)
			require.NotContains(t, expr, "$", "%s: unexpanded variable in %q", p.Title, expr)
			_, err := full.ParseExpr(expr)
			require.NoError(t, err, "%s: %q", p.Title, expr)
			switch p.Datasource.UID {
			case "${scaler}":
				scalerPanels++
				assert.True(t, tg.Instant, "%s: the scaler serves instant queries only", p.Title)
				_, err := engine.Query(expr, query.Options{})
				require.NoError(t, err, "%s: the scaler's engine must compile %q", p.Title, expr)
			case "${prometheus}":
				selfPanels++
				assert.Contains(t, expr, "keda_otel_scaler_", "%s: self-metric panels read the scaler's own metrics", p.Title)
			default:
				t.Errorf("%s: unknown data source %q", p.Title, p.Datasource.UID)
			}
		}
	}
	assert.GreaterOrEqual(t, scalerPanels, 8)
	assert.GreaterOrEqual(t, selfPanels, 6)
}

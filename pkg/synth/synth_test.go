package synth

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// TestRequestDecodes checks that payloads decode with pdata, hold the
// promised points, and that SetTime rewrites every point's time.
func TestRequestDecodes(t *testing.T) {
	t.Parallel()
	for _, hist := range []bool{false, true} {
		c := Config{Seed: 1, Series: 2500, Histogram: hist}
		ps := c.Cover(1_000_000_000)
		require.Len(t, ps, 3)
		total := 0
		for _, p := range ps {
			p.SetTime(2_000_000_000)
			er := pmetricotlp.NewExportRequest()
			require.NoError(t, er.UnmarshalProto(p.Bytes))
			md := er.Metrics()
			assert.Equal(t, p.Points, md.DataPointCount())
			assert.Len(t, p.TimeOffsets, p.Points)
			rm := md.ResourceMetrics().At(0)
			assert.Equal(t, len(ResourceAttrs), rm.Resource().Attributes().Len())
			ms := rm.ScopeMetrics().At(0).Metrics()
			for i := range ms.Len() {
				m := ms.At(i)
				if hist {
					require.Equal(t, pmetric.MetricTypeHistogram, m.Type())
					dp := m.Histogram().DataPoints().At(0)
					assert.Equal(t, uint64(2_000_000_000), uint64(dp.Timestamp()))
					assert.Equal(t, 11, dp.BucketCounts().Len())
				} else {
					require.Equal(t, pmetric.MetricTypeSum, m.Type())
					for j := range m.Sum().DataPoints().Len() {
						dp := m.Sum().DataPoints().At(j)
						assert.Equal(t, uint64(2_000_000_000), uint64(dp.Timestamp()))
						assert.Equal(t, 3, dp.Attributes().Len())
					}
				}
			}
			total += p.Points
		}
		assert.Equal(t, 2500, total)
	}
	sc := Config{Seed: 2, Series: 1_000_000}.Scattered(2, 1)
	require.Len(t, sc, 2)
	assert.Equal(t, 1000, sc[0].Points)
	assert.Equal(t, Config{Seed: 2, Series: 1_000_000}.Scattered(2, 1)[1].Bytes, sc[1].Bytes, "deterministic")
}

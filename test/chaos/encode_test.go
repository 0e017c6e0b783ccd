package chaos

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestTemplateDecodes: the suite's hand-encoded Exports, re-stamped in
// place, decode with pdata to exactly the points intended.
func TestTemplateDecodes(t *testing.T) {
	e := newExporter(3, "grpc", 25, 10, time.Second, nil)
	require.Len(t, e.tmpl, 3)
	tm := &e.tmpl[1]
	for i := range tm.timeOff {
		tm.set(i, 1_700_000_000_123+int64(i), sampleValue(3, e.blockSeries(1, i), 7))
	}
	req := pmetricotlp.NewExportRequest()
	require.NoError(t, req.UnmarshalProto(tm.body))
	rm := req.Metrics().ResourceMetrics()
	require.Equal(t, 1, rm.Len())
	inst, _ := rm.At(0).Resource().Attributes().Get("service.instance.id")
	assert.Equal(t, "e3", inst.Str())
	m := rm.At(0).ScopeMetrics().At(0).Metrics().At(0)
	assert.Equal(t, "chaos_ingest", m.Name())
	dps := m.Gauge().DataPoints()
	require.Equal(t, 10, dps.Len())
	for i := range dps.Len() {
		dp := dps.At(i)
		s, _ := dp.Attributes().Get("series")
		assert.Equal(t, itoa(10+i), s.Str())
		assert.Equal(t, uint64(1_700_000_000_123+int64(i))*1e6, uint64(dp.Timestamp()))
		assert.Equal(t, math.Float64bits(sampleValue(3, 10+i, 7)), math.Float64bits(dp.DoubleValue()))
	}
	last, _ := e.tmpl[2].timeOff, 0
	assert.Len(t, last, 5, "the last block holds the remainder")
}

// TestParseExportResponse reads partial_success as the server encodes it.
func TestParseExportResponse(t *testing.T) {
	resp := pmetricotlp.NewExportResponse()
	resp.PartialSuccess().SetRejectedDataPoints(17)
	resp.PartialSuccess().SetErrorMessage("series limit")
	b, err := resp.MarshalProto()
	require.NoError(t, err)
	n, msg, err := parseExportResponse(b)
	require.NoError(t, err)
	assert.Equal(t, int64(17), n)
	assert.Equal(t, "series limit", msg)
	n, msg, err = parseExportResponse(nil)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Empty(t, msg)
	_, _, err = parseExportResponse(protowire.AppendTag(nil, 1, protowire.BytesType))
	require.Error(t, err)
}

// TestParseMatrix reads pkg/promapi's matrix encoding exactly and refuses
// anything else.
func TestParseMatrix(t *testing.T) {
	got, err := parseMatrix([]byte(`{"status":"success","data":{"resultType":"matrix","result":[` +
		`{"metric":{"__name__":"x","a":"1"},"values":[[1700000000.5,"0.3333333333333333"],[1700000001,"2"],[1700000001.007,"-1e-07"],[1700000001.010,"3"]]},` +
		`{"metric":{"b":"2"},"values":[]}]}}`))
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, map[string]string{"__name__": "x", "a": "1"}, got[0].labels)
	assert.Equal(t, []int64{1_700_000_000_500, 1_700_000_001_000, 1_700_000_001_007, 1_700_000_001_010}, got[0].ts)
	assert.Equal(t, []float64{1.0 / 3, 2, -1e-7, 3}, got[0].vs)
	assert.Empty(t, got[1].ts)
	for _, bad := range []string{
		`{"status":"success","data":{"resultType":"vector","result":[]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"values":[],"metric":{}}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1.5,1]]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1.5001,"1"]]}]}}`,
	} {
		_, err := parseMatrix([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

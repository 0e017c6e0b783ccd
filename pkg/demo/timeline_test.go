package demo

import (
	"bytes"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireWellFormedXML decodes every token; the decoder rejects
// mismatched tags, bad entities and stray '<' or '&'.
func requireWellFormedXML(t *testing.T, b []byte) (root string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return root
		}
		require.NoError(t, err, "SVG must be well-formed XML")
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
}

func requireSVGFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "svg", requireWellFormedXML(t, b))
	assert.Contains(t, string(b), "<polyline", "the SVG has data lines")
}

func requirePNGFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	require.NoError(t, err, "PNG must decode with image/png")
	assert.Equal(t, tlWidth, img.Bounds().Dx())
	assert.Greater(t, img.Bounds().Dy(), 400)
}

func syntheticResult() *Result {
	r := &Result{Profile: Profiles["spike"], SimEnd: 600}
	for i := range 301 {
		t := float64(i * 2)
		s := Sample{T: t, Load: r.Profile.Rate(t / 600), Desired: i / 60, Ready: max(i/60-1, 0), KV: math.NaN(), TTFTp90: math.NaN()}
		if i > 20 {
			s.TTFTp90 = 0.1 * float64(i%7)
			s.Waiting = i % 13
		}
		r.Samples = append(r.Samples, s)
	}
	r.Events = []Event{{T: 31, Source: "push", From: 0, To: 1}, {T: 200, Source: "hpa", From: 1, To: 4}}
	return r
}

func TestTimelineRendersWellFormedSVGAndPNG(t *testing.T) {
	t.Parallel()
	o := Options{Query: `sum(x{a="<b>&'c'"})`, Target: "12", MetricType: AverageValue}
	tl := timelineOf(syntheticResult(), o)
	svg, err := tl.SVG()
	require.NoError(t, err)
	assert.Equal(t, "svg", requireWellFormedXML(t, svg))
	assert.Contains(t, string(svg), "&lt;b&gt;&amp;", "query text is escaped")
	assert.Equal(t, 6, strings.Count(string(svg), "<polyline")-countGaps(tl), "one polyline per series, split only at gaps")

	raw, err := tl.PNG()
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	assert.Equal(t, tlWidth, img.Bounds().Dx())
	assert.Equal(t, tl.height(), img.Bounds().Dy())
	// The ready line is drawn in its colour somewhere in the replicas panel.
	found := false
	top := int(tl.panelTop(3))
	for y := top; y < top+tlPanelH && !found; y++ {
		for x := tlLeft; x < tlWidth-tlRight; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if uint8(r>>8) == colReady.R && uint8(g>>8) == colReady.G && uint8(b>>8) == colReady.B {
				found = true
				break
			}
		}
	}
	assert.True(t, found, "the PNG draws the replicas line")
}

// countGaps counts the extra polylines caused by NaN gaps.
func countGaps(tl *timeline) int {
	n := 0
	for i, p := range tl.panels {
		for _, s := range p.series {
			n += len(tl.polyline(i, s)) - 1
		}
	}
	return n
}

func TestNiceCeil(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want float64 }{{0, 1}, {0.3, 0.5}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {16, 20}, {228, 500}} {
		assert.InDelta(t, tc.want, niceCeil(tc.in), 1e-9, "niceCeil(%g)", tc.in)
	}
}

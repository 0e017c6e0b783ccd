package demo

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
)

// The timeline is one model drawn twice: as SVG text and, with the same
// geometry, into an image.RGBA encoded as PNG.

type point struct{ x, y float64 } // x in simulated seconds; y NaN = gap

type series struct {
	name   string
	color  color.RGBA
	points []point
	step   bool // draw as a step function (replica counts)
	dashed bool
}

type panel struct {
	title  string
	ymax   float64
	series []series
}

type band struct {
	from, to float64
	name     string
	shaded   bool
}

type mark struct {
	x     float64
	label string
	color color.RGBA
}

type timeline struct {
	title     string
	subtitles []string
	xmax      float64
	panels    []panel
	bands     []band
	marks     []mark
}

var (
	colLoad    = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	colQueue   = color.RGBA{0xff, 0x7f, 0x0e, 0xff}
	colPending = color.RGBA{0x94, 0x67, 0xbd, 0xff}
	colTTFT    = color.RGBA{0xd6, 0x27, 0x28, 0xff}
	colDesired = color.RGBA{0x33, 0x33, 0x33, 0xff}
	colReady   = color.RGBA{0x2c, 0xa0, 0x2c, 0xff}
	colPush    = color.RGBA{0x94, 0x67, 0xbd, 0xff}
	colGrid    = color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	colAxis    = color.RGBA{0x66, 0x66, 0x66, 0xff}
	colText    = color.RGBA{0x22, 0x22, 0x22, 0xff}
	colBand    = color.RGBA{0xf3, 0xf3, 0xf3, 0xff}
	colWhite   = color.RGBA{0xff, 0xff, 0xff, 0xff}
)

func timelineOf(r *Result, o Options) *timeline {
	tl := &timeline{
		title: fmt.Sprintf("keda-otel-scaler demo: %s profile, %s simulated", r.Profile.Name, clock(r.SimEnd)),
		subtitles: []string{
			fmt.Sprintf("scaling trigger (%s, target %s per replica): %s", o.MetricType, o.Target, o.Query),
			"activation from zero: external-push trigger on " + GatewayQuery,
		},
		xmax: r.SimEnd,
	}
	for i, ph := range r.Profile.Phases {
		tl.bands = append(tl.bands, band{ph.Start * r.SimEnd, min(ph.End, 1) * r.SimEnd, ph.Name, i%2 == 1})
	}
	for _, e := range r.Events {
		if e.Source == "push" {
			tl.marks = append(tl.marks, mark{e.T, "push", colPush})
		}
	}
	mk := func(name string, c color.RGBA, f func(Sample) float64) series {
		s := series{name: name, color: c}
		for _, smp := range r.Samples {
			s.points = append(s.points, point{smp.T, f(smp)})
		}
		return s
	}
	load := mk("offered", colLoad, func(s Sample) float64 { return s.Load })
	queue := mk("gateway + pods", colQueue, func(s Sample) float64 { return float64(s.Queue()) })
	pending := mk("at the gateway", colPending, func(s Sample) float64 { return float64(s.Pending) })
	pending.dashed = true
	ttft := mk("p90 over 30 s", colTTFT, func(s Sample) float64 { return s.TTFTp90 })
	desired := mk("desired", colDesired, func(s Sample) float64 { return float64(s.Desired) })
	desired.step = true
	desired.dashed = true
	ready := mk("ready", colReady, func(s Sample) float64 { return float64(s.Ready) })
	ready.step = true
	tl.panels = []panel{
		{title: "offered load (req/s)", series: []series{load}},
		{title: "queue depth (requests)", series: []series{queue, pending}},
		{title: "time to first token, p90 (s)", series: []series{ttft}},
		{title: "replicas", series: []series{desired, ready}},
	}
	for i := range tl.panels {
		m := 1.0
		for _, s := range tl.panels[i].series {
			for _, p := range s.points {
				if !math.IsNaN(p.y) {
					m = max(m, p.y)
				}
			}
		}
		tl.panels[i].ymax = niceCeil(m)
	}
	return tl
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// Geometry shared by both renderers (pixels).
const (
	tlWidth    = 1000
	tlLeft     = 70
	tlRight    = 170 // room for the legend
	tlTop      = 84
	tlPanelH   = 130
	tlPanelGap = 34
	tlBottom   = 12
)

func (tl *timeline) height() int {
	return tlTop + len(tl.panels)*(tlPanelH+tlPanelGap) + tlBottom
}

func (tl *timeline) px(x float64) float64 {
	return tlLeft + x/tl.xmax*float64(tlWidth-tlLeft-tlRight)
}

func (tl *timeline) panelTop(i int) float64 { return float64(tlTop + i*(tlPanelH+tlPanelGap)) }

func (tl *timeline) py(i int, y float64) float64 {
	return tl.panelTop(i) + tlPanelH - y/tl.panels[i].ymax*tlPanelH
}

// xTicks returns tick positions every 1, 2 or 5 simulated minutes.
func (tl *timeline) xTicks() []float64 {
	step := niceCeil(tl.xmax/60/8) * 60
	var out []float64
	for x := 0.0; x <= tl.xmax+1e-9; x += step {
		out = append(out, x)
	}
	return out
}

// polyline returns the screen points of s in panel i, split at gaps.
func (tl *timeline) polyline(i int, s series) [][]point {
	var out [][]point
	var cur []point
	for k, p := range s.points {
		if math.IsNaN(p.y) {
			if len(cur) > 0 {
				out = append(out, cur)
				cur = nil
			}
			continue
		}
		x, y := tl.px(p.x), tl.py(i, min(p.y, tl.panels[i].ymax))
		if s.step && len(cur) > 0 && k > 0 {
			cur = append(cur, point{x, cur[len(cur)-1].y})
		}
		cur = append(cur, point{x, y})
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func hex(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func xmlEscape(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// SVG renders the timeline as a standalone SVG document.
func (tl *timeline) SVG() ([]byte, error) {
	var b strings.Builder
	h := tl.height()
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", tlWidth, h, tlWidth, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold" fill="%s">%s</text>`+"\n", tlLeft, hex(colText), xmlEscape(tl.title))
	for i, s := range tl.subtitles {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="%s">%s</text>`+"\n", tlLeft, 40+14*i, hex(colAxis), xmlEscape(s))
	}
	for i, p := range tl.panels {
		top := tl.panelTop(i)
		for _, bd := range tl.bands {
			if !bd.shaded {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", tl.px(bd.from), top, tl.px(bd.to)-tl.px(bd.from), tlPanelH, hex(colBand))
		}
		for _, f := range []float64{0, 0.5, 1} {
			y := tl.py(i, f*p.ymax)
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", tlLeft, y, tlWidth-tlRight, y, hex(colGrid))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="%s">%s</text>`+"\n", tlLeft-6, y+4, hex(colAxis), fmtNum(f*p.ymax))
		}
		for _, x := range tl.xTicks() {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", tl.px(x), top, tl.px(x), top+tlPanelH, hex(colGrid))
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-weight="bold" fill="%s">%s</text>`+"\n", tlLeft, top-6, hex(colText), xmlEscape(p.title))
		for _, m := range tl.marks {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="2,3"/>`+"\n", tl.px(m.x), top, tl.px(m.x), top+tlPanelH, hex(m.color))
			if i == len(tl.panels)-1 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="%s">%s</text>`+"\n", tl.px(m.x)+3, top+12, hex(m.color), xmlEscape(m.label))
			}
		}
		for si, s := range p.series {
			dash := ""
			if s.dashed {
				dash = ` stroke-dasharray="6,3"`
			}
			for _, line := range tl.polyline(i, s) {
				var pts []string
				for _, q := range line {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", q.x, q.y))
				}
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", hex(s.color), dash, strings.Join(pts, " "))
			}
			ly := top + 14 + float64(si)*16
			lx := tlWidth - tlRight + 12
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly-4, lx+18, ly-4, hex(s.color), dash)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" fill="%s">%s</text>`+"\n", lx+24, ly, hex(colText), xmlEscape(s.name))
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", tlLeft, top, tlWidth-tlLeft-tlRight, tlPanelH, hex(colAxis))
	}
	last := len(tl.panels) - 1
	for _, bd := range tl.bands {
		if bd.name != "" {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="%s">%s</text>`+"\n", (tl.px(bd.from)+tl.px(bd.to))/2, tl.panelTop(0)+12, hex(colAxis), xmlEscape(bd.name))
		}
	}
	base := tl.panelTop(last) + tlPanelH
	for _, x := range tl.xTicks() {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="%s">%s</text>`+"\n", tl.px(x), base+16, hex(colAxis), clock(x))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="middle" fill="%s">simulated time (m:ss)</text>`+"\n", (tlWidth-tlRight+tlLeft)/2, base+32, hex(colAxis))
	b.WriteString("</svg>\n")
	return []byte(b.String()), nil
}

// canvas draws into an RGBA image.
type canvas struct{ img *image.RGBA }

func (c canvas) set(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.img.Rect) {
		c.img.SetRGBA(x, y, col)
	}
}

func (c canvas) rect(x0, y0, x1, y1 int, col color.RGBA) {
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			c.set(x, y, col)
		}
	}
}

// line draws a line of the given width (1 or 2) with Bresenham's
// algorithm; dash > 0 draws dash pixels on, dash/2 off.
func (c canvas) line(p, q point, col color.RGBA, width, dash int) {
	x0, y0, x1, y1 := int(math.Round(p.x)), int(math.Round(p.y)), int(math.Round(q.x)), int(math.Round(q.y))
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for n := 0; ; n++ {
		if dash == 0 || n%(dash+dash/2) < dash {
			for w := range width {
				c.set(x0+w, y0, col)
				c.set(x0, y0+w, col)
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// text draws s with the 5×7 font at scale, top-left at (x, y); align is
// 0 left, 1 centre, 2 right.
func (c canvas) text(x, y int, s string, col color.RGBA, scale, align int) {
	w := len([]rune(s)) * glyphWidth * scale
	switch align {
	case 1:
		x -= w / 2
	case 2:
		x -= w
	}
	for _, r := range s {
		if g, ok := glyph(r); ok {
			for gy, row := range g {
				for gx, bit := range row {
					if bit == '#' {
						c.rect(x+gx*scale, y+gy*scale, x+(gx+1)*scale, y+(gy+1)*scale, col)
					}
				}
			}
		}
		x += glyphWidth * scale
	}
}

// PNG renders the same timeline into a PNG image.
func (tl *timeline) PNG() ([]byte, error) {
	h := tl.height()
	c := canvas{image.NewRGBA(image.Rect(0, 0, tlWidth, h))}
	c.rect(0, 0, tlWidth, h, colWhite)
	c.text(tlLeft, 10, tl.title, colText, 2, 0)
	for i, s := range tl.subtitles {
		c.text(tlLeft, 34+12*i, s, colAxis, 1, 0)
	}
	right := tlWidth - tlRight
	for i, p := range tl.panels {
		top := int(tl.panelTop(i))
		for _, bd := range tl.bands {
			if bd.shaded {
				c.rect(int(tl.px(bd.from)), top, int(tl.px(bd.to)), top+tlPanelH, colBand)
			}
		}
		for _, f := range []float64{0, 0.5, 1} {
			y := tl.py(i, f*p.ymax)
			c.line(point{tlLeft, y}, point{float64(right), y}, colGrid, 1, 0)
			c.text(tlLeft-6, int(y)-3, fmtNum(f*p.ymax), colAxis, 1, 2)
		}
		for _, x := range tl.xTicks() {
			c.line(point{tl.px(x), float64(top)}, point{tl.px(x), float64(top + tlPanelH)}, colGrid, 1, 0)
		}
		c.text(tlLeft, top-12, p.title, colText, 1, 0)
		for _, m := range tl.marks {
			c.line(point{tl.px(m.x), float64(top)}, point{tl.px(m.x), float64(top + tlPanelH)}, m.color, 1, 2)
			if i == len(tl.panels)-1 {
				c.text(int(tl.px(m.x))+3, top+4, m.label, m.color, 1, 0)
			}
		}
		for si, s := range p.series {
			dash := 0
			if s.dashed {
				dash = 6
			}
			for _, ln := range tl.polyline(i, s) {
				for k := 1; k < len(ln); k++ {
					c.line(ln[k-1], ln[k], s.color, 2, dash)
				}
				if len(ln) == 1 {
					c.rect(int(ln[0].x)-1, int(ln[0].y)-1, int(ln[0].x)+1, int(ln[0].y)+1, s.color)
				}
			}
			ly := float64(top + 10 + si*16)
			lx := float64(right + 12)
			c.line(point{lx, ly}, point{lx + 18, ly}, s.color, 2, dash)
			c.text(int(lx)+24, int(ly)-3, s.name, colText, 1, 0)
		}
		c.line(point{tlLeft, float64(top)}, point{float64(right), float64(top)}, colAxis, 1, 0)
		c.line(point{tlLeft, float64(top + tlPanelH)}, point{float64(right), float64(top + tlPanelH)}, colAxis, 1, 0)
		c.line(point{tlLeft, float64(top)}, point{tlLeft, float64(top + tlPanelH)}, colAxis, 1, 0)
		c.line(point{float64(right), float64(top)}, point{float64(right), float64(top + tlPanelH)}, colAxis, 1, 0)
	}
	for _, bd := range tl.bands {
		if bd.name != "" {
			c.text(int((tl.px(bd.from)+tl.px(bd.to))/2), int(tl.panelTop(0))+4, bd.name, colAxis, 1, 1)
		}
	}
	base := int(tl.panelTop(len(tl.panels)-1)) + tlPanelH
	for _, x := range tl.xTicks() {
		c.text(int(tl.px(x)), base+8, clock(x), colAxis, 1, 1)
	}
	c.text((right+tlLeft)/2, base+24, "simulated time (m:ss)", colAxis, 1, 1)
	var buf bytes.Buffer
	if err := png.Encode(&buf, c.img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

package demo

import (
	"fmt"
	"math"
	"strings"
)

// Phase is one part of a load profile, over a fraction of the run.
type Phase struct {
	Name       string
	Start, End float64 // fractions of the run, Start inclusive
	// Rate returns the offered load in requests per simulated second at
	// fraction f of the run (Start <= f < End).
	Rate func(f float64) float64
}

// Profile is a named load shape. Every profile starts and ends idle, so a
// run shows activation from zero and the cooldown back to zero.
type Profile struct {
	Name   string
	Phases []Phase
}

// Rate returns the offered load at fraction f of the run.
func (p Profile) Rate(f float64) float64 {
	if ph, ok := p.PhaseAt(f); ok {
		return max(ph.Rate(f), 0)
	}
	return 0
}

// PhaseAt returns the phase containing fraction f.
func (p Profile) PhaseAt(f float64) (Phase, bool) {
	for _, ph := range p.Phases {
		if f >= ph.Start && f < ph.End {
			return ph, true
		}
	}
	return Phase{}, false
}

const (
	baseRate = 3.0  // req/s: comfortably one pod
	peakRate = 16.0 // req/s: about five pods
)

func constant(v float64) func(float64) float64 { return func(float64) float64 { return v } }

// linear goes from a at fraction f0 to b at f1.
func linear(f0, f1, a, b float64) func(float64) float64 {
	return func(f float64) float64 { return a + (b-a)*(f-f0)/(f1-f0) }
}

// Profiles lists the built-in load profiles by name.
var Profiles = map[string]Profile{
	"spike": {Name: "spike", Phases: []Phase{
		{"idle", 0, 0.05, constant(0)},
		{"base", 0.05, 0.25, constant(baseRate)},
		{"spike", 0.25, 0.50, constant(peakRate)},
		{"after", 0.50, 0.75, constant(baseRate)},
		{"idle", 0.75, 1.01, constant(0)},
	}},
	"ramp": {Name: "ramp", Phases: []Phase{
		{"idle", 0, 0.05, constant(0)},
		{"ramp-up", 0.05, 0.40, linear(0.05, 0.40, 1, peakRate+2)},
		{"peak", 0.40, 0.50, constant(peakRate + 2)},
		{"ramp-down", 0.50, 0.75, linear(0.50, 0.75, peakRate+2, 1)},
		{"idle", 0.75, 1.01, constant(0)},
	}},
	"diurnal": {Name: "diurnal", Phases: []Phase{
		{"night", 0, 0.05, constant(0)},
		{"morning", 0.05, 0.30, diurnal},
		{"midday", 0.30, 0.55, diurnal},
		{"evening", 0.55, 0.75, diurnal},
		{"night", 0.75, 1.01, constant(0)},
	}},
}

// diurnal is one day compressed into [0.05, 0.75): a sin² hump from 1 to
// 15 req/s with a short lunch dip.
func diurnal(f float64) float64 {
	x := (f - 0.05) / 0.70
	v := 1 + (peakRate-2)*math.Pow(math.Sin(math.Pi*x), 2)
	if x > 0.45 && x < 0.52 {
		v *= 0.7
	}
	return v
}

// ProfileByName returns the named profile or an error listing the choices.
func ProfileByName(name string) (Profile, error) {
	if p, ok := Profiles[name]; ok {
		return p, nil
	}
	return Profile{}, fmt.Errorf("unknown profile %q (want %s)", name, strings.Join(ProfileNames(), ", "))
}

// ProfileNames returns the built-in profile names in display order.
func ProfileNames() []string { return []string{"spike", "ramp", "diurnal"} }

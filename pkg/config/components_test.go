package config

import (
	"bytes"
	"flag"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/promapi"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// sameSetFields requires every field that got sets (non-zero) to equal
// want's field of the same name: a component config converted from
// Default carries the component's own defaults. Fields the conversion
// leaves zero take the component's default in its New.
func sameSetFields(t *testing.T, want, got any) {
	t.Helper()
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if gv.Field(i).IsZero() {
			continue
		}
		assert.Equal(t, wv.FieldByName(f.Name).Interface(), gv.Field(i).Interface(), "%s.%s", gv.Type(), f.Name)
	}
}

func assertComponentDefaults(t *testing.T, c Config) {
	t.Helper()
	sameSetFields(t, store.DefaultConfig(), c.StoreConfig())
	sameSetFields(t, receiver.DefaultConfig(), c.ReceiverConfig())
	sameSetFields(t, scaler.DefaultConfig(), c.ScalerConfig())
	sameSetFields(t, promapi.DefaultConfig(), c.PromAPIConfig())
	assert.Equal(t, int64(query.DefaultMaxLabelBytes), c.QueryOptions().MaxLabelBytes)
	assert.False(t, c.ReceiverConfig().IngestDelta, "the receiver's default: delta points are rejected")
}

// TestDefaultsAreTheComponents: Default holds each component's own
// defaults, so a component built from the flags' defaults behaves as one
// built from a zero config.
func TestDefaultsAreTheComponents(t *testing.T) {
	assertComponentDefaults(t, Default())
}

// helpFlag matches one flag of --help's output: its name, then its usage
// lines, the last ending in "(default X)" unless the default is the zero
// value.
var helpFlag = regexp.MustCompile(`(?m)^  -(\S+)[^\n]*\n((?:    \t[^\n]*\n)+)`)

// TestHelpShowsComponentDefaults reads back the defaults --help prints:
// set on a zero Config they give Default exactly, and so the
// components' defaults.
func TestHelpShowsComponentDefaults(t *testing.T) {
	var help bytes.Buffer
	_, err := Load("t", []string{"--help"}, func(string) string { return "" }, &help)
	require.ErrorIs(t, err, flag.ErrHelp)
	var c Config
	fs := NewFlagSet("t", &c, &bytes.Buffer{})
	seen := 0
	for _, m := range helpFlag.FindAllStringSubmatch(help.String(), -1) {
		seen++
		usage := strings.TrimSpace(m[2])
		i := strings.LastIndex(usage, " (default ")
		if i < 0 || !strings.HasSuffix(usage, ")") {
			continue // the zero value
		}
		v := usage[i+len(" (default ") : len(usage)-1]
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		require.NoError(t, fs.Set(m[1], v), m[1])
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	require.Equal(t, n, seen, "every flag is in the help")
	assert.Equal(t, Default(), c)
	assertComponentDefaults(t, c)
}

// TestComponentConfigsCarryEveryField sets every field of the component
// sections to a distinct value and requires each to arrive, under its own
// name, in one of the component configs its section feeds. A field added
// to a section but not to a conversion fails here.
func TestComponentConfigsCarryEveryField(t *testing.T) {
	var c Config
	n := 0
	for _, sec := range []reflect.Value{
		reflect.ValueOf(&c.Receiver).Elem(), reflect.ValueOf(&c.Store).Elem(),
		reflect.ValueOf(&c.Scaler).Elem(), reflect.ValueOf(&c.Query).Elem(),
	} {
		for i := range sec.NumField() {
			n++
			setDistinct(t, sec.Field(i), n)
		}
	}
	c.Receiver.Delta = "ingest"
	// Not component fields: pkg/server wraps both OTLP transports with the
	// token check (tls.go) and builds the receiver's Filter from the allow
	// list and --lazy-ingest (lazy.go); Delta is checked below. The
	// --ready-peers gate is the server's (peers.go): the scaler only gets
	// its CatchUp hook.
	notCarried := map[string]bool{
		"Receiver.BearerTokenFile": true, "Receiver.MetricAllowList": true, "Receiver.LazyIngest": true,
		"Receiver.Delta": true, "Scaler.ReadyPeers": true, "Scaler.ReadyPeersTimeout": true, "Scaler.ReadyPeersTLS": true,
	}
	assert.True(t, c.ReceiverConfig().IngestDelta, "Receiver.Delta ingest")
	for _, s := range []struct {
		name  string
		sec   any
		comps []any
	}{
		{"Receiver", c.Receiver, []any{c.ReceiverConfig(), c.StoreConfig()}},
		{"Store", c.Store, []any{c.StoreConfig()}},
		{"Scaler", c.Scaler, []any{c.ScalerConfig()}},
		{"Query", c.Query, []any{c.PromAPIConfig(), c.QueryOptions(), c.ScalerConfig()}},
	} {
		sv := reflect.ValueOf(s.sec)
		for i := range sv.NumField() {
			name := sv.Type().Field(i).Name
			if notCarried[s.name+"."+name] {
				continue
			}
			// A component may have an unrelated field of the same name
			// (scaler.Config.MaxSamples is per evaluation, Query.MaxSamples
			// per API answer): one component carrying the value is enough.
			carried := false
			for _, comp := range s.comps {
				f := reflect.ValueOf(comp).FieldByName(name)
				carried = carried || f.IsValid() && reflect.DeepEqual(f.Interface(), sv.Field(i).Interface())
			}
			assert.True(t, carried, "config %s.%s = %v reaches no component config: add it to the conversion in components.go", s.name, name, sv.Field(i).Interface())
		}
	}
}

// setDistinct sets v to a non-zero value derived from n.
func setDistinct(t *testing.T, v reflect.Value, n int) {
	t.Helper()
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		if v.Type() == reflect.TypeFor[time.Duration]() {
			v.SetInt(int64(time.Duration(n) * time.Second))
		} else {
			v.SetInt(int64(1000 + n))
		}
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		v.Set(reflect.ValueOf([]string{fmt.Sprintf("s%d", n)}))
	case reflect.Struct:
		for i := range v.NumField() {
			setDistinct(t, v.Field(i), 100*n+i)
		}
	default:
		t.Fatalf("setDistinct: add a case for %s", v.Type())
	}
}

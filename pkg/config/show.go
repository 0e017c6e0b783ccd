package config

import (
	"flag"
	"io"
)

// FlagValue is one flag and its value in a Config.
type FlagValue struct {
	Name, Value string
}

// Flags returns every flag with its value in c, in the order --help lists
// them, for the status page. Values are not redacted: the caller decides
// what to show.
func Flags(c Config) []FlagValue {
	var out []FlagValue
	NewFlagSet("keda-otel-scaler", &c, io.Discard).VisitAll(func(f *flag.Flag) {
		out = append(out, FlagValue{Name: f.Name, Value: f.Value.String()})
	})
	return out
}

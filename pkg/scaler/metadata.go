package scaler

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrBadMetadata matches every trigger-metadata validation error.
var ErrBadMetadata = errors.New("invalid trigger metadata")

// metadataError names the ScaledObject, the key, the value and the fix.
type metadataError struct {
	namespace, name string
	key, value      string
	problem         string
}

func (e *metadataError) Error() string {
	return fmt.Sprintf("ScaledObject %s/%s: trigger metadata %s %s: %s", e.namespace, e.name, e.key, quoteClipped(e.value), e.problem)
}

func (e *metadataError) Is(target error) bool { return target == ErrBadMetadata }

// clipLength is how much of an over-long value an error message shows.
const clipLength = 128

// clip shortens v for an error message, on a UTF-8 boundary.
func clip(v string) string {
	if len(v) <= clipLength {
		return v
	}
	n := clipLength
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n] + "…"
}

// quoteClipped quotes v for an error message, once: clipped, with its
// length stated, when it is longer than clipLength.
func quoteClipped(v string) string {
	if len(v) <= clipLength {
		return strconv.Quote(v)
	}
	return strconv.Quote(clip(v)) + " (" + itoa(len(v)) + " bytes)"
}

func itoa(n int) string { return strconv.Itoa(n) }

// settingKeys are the trigger settings the scaler reads, in the order of
// docs/interfaces.md, each with its alias; metaKeys lists the same keys
// flat, for the cache (TestSettingKeysAreMetaKeys).
var settingKeys = [...]struct{ key, alias string }{
	{"metricQuery", "query"},
	{"targetValue", "threshold"},
	{"activationThreshold", "activationTargetValue"},
	{"operationOverTime", ""},
	{"window", ""},
	{"lookbackDelta", ""},
	{"clampMin", ""},
	{"clampMax", ""},
	{"ignoreNullValues", ""},
	{"valueIfEmpty", ""},
}

// kedaKeys are the trigger keys KEDA itself reads (docs/interfaces.md);
// they reach the scaler in the metadata, which ignores them.
var kedaKeys = map[string]bool{
	"scalerAddress": true, "enableTLS": true, "unsafeSsl": true,
	"caCert": true, "tlsClientCert": true, "tlsClientKey": true,
}

// lookup returns the first present, non-empty value of key, keyFromEnv,
// alias, aliasFromEnv (trimmed) and the metadata key it came from. conflict
// is set when the value came from key's side and alias's side holds a
// different value: the key wins, and the caller warns once per trigger.
func lookup(md map[string]string, key, alias string) (val, from string, ok bool, conflict string) {
	get := func(k string) (string, string, bool) {
		for _, kk := range [2]string{k, k + "FromEnv"} {
			if v := strings.TrimSpace(md[kk]); v != "" {
				return v, kk, true
			}
		}
		return "", "", false
	}
	val, from, ok = get(key)
	if alias == "" {
		return val, from, ok, ""
	}
	av, afrom, aok := get(alias)
	switch {
	case !ok:
		return av, afrom, aok, ""
	case aok && av != val:
		return val, from, true, afrom
	}
	return val, from, true, ""
}

// parseNumber accepts Go float syntax ("4", "4.000000", ".5", "1e3") and
// Kubernetes quantities ("600m", "2k", "1Ki"); NaN and ±Inf are rejected.
func parseNumber(s string) (float64, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, errors.New("must be a finite number")
		}
		return f, nil
	}
	if f, ok := parseQuantity(s); ok {
		return f, nil
	}
	return 0, errors.New("must be a number (4, 0.5, 1e3) or a Kubernetes quantity (600m, 2k, 1Ki)")
}

// quantitySuffixes are the Kubernetes quantity suffixes; the exponent forms
// (1e3) are already covered by ParseFloat.
var quantitySuffixes = []struct {
	suffix string
	mult   float64
}{
	{"Ki", 1 << 10},
	{"Mi", 1 << 20},
	{"Gi", 1 << 30},
	{"Ti", 1 << 40},
	{"Pi", 1 << 50},
	{"Ei", 1 << 60},
	{"n", 1e-9},
	{"u", 1e-6},
	{"m", 1e-3},
	{"k", 1e3},
	{"M", 1e6},
	{"G", 1e9},
	{"T", 1e12},
	{"P", 1e15},
	{"E", 1e18},
}

// parseQuantity parses a Kubernetes quantity with a suffix ("600m", "2k",
// "1Ki"): a plain decimal number (sign, digits, optional fraction) and one
// suffix.
func parseQuantity(s string) (float64, bool) {
	for _, q := range quantitySuffixes {
		num, ok := strings.CutSuffix(s, q.suffix)
		if !ok || num == "" || strings.ContainsAny(num, "eEnNiIxXpP_") {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, false
		}
		return f * q.mult, true
	}
	return 0, false
}

// metricName is lower(namespace-name) restricted to [a-z0-9.-], at most 200
// characters (keda-contract.md §4).
func metricName(namespace, name string) string {
	var n string
	switch {
	case namespace != "" && name != "":
		n = namespace + "-" + name
	case namespace != "":
		n = namespace
	case name != "":
		n = name
	default:
		n = "keda-otel-scaler"
	}
	b := []byte(strings.ToLower(n))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '-' {
			b[i] = '-'
		}
	}
	n = string(b)
	if len(n) > 200 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(n))
		n = fmt.Sprintf("%s-%08x", n[:191], h.Sum32())
	}
	return n
}

package receiver

// Legacy aliases (otlp-contract.md §5): each metric is also indexed under
// its raw OTLP name with "." and "/" turned into "_" (plus _count and _sum
// for histogram-like types) when that differs from the stored name, for
// triggers written against kedify/otel-add-on. The store resolves them in
// Select (store.AddAlias); the receiver registers them when it first
// translates a name and reports the alias's metric ID to OnIngest with the
// stored name's, so push subscriptions of alias-named triggers fire.

// legacyName returns the raw OTLP name with "." and "/" replaced by "_".
func legacyName(raw []byte) string {
	out := []byte(string(raw))
	for i, c := range out {
		if c == '.' || c == '/' {
			out[i] = '_'
		}
	}
	return string(out)
}

// registerAliases registers the legacy aliases of a freshly translated
// name in the store and records their metric IDs in e. It runs on a name
// cache miss only.
func (b *batch) registerAliases(e *nameEntry, raw []byte, k kind) {
	e.aliasEpoch = b.st.AliasEpoch() // before registering: see nameEntry
	base := legacyName(raw)
	switch k {
	case kindExpHistogram:
		b.registerAlias(e, variantMain, base) // the native histogram
		b.registerAlias(e, variantCount, base+"_count")
		b.registerAlias(e, variantSum, base+"_sum")
	case kindHistogram, kindSummary:
		b.registerAlias(e, variantCount, base+"_count")
		b.registerAlias(e, variantSum, base+"_sum")
	default:
		b.registerAlias(e, variantMain, base)
	}
}

func (b *batch) registerAlias(e *nameEntry, variant int, alias string) {
	if alias == e.names[variant] {
		return
	}
	e.aliasNames[variant] = alias
	e.aliases[variant], e.hasAlias[variant] = b.st.AddAlias(alias, e.names[variant])
}

// refreshAliases registers e's aliases again when the store's alias epoch
// moved since they were registered (the sweeper dropped an alias whose
// names had no series, and may have handed its ID to another name). It
// runs once per stored name and request; without a move it costs one
// atomic load.
func (b *batch) refreshAliases(e *nameEntry) {
	epoch := b.st.AliasEpoch()
	if epoch == e.aliasEpoch {
		return
	}
	e.aliasEpoch = epoch
	for v, alias := range e.aliasNames {
		if alias != "" {
			e.aliases[v], e.hasAlias[v] = b.st.AddAlias(alias, e.names[v])
		}
	}
}

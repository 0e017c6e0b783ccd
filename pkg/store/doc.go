// Package store keeps a short window of samples for every series pushed to
// the scaler, under concurrent OTLP writes and concurrent query reads.
//
// Series are identified by a 64-bit identity hash computed by the caller
// (the receiver hashes the metric name, the visible labels and every
// resource attribute, so pods that report identical visible labels stay
// distinct). Each series gets a dense SeriesRef and a ring of samples sized
// from the retention and its observed interval; readers address series by
// ref.
//
// Layout, per series at 1M series with 21 samples (performance.md T3–T5):
// a 32 B header (memSeries), a ring of 12 B slots plus an 8 B base
// (ring.go), 12 B index slots at a load factor of 0.375–0.75 (index.go), an
// 8 B series-table slot, one 4 B postings entry per label (table.go), and
// an interned label set shared by the series of one pod (symbols.go).
// TestMemory measures about 430 B per series all-in at 100k and 1M series
// of realistic vLLM label sets (budget 450) and 10.7 B per extra sample.
//
// Sample memory is bounded by configuration: a ring holds at most
// MaxSamplesPerSeries samples, all rings together at most MaxSampleMemory
// bytes (ringLimits in ring.go). A ring that has reached its bound while
// its oldest sample is still within the retention is thinned rather than
// truncated, so it keeps covering the retention at a coarser resolution
// and range functions never see a window silently shorter than asked
// (ring.go; counted in keda_otel_scaler_store_samples_thinned_total).
//
// A histogram series (CreateHistogram) also takes native histogram
// samples (AppendHistogram): each is a slot of the same ring whose value
// is a marker naming the histogram's entry in the series' log (hist.go),
// so ordering, retention, thinning (which keeps both sides of every
// histogram counter reset), sweeping and snapshots treat it like a float
// sample. Its entry costs 8 B per word of 5 + spans + buckets words
// (MemoryPerHistogramSample), charged to MaxSampleMemory with the rings.
// Readers copy histograms out (Reader.LatestHistogram,
// Reader.RangeHistograms) under the same seqlock.
//
// Nothing on the read path takes a lock: appends serialise per series on a
// seqlock, lookups probe a sharded open-addressing table, and the series
// table, postings and symbols are append-only or copy-on-write structures
// published with atomic stores. Each structure's memory-ordering contract
// is documented beside it. Series creation and deletion serialise on one
// mutex; they happen once per series lifetime.
//
// Query evaluation reads through read.go: a Handle is a series resolved
// once (valid until the generation moves), a Reader fixes the clock for a
// batch of reads, a Window views a range of a ring in place, and
// Reader.ScanRange summarises a range for rate-like functions, reading
// each sample once, all under the ring's seqlock protocol. CreatedSince
// (createlog.go) lets a cached selection check only the series created
// since it was made. WriteSnapshot is a reader too: checkpoints take no
// lock and never block an append.
//
// All times are milliseconds taken from the samples or from the injected
// clock in Settings, never from time.Now deep inside, so tests can load
// historical data. A background sweeper (Start/Shutdown) deletes series
// silent for longer than SeriesTTL, and with them their label sets, the
// legacy aliases none of whose names has a series left, and every label
// name, value and metric name that no live series, set, alias or compiled
// trigger (AcquireMetricID) uses any more (symbols.go). Freed refs, set
// IDs and symbol IDs are reused only after the next sweep.
package store

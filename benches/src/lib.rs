//! Criterion benchmarks of metrics-exporter live in `benches/benches/`.

//! Cost of encoding a snapshot: Prometheus text 0.0.4, OpenMetrics, and gzip of the text, at
//! 1,000, 10,000 and 100,000 series.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use exporter::encode::prometheus::{encode_openmetrics, encode_text};
use exporter::service::Published;

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.sample_size(20);
    for series in [1_000usize, 10_000, 100_000] {
        let snapshot = benches::synthetic_snapshot(series);
        group.throughput(Throughput::Elements(series as u64));
        group.bench_with_input(BenchmarkId::new("prometheus_text", series), &snapshot, |b, s| {
            b.iter(|| encode_text(s))
        });
        group.bench_with_input(BenchmarkId::new("openmetrics", series), &snapshot, |b, s| {
            b.iter(|| encode_openmetrics(s))
        });
    }
    group.finish();
}

fn serving(c: &mut Criterion) {
    // What a scrape costs the server once a snapshot is published: a clone of the bytes
    // (and, first time per snapshot, the gzip).
    let snapshot = benches::synthetic_snapshot(10_000);
    let collection = exporter::engine::Collection {
        snapshot,
        outcomes: Vec::new(),
        duration: Default::default(),
    };
    let published = Published::new(collection);
    // The first call encodes (lazily, on the first scrape after a collection); later ones clone.
    published.text();
    c.bench_function("serve/pre_encoded_text_10000", |b| b.iter(|| published.text()));
    c.bench_function("serve/gzip_text_10000", |b| {
        b.iter(|| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&published.text()).unwrap();
            e.finish().unwrap()
        })
    });
}

criterion_group!(benches, encoding, serving);
criterion_main!(benches);

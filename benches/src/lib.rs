//! Support for the criterion benchmarks in `benches/benches/`: synthetic snapshots shaped like
//! a Proxmox host's output (per-guest families with guest labels, node families with identity
//! labels), so encoders are measured on realistic label sets.

use std::sync::Arc;
use std::time::SystemTime;

use exporter::model::{Identity, Kind, MetricDesc, Scope, Snapshot, SnapshotBuilder, Unit};

/// Twenty guest families with the label set of the Proxmox collector.
fn guest_descs() -> Vec<&'static MetricDesc> {
    (0..20)
        .map(|i| {
            let desc = MetricDesc {
                name: Box::leak(format!("container_synthetic_{i}_seconds_total").into_boxed_str()),
                help: "A synthetic per-guest counter.",
                kind: Kind::Counter,
                unit: Unit::Seconds,
                labels: &["container_id", "host_name", "type", "interface"],
                scope: Scope::Guest,
                otel: None,
            };
            &*Box::leak(Box::new(desc))
        })
        .collect()
}

/// A snapshot of exactly `series` series: 20 families, values with fractional parts.
pub fn synthetic_snapshot(series: usize) -> Arc<Snapshot> {
    let descs = guest_descs();
    let mut builder = SnapshotBuilder::new();
    let per_family = series.div_ceil(descs.len());
    let mut added = 0;
    'outer: for desc in &descs {
        for n in 0..per_family {
            if added == series {
                break 'outer;
            }
            let vmid = (100 + n / 2).to_string();
            let interface = if n % 2 == 0 { "eth0" } else { "eth1" };
            builder.push(
                desc,
                [vmid.as_str(), &format!("guest-{vmid}.example"), "lxc", interface],
                n as f64 * 1_234.567_891,
            );
            added += 1;
        }
    }
    let identity = Identity {
        host_name: "pve1".into(),
        container_id: None,
        instance: "pve1".into(),
    };
    Arc::new(builder.finish(Arc::new(identity), SystemTime::now(), 1))
}

//! Cost of turning one collection into an OTLP request: 10,000 series (500 guests of 20
//! series each, the shape a busy Proxmox host produces), converted with start times already
//! known (the steady state after the first export), and the same plus protobuf encoding
//! (what the gRPC client then does with it).

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use exporter::model::{Identity, Kind, MetricDesc, OtelName, Scope, Snapshot, SnapshotBuilder, Unit};
use exporter::otlp::{ResourceTemplate, StartTimes, to_request};
use prost::Message;

const GUEST: &[&str] = &["container_id", "host_name", "type"];

macro_rules! guest_desc {
    ($ident:ident, $name:expr, $kind:expr, $unit:expr, $labels:expr, $otel:expr) => {
        static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: "Synthetic benchmark series.",
            kind: $kind,
            unit: $unit,
            labels: $labels,
            scope: Scope::Guest,
            otel: $otel,
        };
    };
}

guest_desc!(
    CPU,
    "container_cpu_usage_seconds_total",
    Kind::Counter,
    Unit::Seconds,
    &["container_id", "host_name", "type", "mode"],
    Some(OtelName {
        name: "container.cpu.time",
        attributes: &["", "", "", "cpu.mode"],
        fixed: &[]
    })
);
guest_desc!(
    MEMORY,
    "container_memory_usage_bytes",
    Kind::Gauge,
    Unit::Bytes,
    GUEST,
    Some(OtelName {
        name: "container.memory.usage",
        attributes: &[],
        fixed: &[]
    })
);
guest_desc!(
    WORKING_SET,
    "container_memory_working_set_bytes",
    Kind::Gauge,
    Unit::Bytes,
    GUEST,
    Some(OtelName {
        name: "container.memory.working_set",
        attributes: &[],
        fixed: &[]
    })
);
guest_desc!(
    RX,
    "container_network_receive_bytes_total",
    Kind::Counter,
    Unit::Bytes,
    &["container_id", "host_name", "type", "interface"],
    Some(OtelName {
        name: "container.network.io",
        attributes: &["", "", "", "network.interface.name"],
        fixed: &[("network.io.direction", "receive")]
    })
);
guest_desc!(
    TX,
    "container_network_transmit_bytes_total",
    Kind::Counter,
    Unit::Bytes,
    &["container_id", "host_name", "type", "interface"],
    Some(OtelName {
        name: "container.network.io",
        attributes: &["", "", "", "network.interface.name"],
        fixed: &[("network.io.direction", "transmit")]
    })
);
guest_desc!(
    RX_PACKETS,
    "container_network_receive_packets_total",
    Kind::Counter,
    Unit::Count("{packet}"),
    &["container_id", "host_name", "type", "interface"],
    None
);
guest_desc!(
    TX_PACKETS,
    "container_network_transmit_packets_total",
    Kind::Counter,
    Unit::Count("{packet}"),
    &["container_id", "host_name", "type", "interface"],
    None
);
guest_desc!(
    PSI_CPU,
    "container_pressure_cpu_waiting_seconds_total",
    Kind::Counter,
    Unit::Seconds,
    GUEST,
    None
);
guest_desc!(
    PSI_MEMORY,
    "container_pressure_memory_waiting_seconds_total",
    Kind::Counter,
    Unit::Seconds,
    GUEST,
    None
);
guest_desc!(
    PSI_IO,
    "container_pressure_io_waiting_seconds_total",
    Kind::Counter,
    Unit::Seconds,
    GUEST,
    None
);
guest_desc!(
    OOM,
    "container_oom_events_total",
    Kind::Counter,
    Unit::Count("{event}"),
    GUEST,
    None
);
guest_desc!(
    THROTTLED,
    "container_cpu_cfs_throttled_seconds_total",
    Kind::Counter,
    Unit::Seconds,
    GUEST,
    None
);
guest_desc!(
    INFO,
    "pve_guest_info",
    Kind::Info,
    Unit::Ratio,
    &["container_id", "host_name", "type", "template"],
    None
);
guest_desc!(
    PROCESSES,
    "container_processes",
    Kind::Gauge,
    Unit::Count("{process}"),
    GUEST,
    None
);

/// 500 guests x 20 series.
fn snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for guest in 0..500u32 {
        let id = (100 + guest).to_string();
        let name = format!("guest-{guest}");
        let g = [id.as_str(), name.as_str(), "lxc"];
        let v = f64::from(guest);
        for mode in ["user", "system", "nice"] {
            b.push(&CPU, [g[0], g[1], g[2], mode], v * 3.5);
        }
        b.push(&MEMORY, g, v * 1.0e6);
        b.push(&WORKING_SET, g, v * 0.8e6);
        for interface in ["eth0", "eth1"] {
            b.push(&RX, [g[0], g[1], g[2], interface], v * 1.0e5);
            b.push(&TX, [g[0], g[1], g[2], interface], v * 2.0e5);
            b.push(&RX_PACKETS, [g[0], g[1], g[2], interface], v * 100.0);
            b.push(&TX_PACKETS, [g[0], g[1], g[2], interface], v * 200.0);
        }
        for desc in [&PSI_CPU, &PSI_MEMORY, &PSI_IO, &OOM, &THROTTLED, &PROCESSES] {
            b.push(desc, g, v);
        }
        b.push(&INFO, [g[0], g[1], g[2], "0"], 1.0);
    }
    let identity = Identity {
        host_name: "pve1".into(),
        container_id: None,
        instance: "pve1".into(),
    };
    b.finish(Arc::new(identity), SystemTime::now(), 1)
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    assert_eq!(snapshot.series_count(), 10_000);
    let template = ResourceTemplate {
        service_name: "metrics-exporter".into(),
        service_version: "0.1.0".into(),
        service_instance_id: None,
        extra: Vec::new(),
    };
    let mut starts = StartTimes::new();
    let first = to_request(&snapshot, &mut starts, &template);
    eprintln!(
        "10,000 series: {} resources, {} bytes encoded",
        first.resource_metrics.len(),
        first.encoded_len()
    );

    c.bench_function("otlp_to_request_10k_series", |b| {
        b.iter(|| black_box(to_request(black_box(&snapshot), &mut starts, &template)))
    });
    c.bench_function("otlp_to_request_and_encode_10k_series", |b| {
        b.iter(|| {
            let request = to_request(black_box(&snapshot), &mut starts, &template);
            black_box(request.encode_to_vec())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

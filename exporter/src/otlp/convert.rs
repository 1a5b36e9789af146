//! Snapshot -> `ExportMetricsServiceRequest`: names, units, attributes, resources and
//! cumulative start times. Pure apart from the [`StartTimes`] it is handed.
//!
//! # Names
//! A family whose `MetricDesc::otel` is set uses that semantic-convention name, its attribute
//! names (same order as the Prometheus labels) and its fixed attributes. Every other family
//! gets a name in a project namespace derived from the Prometheus name by [`otel_name`]:
//!
//! | Prometheus prefix    | OpenTelemetry prefix         |
//! |----------------------|------------------------------|
//! | `metrics_exporter_`  | `metrics_exporter.`          |
//! | `pve_`               | `proxmox.`                   |
//! | `node_`              | `node.`                      |
//! | `container_`         | `metrics_exporter.container.`|
//! | anything else        | `metrics_exporter.` + name   |
//!
//! then `_total` is dropped from counters and `_seconds` / `_bytes` from names whose unit is
//! seconds / bytes, because OTLP carries monotonicity and the unit as data. The rest keeps its
//! underscores: `node_pressure_cpu_waiting_seconds_total` becomes `node.pressure_cpu_waiting`
//! (unit `s`), which Prometheus's own OTLP translation turns back into the original name. The
//! `container_` prefix is not mapped to `container.` because that namespace belongs to the
//! semantic conventions, and a future convention could collide with a name made up here.
//! Labels without a declared attribute name keep their Prometheus name.
//!
//! # Resources: one per guest
//! The exporter's own series (`Scope::Node`) form one resource: `service.name`,
//! `service.version`, `service.instance.id`, `host.name`, and `container.id` when the exporter
//! itself runs in a container. Each guest (`Scope::Guest`, identified by its `container_id`,
//! `host_name`, `type` labels) gets its own resource with the same service and host attributes
//! plus `container.id`, `container.name` and `proxmox.guest.type`, and its series keep only
//! their other labels as data point attributes. Resource-per-guest, because the semantic
//! conventions define `container.id` / `container.name` as resource attributes and the
//! `container.*` metrics as measurements *of* that resource; the collector's own container
//! receivers (docker_stats, kubeletstats) emit one resource per container for the same reason,
//! so backends that promote resource attributes or join on `target_info` treat our guests like
//! every other container. Point attributes would put identity where no backend looks for it.
//!
//! # Temporality
//! Counters are cumulative monotonic sums, histograms cumulative histograms, gauges and
//! `*_info` families gauges (an info series is a gauge of 1, the value Prometheus serves, with
//! the information in its attributes; OTLP has no info type). Start times: see [`StartTimes`].

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_semantic_conventions::attribute as semconv;

use super::config::OtlpConfig;
use crate::model::{CountsSince, Family, Kind, LabelValue, MetricDesc, Sample, Scope, Snapshot, Unit, Value};

/// The Prometheus labels of a `Scope::Guest` family that identify the guest, and the resource
/// attribute each becomes.
pub const GUEST_LABELS: [(&str, &str); 3] = [
    ("container_id", semconv::CONTAINER_ID),
    ("host_name", semconv::CONTAINER_NAME),
    ("type", "proxmox.guest.type"),
];

/// The instrumentation scope every metric is reported under: this exporter.
pub const SCOPE_NAME: &str = "metrics-exporter";

/// The resource attributes that do not come from a snapshot, fixed at start.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceTemplate {
    pub service_name: String,
    pub service_version: String,
    /// `None`: the snapshot's `Identity::instance`.
    pub service_instance_id: Option<String>,
    /// From `OTEL_RESOURCE_ATTRIBUTES`, applied to every resource.
    pub extra: Vec<(String, String)>,
}

impl ResourceTemplate {
    pub fn from_config(config: &OtlpConfig) -> Self {
        ResourceTemplate {
            service_name: config.service_name.clone(),
            service_version: config.service_version.clone(),
            service_instance_id: config.service_instance_id.clone(),
            extra: config.resource_attributes.clone(),
        }
    }

    /// The node resource's attributes for `snapshot`. Later entries of the extra attributes
    /// override detected ones (`host.name`), never the service attributes (config resolved
    /// those already).
    fn node_attributes(&self, snapshot: &Snapshot) -> Vec<KeyValue> {
        let identity = &snapshot.identity;
        let mut attributes = vec![
            kv(semconv::SERVICE_NAME, &self.service_name),
            kv(semconv::SERVICE_VERSION, &self.service_version),
            kv(
                semconv::SERVICE_INSTANCE_ID,
                self.service_instance_id.as_deref().unwrap_or(&identity.instance),
            ),
        ];
        let mut detected = Vec::new();
        if !identity.host_name.is_empty() {
            detected.push((semconv::HOST_NAME, identity.host_name.as_str()));
        }
        if let Some(id) = &identity.container_id {
            detected.push((semconv::CONTAINER_ID, id.as_str()));
        }
        for (key, value) in detected {
            if !self.extra.iter().any(|(k, _)| k == key) {
                attributes.push(kv(key, value));
            }
        }
        attributes.extend(self.extra.iter().map(|(k, v)| kv(k, v)));
        attributes.retain(|a| !string_value(a).is_some_and(str::is_empty));
        attributes
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn string_value(kv: &KeyValue) -> Option<&str> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Nanoseconds since the Unix epoch (0 for a clock before 1970, which OTLP reads as unknown).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The start time of every cumulative series (counters and histograms), keyed by metric name
/// and label values, kept between exports.
///
/// - Where the snapshot says since when a family has been counting ([`CountsSince`]: the
///   node's boot, the container's or the guest's start, the exporter's start), that instant is
///   the series' start: the counter really was zero then, so a backend that ingests start
///   times as a zero sample (Prometheus created timestamps) draws the true increase.
/// - Where nothing better is known, a series' start is the time of its first observation by
///   this process. Its first point then has start == time: the OpenTelemetry collector's "true
///   reset point" convention for a cumulative whose origin is unknown (the metricstarttime
///   processor's default), which tells a consumer that this point is a baseline. Every later
///   point carries the same, earlier, start.
/// - A known start that changes (a guest restarted) starts the series again at the new start.
///   A value (histogram: count) below the previous one with the same known start is a reset the
///   source did not announce: the series starts again at that point's time, as a reset point.
/// - A start is never later than its point's time (a clock stepped back is clamped).
/// - A series absent from a snapshot is forgotten at the end of that conversion, so memory
///   follows the live series count; if it comes back it starts again.
#[derive(Debug, Default)]
pub struct StartTimes {
    series: HashMap<&'static str, HashMap<Box<[LabelValue]>, SeriesStart>>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct SeriesStart {
    start: u64,
    /// The start the snapshot declared at the last observation.
    known: Option<u64>,
    last: f64,
    generation: u64,
}

impl StartTimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of series tracked.
    pub fn len(&self) -> usize {
        self.series.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records one observation whose source declared `known` as its start (Unix nanoseconds)
    /// and returns the series' start time.
    fn observe(&mut self, name: &'static str, labels: &[LabelValue], value: f64, time: u64, known: Option<u64>) -> u64 {
        let generation = self.generation;
        let known = known.map(|k| k.min(time));
        let family = self.series.entry(name).or_default();
        // Lookup by slice: a known series costs no allocation.
        if let Some(state) = family.get_mut(labels) {
            if known != state.known {
                state.start = known.unwrap_or(time);
                state.known = known;
            } else if value < state.last {
                state.start = time;
            }
            state.last = value;
            state.generation = generation;
            return state.start;
        }
        let start = known.unwrap_or(time);
        family.insert(
            labels.into(),
            SeriesStart {
                start,
                known,
                last: value,
                generation,
            },
        );
        start
    }

    fn begin(&mut self) {
        self.generation += 1;
    }

    /// Forgets series not observed since [`begin`](Self::begin).
    fn sweep(&mut self) {
        let generation = self.generation;
        self.series.retain(|_, family| {
            family.retain(|_, s| s.generation == generation);
            !family.is_empty()
        });
    }
}

/// The OpenTelemetry name of a family: its declared semantic-convention name, or the project
/// namespace derived as the module documentation describes.
pub fn otel_name(desc: &MetricDesc) -> String {
    if let Some(otel) = &desc.otel {
        return otel.name.to_owned();
    }
    let name = desc.name;
    let (namespace, rest) = if let Some(rest) = name.strip_prefix("metrics_exporter_") {
        ("metrics_exporter.", rest)
    } else if let Some(rest) = name.strip_prefix("pve_") {
        ("proxmox.", rest)
    } else if let Some(rest) = name.strip_prefix("node_") {
        ("node.", rest)
    } else if let Some(rest) = name.strip_prefix("container_") {
        ("metrics_exporter.container.", rest)
    } else {
        ("metrics_exporter.", name)
    };
    let mut rest = rest;
    if desc.kind == Kind::Counter {
        rest = rest.strip_suffix("_total").unwrap_or(rest);
    }
    let unit_suffix = match desc.unit {
        Unit::Seconds => Some("_seconds"),
        Unit::Bytes => Some("_bytes"),
        _ => None,
    };
    if let Some(suffix) = unit_suffix {
        // Never strip the whole remainder (`node_seconds` stays `node.seconds`).
        if let Some(stripped) = rest.strip_suffix(suffix).filter(|s| !s.is_empty()) {
            rest = stripped;
        }
    }
    format!("{namespace}{rest}")
}

/// The attribute name of label `index` of `desc`.
fn attribute_name(desc: &MetricDesc, index: usize) -> &'static str {
    desc.otel
        .as_ref()
        .and_then(|o| o.attributes.get(index).copied())
        .filter(|a| !a.is_empty())
        .unwrap_or(desc.labels[index])
}

/// An empty metric of `desc`'s kind, for one resource.
fn new_metric(desc: &'static MetricDesc, name: &str) -> Metric {
    let data = match desc.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points: Vec::new(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Gauge | Kind::Info => metric::Data::Gauge(Gauge {
            data_points: Vec::new(),
        }),
        Kind::Histogram => metric::Data::Histogram(Histogram {
            data_points: Vec::new(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    };
    Metric {
        name: name.to_owned(),
        description: desc.help.to_owned(),
        unit: desc.unit.ucum().to_owned(),
        data: Some(data),
        ..Default::default()
    }
}

/// Adds one sample to `metric`. `skip` lists label indexes that went to the resource;
/// `known` is the start the snapshot declares for the sample's series.
fn push_point(
    metric: &mut Metric,
    family: &Family,
    sample: &Sample,
    skip: &[usize],
    time: u64,
    known: Option<u64>,
    starts: &mut StartTimes,
) {
    let desc = family.desc;
    let mut attributes: Vec<KeyValue> = Vec::with_capacity(desc.labels.len() + fixed_len(desc));
    for (index, value) in sample.labels.iter().enumerate() {
        // Empty is absent, as in Prometheus.
        if !skip.contains(&index) && !value.is_empty() {
            attributes.push(kv(attribute_name(desc, index), value));
        }
    }
    if let Some(otel) = &desc.otel {
        attributes.extend(otel.fixed.iter().map(|(k, v)| kv(k, v)));
    }
    match (metric.data.as_mut(), &sample.value) {
        (Some(metric::Data::Sum(sum)), Value::Number(v)) => {
            let start = starts.observe(desc.name, &sample.labels, *v, time, known);
            sum.data_points.push(number_point(attributes, start, time, *v));
        }
        (Some(metric::Data::Gauge(gauge)), Value::Number(v)) => {
            gauge.data_points.push(number_point(attributes, 0, time, *v));
        }
        (Some(metric::Data::Histogram(histogram)), Value::Histogram(h)) => {
            let start = starts.observe(desc.name, &sample.labels, h.count as f64, time, known);
            let mut bucket_counts = Vec::with_capacity(h.buckets.len() + 1);
            let mut below = 0u64;
            for (_, cumulative) in &h.buckets {
                bucket_counts.push(cumulative.saturating_sub(below));
                below = *cumulative;
            }
            bucket_counts.push(h.count.saturating_sub(below));
            histogram.data_points.push(HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts,
                explicit_bounds: h.buckets.iter().map(|(bound, _)| *bound).collect(),
                ..Default::default()
            });
        }
        // A histogram value in a number family or the reverse is a collector bug; sending
        // a made-up conversion would be worse than leaving the sample out.
        _ => debug_assert!(false, "{}: value does not match kind {:?}", desc.name, desc.kind),
    }
}

fn fixed_len(desc: &MetricDesc) -> usize {
    desc.otel.as_ref().map_or(0, |o| o.fixed.len())
}

fn number_point(attributes: Vec<KeyValue>, start: u64, time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// One resource's metrics in the making.
struct ResourceBuild {
    attributes: Vec<KeyValue>,
    metrics: Vec<Metric>,
    /// Index of the family whose metric is `metrics.last()`, to append to it.
    current_family: Option<usize>,
    /// A guest's start (Unix nanoseconds), when the snapshot declares it.
    guest_start: Option<u64>,
}

impl ResourceBuild {
    fn new(attributes: Vec<KeyValue>) -> Self {
        ResourceBuild {
            attributes,
            metrics: Vec::new(),
            current_family: None,
            guest_start: None,
        }
    }

    fn finish(self, scope: &InstrumentationScope) -> ResourceMetrics {
        ResourceMetrics {
            resource: Some(Resource {
                attributes: self.attributes,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope.clone()),
                metrics: self.metrics,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// Converts one snapshot into one export request and advances `starts`.
///
/// Every call must get the next snapshot in collection order (also those whose request is
/// later dropped), so that start times and reset detection follow the real series.
pub fn to_request(
    snapshot: &Snapshot,
    starts: &mut StartTimes,
    template: &ResourceTemplate,
) -> ExportMetricsServiceRequest {
    let time = unix_nanos(snapshot.timestamp);
    starts.begin();
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let node_attributes = template.node_attributes(snapshot);
    let mut node = ResourceBuild::new(node_attributes.clone());
    let mut guests: Vec<ResourceBuild> = Vec::new();
    let mut guest_index: HashMap<[LabelValue; 3], usize> = HashMap::new();
    let empty: LabelValue = LabelValue::from("");
    let guest_starts: HashMap<&[LabelValue], u64> = snapshot
        .guest_starts
        .iter()
        .map(|g| (&*g.identity, unix_nanos(g.start)))
        .collect();

    for (family_index, family) in snapshot.families.iter().enumerate() {
        let desc = family.desc;
        let name = otel_name(desc);
        match desc.scope {
            Scope::Node => {
                let mut metric = new_metric(desc, &name);
                let known = match family.since {
                    CountsSince::Instant(at) => Some(unix_nanos(at)),
                    CountsSince::Unknown | CountsSince::GuestStart => None,
                };
                for sample in &family.samples {
                    push_point(&mut metric, family, sample, &[], time, known, starts);
                }
                node.metrics.push(metric);
            }
            Scope::Guest => {
                let positions: [Option<usize>; 3] =
                    GUEST_LABELS.map(|(label, _)| desc.labels.iter().position(|l| *l == label));
                let skip: Vec<usize> = positions.iter().flatten().copied().collect();
                for sample in &family.samples {
                    let key = positions.map(|p| p.map_or_else(|| empty.clone(), |i| sample.labels[i].clone()));
                    let slot = match guest_index.get(&key) {
                        Some(slot) => *slot,
                        None => {
                            let attributes = guest_attributes(&node_attributes, &key);
                            let mut guest = ResourceBuild::new(attributes);
                            guest.guest_start = guest_starts.get(&key[..]).copied();
                            guests.push(guest);
                            guest_index.insert(key, guests.len() - 1);
                            guests.len() - 1
                        }
                    };
                    let guest = &mut guests[slot];
                    if guest.current_family != Some(family_index) {
                        guest.metrics.push(new_metric(desc, &name));
                        guest.current_family = Some(family_index);
                    }
                    let known = match family.since {
                        CountsSince::Instant(at) => Some(unix_nanos(at)),
                        CountsSince::GuestStart => guest.guest_start,
                        CountsSince::Unknown => None,
                    };
                    let metric = guest.metrics.last_mut().expect("pushed above");
                    push_point(metric, family, sample, &skip, time, known, starts);
                }
            }
        }
    }
    starts.sweep();

    let mut resource_metrics = Vec::with_capacity(1 + guests.len());
    if !node.metrics.is_empty() {
        resource_metrics.push(node.finish(&scope));
    }
    resource_metrics.extend(guests.into_iter().map(|g| g.finish(&scope)));
    ExportMetricsServiceRequest { resource_metrics }
}

/// A guest's resource: the node's attributes minus any container identity of the exporter
/// itself, plus the guest's identity (which nothing overrides).
fn guest_attributes(node: &[KeyValue], key: &[LabelValue; 3]) -> Vec<KeyValue> {
    let guest_keys: [&str; 3] = GUEST_LABELS.map(|(_, attribute)| attribute);
    let mut attributes: Vec<KeyValue> = node
        .iter()
        .filter(|a| !guest_keys.contains(&a.key.as_str()))
        .cloned()
        .collect();
    for ((_, attribute), value) in GUEST_LABELS.iter().zip(key) {
        if !value.is_empty() {
            attributes.push(kv(attribute, value));
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Histogram as ModelHistogram, Identity, OtelName, SnapshotBuilder};
    use std::sync::Arc;
    use std::time::Duration;

    static CPU: MetricDesc = MetricDesc {
        name: "container_cpu_usage_seconds_total",
        help: "CPU time.",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        labels: &["container_id", "host_name", "type", "mode"],
        scope: Scope::Guest,
        otel: Some(OtelName {
            name: "container.cpu.time",
            attributes: &["container.id", "container.name", "proxmox.guest.type", "cpu.mode"],
            fixed: &[],
        }),
    };
    static PSI: MetricDesc = MetricDesc {
        name: "node_pressure_cpu_waiting_seconds_total",
        help: "PSI some.",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        labels: &[],
        scope: Scope::Node,
        otel: None,
    };
    static RX: MetricDesc = MetricDesc {
        name: "node_network_receive_bytes_total",
        help: "Received.",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        labels: &["device"],
        scope: Scope::Node,
        otel: Some(OtelName {
            name: "system.network.io",
            attributes: &["network.interface.name"],
            fixed: &[("network.io.direction", "receive")],
        }),
    };
    static LAT: MetricDesc = MetricDesc {
        name: "container_runqueue_latency_seconds",
        help: "Run-queue latency.",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &["container_id", "host_name", "type"],
        scope: Scope::Guest,
        otel: None,
    };

    fn template() -> ResourceTemplate {
        ResourceTemplate {
            service_name: "svc".into(),
            service_version: "1.2.3".into(),
            service_instance_id: None,
            extra: vec![("deployment.environment.name".into(), "test".into())],
        }
    }

    fn snapshot(cpu: f64, secs: u64) -> Snapshot {
        let mut b = SnapshotBuilder::new();
        b.push(&CPU, ["101", "web", "lxc", "user"], cpu);
        b.push(&CPU, ["102", "db", "lxc", "user"], 5.0);
        b.push(&PSI, [] as [&str; 0], 7.0);
        b.push(&RX, ["eth0"], 1000.0);
        b.push_value(
            &LAT,
            ["101", "web", "lxc"],
            Value::Histogram(Box::new(ModelHistogram {
                buckets: vec![(0.001, 3), (0.01, 5)],
                sum: 0.02,
                count: 6,
            })),
        );
        let identity = Identity {
            host_name: "pve1".into(),
            container_id: None,
            instance: "pve1".into(),
        };
        b.finish(Arc::new(identity), UNIX_EPOCH + Duration::from_secs(secs), secs)
    }

    fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attributes.iter().find(|a| a.key == key).and_then(string_value)
    }

    #[test]
    fn derived_names() {
        assert_eq!(otel_name(&PSI), "node.pressure_cpu_waiting");
        assert_eq!(otel_name(&LAT), "metrics_exporter.container.runqueue_latency");
        assert_eq!(otel_name(&CPU), "container.cpu.time");
        let info = MetricDesc {
            name: "pve_guest_info",
            kind: Kind::Info,
            unit: Unit::Ratio,
            ..PSI_LIKE
        };
        assert_eq!(otel_name(&info), "proxmox.guest_info");
        let own = MetricDesc {
            name: "metrics_exporter_otlp_exports_total",
            unit: Unit::Count("{export}"),
            ..PSI_LIKE
        };
        assert_eq!(otel_name(&own), "metrics_exporter.otlp_exports");
        let odd = MetricDesc {
            name: "up_seconds",
            kind: Kind::Gauge,
            ..PSI_LIKE
        };
        assert_eq!(otel_name(&odd), "metrics_exporter.up");
    }

    const PSI_LIKE: MetricDesc = MetricDesc {
        name: "x",
        help: "",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        labels: &[],
        scope: Scope::Node,
        otel: None,
    };

    #[test]
    fn resources_per_guest_attributes_and_values() {
        let mut starts = StartTimes::new();
        let request = to_request(&snapshot(10.0, 100), &mut starts, &template());
        assert_eq!(request.resource_metrics.len(), 3, "node + 2 guests");
        let node = request.resource_metrics[0].resource.as_ref().unwrap();
        assert_eq!(attr(&node.attributes, "service.name"), Some("svc"));
        assert_eq!(attr(&node.attributes, "service.instance.id"), Some("pve1"));
        assert_eq!(attr(&node.attributes, "host.name"), Some("pve1"));
        assert_eq!(attr(&node.attributes, "deployment.environment.name"), Some("test"));
        assert_eq!(attr(&node.attributes, "container.id"), None);
        let guest = request.resource_metrics[1].resource.as_ref().unwrap();
        assert_eq!(attr(&guest.attributes, "container.id"), Some("101"));
        assert_eq!(attr(&guest.attributes, "container.name"), Some("web"));
        assert_eq!(attr(&guest.attributes, "proxmox.guest.type"), Some("lxc"));
        assert_eq!(attr(&guest.attributes, "host.name"), Some("pve1"));
        let metrics = &request.resource_metrics[1].scope_metrics[0].metrics;
        let names: Vec<_> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["container.cpu.time", "metrics_exporter.container.runqueue_latency"]
        );
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!()
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points.len(), 1);
        assert_eq!(
            sum.data_points[0].attributes.len(),
            1,
            "guest labels went to the resource"
        );
        assert_eq!(attr(&sum.data_points[0].attributes, "cpu.mode"), Some("user"));
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsDouble(10.0)));
        let Some(metric::Data::Histogram(h)) = &metrics[1].data else {
            panic!()
        };
        assert_eq!(h.data_points[0].explicit_bounds, [0.001, 0.01]);
        assert_eq!(h.data_points[0].bucket_counts, [3, 2, 1]);
        let rx = &request.resource_metrics[0].scope_metrics[0].metrics[1];
        assert_eq!((rx.name.as_str(), rx.unit.as_str()), ("system.network.io", "By"));
        let Some(metric::Data::Sum(sum)) = &rx.data else {
            panic!()
        };
        let attributes = &sum.data_points[0].attributes;
        assert_eq!(attr(attributes, "network.interface.name"), Some("eth0"));
        assert_eq!(attr(attributes, "network.io.direction"), Some("receive"));
    }

    fn cpu_start(request: &ExportMetricsServiceRequest) -> (u64, u64) {
        let Some(metric::Data::Sum(sum)) = &request.resource_metrics[1].scope_metrics[0].metrics[0].data else {
            panic!()
        };
        (
            sum.data_points[0].start_time_unix_nano,
            sum.data_points[0].time_unix_nano,
        )
    }

    /// (start, time) of the sum point of `metric` in the resource with `container.id` =
    /// `container` (`None`: the node), whose attribute `key` has `value` (or the first).
    fn sum_start(
        request: &ExportMetricsServiceRequest,
        container: Option<&str>,
        metric: &str,
        key: Option<(&str, &str)>,
    ) -> (u64, u64) {
        let resource = request
            .resource_metrics
            .iter()
            .find(|r| attr(&r.resource.as_ref().unwrap().attributes, "container.id") == container)
            .unwrap();
        let metric = resource.scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == metric)
            .unwrap();
        let points: Vec<(u64, u64, &[KeyValue])> = match metric.data.as_ref().unwrap() {
            metric::Data::Sum(sum) => sum
                .data_points
                .iter()
                .map(|p| (p.start_time_unix_nano, p.time_unix_nano, &p.attributes[..]))
                .collect(),
            metric::Data::Histogram(h) => h
                .data_points
                .iter()
                .map(|p| (p.start_time_unix_nano, p.time_unix_nano, &p.attributes[..]))
                .collect(),
            _ => panic!("not cumulative"),
        };
        let (start, time, _) = points
            .into_iter()
            .find(|(_, _, a)| key.is_none_or(|(k, v)| attr(a, k) == Some(v)))
            .unwrap();
        (start, time)
    }

    const BOOT: u64 = 1_700_000_000;
    const GUEST_101: u64 = 1_700_050_000;

    /// [`snapshot`] with the node's counters declared since boot, the guest counters since
    /// their guest's start, and a start for guest 101 only.
    fn declared(cpu: f64, secs: u64, guest_start: u64) -> Snapshot {
        let mut snapshot = snapshot(cpu, secs);
        for family in &mut snapshot.families {
            family.since = match family.desc.name {
                "node_network_receive_bytes_total" => CountsSince::Instant(UNIX_EPOCH + Duration::from_secs(BOOT)),
                "container_cpu_usage_seconds_total" | "container_runqueue_latency_seconds" => CountsSince::GuestStart,
                _ => CountsSince::Unknown,
            };
        }
        snapshot.guest_starts = vec![crate::model::GuestStart {
            identity: Arc::new(["101".into(), "web".into(), "lxc".into()]),
            start: UNIX_EPOCH + Duration::from_secs(guest_start),
        }];
        snapshot
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn declared_start_times_boot_guest_start_or_first_observation() {
        let mut starts = StartTimes::new();
        let t = BOOT + 100_000;
        let request = to_request(&declared(10.0, t, GUEST_101), &mut starts, &template());
        let cpu = Some(("cpu.mode", "user"));
        assert_eq!(
            sum_start(&request, None, "system.network.io", None),
            (BOOT * S, t * S),
            "node counter: boot"
        );
        assert_eq!(
            sum_start(&request, Some("101"), "container.cpu.time", cpu),
            (GUEST_101 * S, t * S),
            "guest counter: the guest's start"
        );
        assert_eq!(
            sum_start(
                &request,
                Some("101"),
                "metrics_exporter.container.runqueue_latency",
                None
            ),
            (GUEST_101 * S, t * S),
            "histogram: the guest's start"
        );
        assert_eq!(
            sum_start(&request, Some("102"), "container.cpu.time", cpu),
            (t * S, t * S),
            "guest without a known start: first observation"
        );
        assert_eq!(
            sum_start(&request, None, "node.pressure_cpu_waiting", None),
            (t * S, t * S),
            "undeclared: first observation"
        );

        // Held while nothing changes.
        let request = to_request(&declared(11.0, t + 1, GUEST_101), &mut starts, &template());
        assert_eq!(
            sum_start(&request, Some("101"), "container.cpu.time", cpu).0,
            GUEST_101 * S
        );
        assert_eq!(sum_start(&request, Some("102"), "container.cpu.time", cpu).0, t * S);

        // The counter went backwards with the same declared start: a reset at this point.
        let request = to_request(&declared(1.0, t + 2, GUEST_101), &mut starts, &template());
        assert_eq!(
            sum_start(&request, Some("101"), "container.cpu.time", cpu),
            ((t + 2) * S, (t + 2) * S)
        );
        let request = to_request(&declared(2.0, t + 3, GUEST_101), &mut starts, &template());
        assert_eq!(
            sum_start(&request, Some("101"), "container.cpu.time", cpu).0,
            (t + 2) * S
        );

        // The guest restarted (a new declared start), even with a value above the last one.
        let restarted = t + 3;
        let request = to_request(&declared(50.0, t + 4, restarted), &mut starts, &template());
        assert_eq!(
            sum_start(&request, Some("101"), "container.cpu.time", cpu).0,
            restarted * S
        );
        assert_eq!(
            sum_start(&request, None, "system.network.io", None).0,
            BOOT * S,
            "the node's start holds"
        );

        // A declared start after the point's time (clock stepped back) is clamped to it.
        let request = to_request(&declared(60.0, t + 5, t + 9), &mut starts, &template());
        assert_eq!(
            sum_start(&request, Some("101"), "container.cpu.time", cpu),
            ((t + 5) * S, (t + 5) * S)
        );
    }

    #[test]
    fn start_times_hold_reset_and_are_forgotten() {
        let mut starts = StartTimes::new();
        let (s1, t1) = cpu_start(&to_request(&snapshot(10.0, 100), &mut starts, &template()));
        assert_eq!(s1, t1, "first observation is a reset point");
        let (s2, t2) = cpu_start(&to_request(&snapshot(11.0, 101), &mut starts, &template()));
        let (s3, t3) = cpu_start(&to_request(&snapshot(12.0, 102), &mut starts, &template()));
        assert_eq!((s2, s3), (s1, s1));
        assert!(s2 < t2 && s3 < t3);
        let (s4, t4) = cpu_start(&to_request(&snapshot(1.0, 103), &mut starts, &template()));
        assert_eq!(s4, t4, "a counter that went backwards starts again");
        let tracked = starts.len();
        assert_eq!(tracked, 5, "2 cpu, psi, rx, histogram");
        let empty = SnapshotBuilder::new().finish(Arc::default(), UNIX_EPOCH + Duration::from_secs(104), 5);
        let request = to_request(&empty, &mut starts, &template());
        assert!(request.resource_metrics.is_empty());
        assert!(starts.is_empty(), "state of vanished series is freed");
    }
}

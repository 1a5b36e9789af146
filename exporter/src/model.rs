//! The metric model shared by every collector and every encoder.
//!
//! Each metric is declared once as a `static MetricDesc` beside the collector that produces
//! it (name, help, kind, unit, label names, scope and, where one exists, its OpenTelemetry
//! name). A collection fills a [`SnapshotBuilder`]; the finished [`Snapshot`] is immutable
//! and shared (`Arc`) by the Prometheus encoder, the `.prom` file writer and the OTLP pusher,
//! so one collection yields identical values on every output.
//!
//! Where the producer knows since when a cumulative family has been counting (the node's boot,
//! a guest's start, the exporter's start), it says so once per family ([`CountsSince`]) and once
//! per guest ([`GuestStart`]); the OTLP conversion turns that into start times. Samples carry
//! nothing extra, so the Prometheus path pays nothing for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// What kind of series a metric is (Prometheus and OpenTelemetry agree on these four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Cumulative, monotonic; a decrease means the source restarted.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A constant 1 whose labels carry the information (`*_info`).
    Info,
    /// Cumulative buckets with sum and count.
    Histogram,
}

/// The unit of a metric, used for OpenTelemetry (UCUM) and documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    Seconds,
    Bytes,
    /// A dimensionless count; the string is the UCUM annotation, e.g. `{process}`.
    Count(&'static str),
    /// A ratio (cores, load average); UCUM `1`.
    Ratio,
}

impl Unit {
    /// The UCUM spelling used by OpenTelemetry.
    pub fn ucum(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Bytes => "By",
            Unit::Count(annotation) => annotation,
            Unit::Ratio => "1",
        }
    }
}

/// Whose series a family holds, which decides the identity labels the encoders add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The machine (or container) the exporter runs on, and the exporter itself: the encoders
    /// add the exporter's identity labels (`host_name`, and `container_id` when known).
    Node,
    /// A Proxmox guest: the family carries its own `container_id`, `host_name` and `type`.
    Guest,
}

/// How a metric is named in OpenTelemetry: semantic-convention name, the attribute name for
/// each Prometheus label (same order as [`MetricDesc::labels`]) and fixed attributes that the
/// Prometheus name encodes in its spelling (e.g. `network.io.direction = receive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OtelName {
    pub name: &'static str,
    pub attributes: &'static [&'static str],
    pub fixed: &'static [(&'static str, &'static str)],
}

/// The one declaration of a metric.
#[derive(Debug, PartialEq, serde::Serialize)]
pub struct MetricDesc {
    /// The full Prometheus name as exposed (`node_cpu_seconds_total`, `pve_guest_info`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// Label names of every series, in order; identity labels are not listed for `Scope::Node`.
    pub labels: &'static [&'static str],
    pub scope: Scope,
    pub otel: Option<OtelName>,
}

/// A label value. Shared because guest labels repeat on every series of a guest.
pub type LabelValue = Arc<str>;

/// A cumulative histogram: `buckets` holds (upper bound, cumulative count), ascending, without
/// the `+Inf` bucket, which is `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Box<Histogram>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// One value per name in the family's `desc.labels`, in the same order. Shared (`Arc`)
    /// so that a collector emitting many series with the same label values (every series of
    /// a Proxmox guest) allocates the array once and clones a pointer per sample.
    pub labels: Arc<[LabelValue]>,
    pub value: Value,
}

/// Since when the series of a cumulative family (counter, histogram) have been counting: the
/// start time of OpenTelemetry's cumulative points. Declared by whoever knows it; Prometheus
/// has no place for it and its encoders ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CountsSince {
    /// Not known: the OTLP conversion takes the series' first observation.
    #[default]
    Unknown,
    /// Every series of the family has counted from zero since this instant (the node's boot,
    /// the container's start, the exporter's start).
    Instant(SystemTime),
    /// Each series has counted from zero since its guest started: the [`GuestStart`] of the
    /// snapshot whose identity is the series' `container_id`, `host_name`, `type`; Unknown for
    /// a guest without one.
    GuestStart,
}

/// When one guest started, declared by the collector that found it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestStart {
    /// The guest's `container_id`, `host_name`, `type` label values, in that order.
    pub identity: Arc<[LabelValue]>,
    pub start: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub desc: &'static MetricDesc,
    pub samples: Vec<Sample>,
    pub since: CountsSince,
}

impl Family {
    /// Adds `samples` after those it has; an empty family takes the vector itself (no copy,
    /// and no capacity beyond what the giver sized).
    pub fn take_samples(&mut self, mut samples: Vec<Sample>) {
        if self.samples.is_empty() {
            self.samples = samples;
        } else {
            self.samples.append(&mut samples);
        }
    }
}

/// The identity of the exporter's own node or container, added to `Scope::Node` series.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The UTS host name (`$PROC_PATH/sys/kernel/hostname`).
    pub host_name: String,
    /// The LXC container id (vmid) when it is configured or derivable, never guessed.
    pub container_id: Option<String>,
    /// `host_name:container_id` (or `host_name`), exposed once in an info series.
    pub instance: String,
}

impl Identity {
    /// The identity label pairs, in exposition order; an unknown value is left out
    /// (an empty label value is the same as an absent label to Prometheus anyway).
    pub fn labels(&self) -> Vec<(&'static str, LabelValue)> {
        let mut labels = Vec::with_capacity(2);
        if !self.host_name.is_empty() {
            labels.push(("host_name", LabelValue::from(self.host_name.as_str())));
        }
        if let Some(id) = &self.container_id {
            labels.push(("container_id", LabelValue::from(id.as_str())));
        }
        labels
    }
}

/// One finished collection: immutable once built.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub families: Vec<Family>,
    pub identity: Arc<Identity>,
    /// When the collection started.
    pub timestamp: SystemTime,
    /// 1 for the first collection of this process, +1 for every later one.
    pub sequence: u64,
    /// The start of every guest whose start is known (for [`CountsSince::GuestStart`]).
    pub guest_starts: Vec<GuestStart>,
}

impl Snapshot {
    /// Number of series (histograms count once).
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.desc.name == name)
    }
}

/// Collects samples into families; families keep the order in which they first appear.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
    guest_starts: Vec<GuestStart>,
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The family for `desc`, created empty on first use. A family that stays empty is not
    /// exported (no series means absent, never zero).
    pub fn family(&mut self, desc: &'static MetricDesc) -> &mut Family {
        let next = self.families.len();
        let slot = *self.index.entry(desc.name).or_insert(next);
        if slot == next {
            self.families.push(Family {
                desc,
                samples: Vec::new(),
                since: CountsSince::Unknown,
            });
        }
        &mut self.families[slot]
    }

    /// Adds one number (gauge, counter or info) with label values in `desc.labels` order.
    pub fn push<L: Into<LabelValue>>(
        &mut self,
        desc: &'static MetricDesc,
        labels: impl IntoIterator<Item = L>,
        value: f64,
    ) {
        self.push_value(desc, labels, Value::Number(value));
    }

    /// Adds one sample of any value kind.
    pub fn push_value<L: Into<LabelValue>>(
        &mut self,
        desc: &'static MetricDesc,
        labels: impl IntoIterator<Item = L>,
        value: Value,
    ) {
        let labels: Arc<[LabelValue]> = labels.into_iter().map(Into::into).collect();
        debug_assert_eq!(labels.len(), desc.labels.len(), "label arity of {}", desc.name);
        self.family(desc).samples.push(Sample { labels, value });
    }

    /// Adds one number whose label array is shared with other samples (an `Arc` clone
    /// instead of an allocation per sample).
    pub fn push_shared(&mut self, desc: &'static MetricDesc, labels: &Arc<[LabelValue]>, value: f64) {
        debug_assert_eq!(labels.len(), desc.labels.len(), "label arity of {}", desc.name);
        self.family(desc).samples.push(Sample {
            labels: Arc::clone(labels),
            value: Value::Number(value),
        });
    }

    /// Declares since when the families of `descs` that have samples now have been counting
    /// (families without samples are not created).
    pub fn set_counts_since(&mut self, descs: &[&'static MetricDesc], since: CountsSince) {
        for desc in descs {
            if let Some(&slot) = self.index.get(desc.name) {
                self.families[slot].since = since;
            }
        }
    }

    /// Declares when the guest whose `container_id`, `host_name`, `type` label values are
    /// `identity` started (an `Arc` clone: the collector's shared label array).
    pub fn guest_start(&mut self, identity: &Arc<[LabelValue]>, start: SystemTime) {
        self.guest_starts.push(GuestStart {
            identity: Arc::clone(identity),
            start,
        });
    }

    /// Every family so far, for declarations made after collection (the engine's node starts).
    pub fn families_mut(&mut self) -> impl Iterator<Item = &mut Family> {
        self.families.iter_mut()
    }

    /// Adds the samples another builder collected (used to merge per-collector output), with
    /// what it declared about start times.
    pub fn append(&mut self, other: SnapshotBuilder) {
        for family in other.families {
            let into = self.family(family.desc);
            into.take_samples(family.samples);
            if family.since != CountsSince::Unknown {
                into.since = family.since;
            }
        }
        self.guest_starts.extend(other.guest_starts);
    }

    pub fn is_empty(&self) -> bool {
        self.families.iter().all(|f| f.samples.is_empty())
    }

    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    pub fn finish(self, identity: Arc<Identity>, timestamp: SystemTime, sequence: u64) -> Snapshot {
        let families = self.families.into_iter().filter(|f| !f.samples.is_empty()).collect();
        Snapshot {
            families,
            identity,
            timestamp,
            sequence,
            guest_starts: self.guest_starts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static GAUGE: MetricDesc = MetricDesc {
        name: "test_gauge",
        help: "A test gauge.",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &["device"],
        scope: Scope::Node,
        otel: None,
    };
    static OTHER: MetricDesc = MetricDesc {
        name: "test_other",
        help: "Another.",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        labels: &[],
        scope: Scope::Node,
        otel: None,
    };

    #[test]
    fn families_group_samples_and_keep_first_appearance_order() {
        let mut b = SnapshotBuilder::new();
        b.push(&OTHER, [] as [&str; 0], 1.0);
        b.push(&GAUGE, ["a"], 2.0);
        b.push(&OTHER, [] as [&str; 0], 3.0);
        let mut second = SnapshotBuilder::new();
        second.push(&GAUGE, ["b"], 4.0);
        b.append(second);
        let snap = b.finish(Arc::default(), SystemTime::UNIX_EPOCH, 1);
        let names: Vec<_> = snap.families.iter().map(|f| f.desc.name).collect();
        assert_eq!(names, ["test_other", "test_gauge"]);
        assert_eq!(snap.family("test_gauge").unwrap().samples.len(), 2);
        assert_eq!(snap.series_count(), 4);
    }

    #[test]
    fn start_declarations_survive_merging() {
        let boot = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let mut part = SnapshotBuilder::new();
        part.push(&OTHER, [] as [&str; 0], 1.0);
        part.set_counts_since(&[&OTHER, &GAUGE], CountsSince::Instant(boot));
        let identity: Arc<[LabelValue]> = Arc::new(["101".into(), "web".into(), "lxc".into()]);
        part.guest_start(&identity, boot);
        let mut b = SnapshotBuilder::new();
        b.push(&GAUGE, ["a"], 2.0);
        b.append(part);
        let snap = b.finish(Arc::default(), SystemTime::UNIX_EPOCH, 1);
        assert_eq!(snap.family("test_other").unwrap().since, CountsSince::Instant(boot));
        // Declared on a family without samples in that part: nothing was created or changed.
        assert_eq!(snap.family("test_gauge").unwrap().since, CountsSince::Unknown);
        assert_eq!(snap.guest_starts, [GuestStart { identity, start: boot }]);
    }

    #[test]
    fn empty_families_are_dropped() {
        let mut b = SnapshotBuilder::new();
        b.family(&GAUGE);
        let snap = b.finish(Arc::default(), SystemTime::UNIX_EPOCH, 1);
        assert!(snap.families.is_empty());
    }
}

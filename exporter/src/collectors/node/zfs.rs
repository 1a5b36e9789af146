//! Collector `zfs`: the OpenZFS ARC and the health of every imported pool, under
//! node_exporter's names.
//!
//! Reads `$PROC_PATH/spl/kstat/zfs/arcstats` (a named kstat, parsed by [`crate::parse::zfs`])
//! and `$PROC_PATH/spl/kstat/zfs/<pool>/state` for every pool directory there.
//!
//! Produces `node_zfs_arc_<entry>` for the ARC entries of [`ARC`] that the module prints (an
//! entry an older or newer ZFS lacks is absent, not zero): the sizes (`size`, the target `c`,
//! its bounds `c_min` and `c_max`, and the parts of `size`), and the hit and miss counters.
//! node_exporter exports every arcstats entry untyped under `node_zfs_arc_<entry>`; the names
//! here are the same so its dashboards work, and since the counters' names have no `_total`
//! they are declared gauges (a Prometheus counter must end in `_total`): `rate()` applies to
//! them all the same. And `node_zfs_zpool_state{zpool,state}`: as node_exporter, one series per
//! known state (`online`, `degraded`, `faulted`, `offline`, `removed`, `unavail`,
//! `suspended`), 1 for the pool's current one and 0 for the others. A pool in a state outside
//! that list (the kernel also prints SPLIT, TRANSITIONING, UNKNOWN) gets one more series for
//! that state with 1, where node_exporter would show all zeros.
//!
//! Without the ZFS module `/proc/spl/kstat/zfs` does not exist: no series, no error, and the
//! notes say so. A garbage arcstats line costs that entry (the collection reports an error
//! naming the file); a pool whose state file cannot be parsed costs that pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_optional};
use crate::model::{Kind, LabelValue, MetricDesc, Scope, SnapshotBuilder, Unit};
use crate::parse::zfs;

macro_rules! arc_desc {
    ($ident:ident, $name:literal, $help:literal, $unit:expr) => {
        pub static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: $help,
            kind: Kind::Gauge,
            unit: $unit,
            labels: &[],
            scope: Scope::Node,
            otel: None,
        };
    };
}

arc_desc!(
    ARC_SIZE,
    "node_zfs_arc_size",
    "ARC size now (arcstats size): memory the kernel counts as used, not as cache.",
    Unit::Bytes
);
arc_desc!(
    ARC_C,
    "node_zfs_arc_c",
    "ARC target size (arcstats c): the ARC shrinks towards it under memory pressure.",
    Unit::Bytes
);
arc_desc!(
    ARC_C_MIN,
    "node_zfs_arc_c_min",
    "Lowest ARC target size (arcstats c_min): the ARC does not give memory back below it.",
    Unit::Bytes
);
arc_desc!(
    ARC_C_MAX,
    "node_zfs_arc_c_max",
    "Highest ARC target size (arcstats c_max, zfs_arc_max).",
    Unit::Bytes
);
arc_desc!(
    ARC_DATA,
    "node_zfs_arc_data_size",
    "ARC bytes holding file data (arcstats data_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_METADATA,
    "node_zfs_arc_metadata_size",
    "ARC bytes holding metadata (arcstats metadata_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_HDR,
    "node_zfs_arc_hdr_size",
    "ARC bytes of buffer headers (arcstats hdr_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_DBUF,
    "node_zfs_arc_dbuf_size",
    "ARC bytes of dbuf structures (arcstats dbuf_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_DNODE,
    "node_zfs_arc_dnode_size",
    "ARC bytes of dnodes (arcstats dnode_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_BONUS,
    "node_zfs_arc_bonus_size",
    "ARC bytes of bonus buffers (arcstats bonus_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_MRU,
    "node_zfs_arc_mru_size",
    "ARC bytes on the most-recently-used list (arcstats mru_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_MFU,
    "node_zfs_arc_mfu_size",
    "ARC bytes on the most-frequently-used list (arcstats mfu_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_L2_SIZE,
    "node_zfs_arc_l2_size",
    "Bytes cached on L2ARC devices, uncompressed (arcstats l2_size).",
    Unit::Bytes
);
arc_desc!(
    ARC_HITS,
    "node_zfs_arc_hits",
    "ARC hits since the module loaded (arcstats hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_IOHITS,
    "node_zfs_arc_iohits",
    "Requests served by an I/O already in flight, since the module loaded (arcstats iohits, ZFS 2.2+; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_MISSES,
    "node_zfs_arc_misses",
    "ARC misses since the module loaded (arcstats misses; cumulative).",
    Unit::Count("{miss}")
);
arc_desc!(
    ARC_DD_HITS,
    "node_zfs_arc_demand_data_hits",
    "ARC hits of demand data reads (arcstats demand_data_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_DD_MISSES,
    "node_zfs_arc_demand_data_misses",
    "ARC misses of demand data reads (arcstats demand_data_misses; cumulative).",
    Unit::Count("{miss}")
);
arc_desc!(
    ARC_DM_HITS,
    "node_zfs_arc_demand_metadata_hits",
    "ARC hits of demand metadata reads (arcstats demand_metadata_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_DM_MISSES,
    "node_zfs_arc_demand_metadata_misses",
    "ARC misses of demand metadata reads (arcstats demand_metadata_misses; cumulative).",
    Unit::Count("{miss}")
);
arc_desc!(
    ARC_PD_HITS,
    "node_zfs_arc_prefetch_data_hits",
    "ARC hits of prefetched data (arcstats prefetch_data_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_PD_MISSES,
    "node_zfs_arc_prefetch_data_misses",
    "ARC misses of prefetched data (arcstats prefetch_data_misses; cumulative).",
    Unit::Count("{miss}")
);
arc_desc!(
    ARC_PM_HITS,
    "node_zfs_arc_prefetch_metadata_hits",
    "ARC hits of prefetched metadata (arcstats prefetch_metadata_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_PM_MISSES,
    "node_zfs_arc_prefetch_metadata_misses",
    "ARC misses of prefetched metadata (arcstats prefetch_metadata_misses; cumulative).",
    Unit::Count("{miss}")
);
arc_desc!(
    ARC_MRU_HITS,
    "node_zfs_arc_mru_hits",
    "ARC hits on the most-recently-used list (arcstats mru_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_MFU_HITS,
    "node_zfs_arc_mfu_hits",
    "ARC hits on the most-frequently-used list (arcstats mfu_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_L2_HITS,
    "node_zfs_arc_l2_hits",
    "L2ARC hits (arcstats l2_hits; cumulative).",
    Unit::Count("{hit}")
);
arc_desc!(
    ARC_L2_MISSES,
    "node_zfs_arc_l2_misses",
    "L2ARC misses (arcstats l2_misses; cumulative).",
    Unit::Count("{miss}")
);
/// node_exporter calls this `node_zfs_arc_memory_throttle_count`; promtool refuses a `_count`
/// suffix outside histograms and summaries, so it is the counter it is, with `_total`.
pub static ARC_THROTTLE: MetricDesc = MetricDesc {
    name: "node_zfs_arc_memory_throttles_total",
    help: "Times the ARC throttled writes for lack of memory (arcstats memory_throttle_count).",
    kind: Kind::Counter,
    unit: Unit::Count("{event}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

/// The arcstats entries exported, each under node_exporter's name `node_zfs_arc_<entry>`.
pub static ARC: &[(&str, &MetricDesc)] = &[
    ("size", &ARC_SIZE),
    ("c", &ARC_C),
    ("c_min", &ARC_C_MIN),
    ("c_max", &ARC_C_MAX),
    ("data_size", &ARC_DATA),
    ("metadata_size", &ARC_METADATA),
    ("hdr_size", &ARC_HDR),
    ("dbuf_size", &ARC_DBUF),
    ("dnode_size", &ARC_DNODE),
    ("bonus_size", &ARC_BONUS),
    ("mru_size", &ARC_MRU),
    ("mfu_size", &ARC_MFU),
    ("l2_size", &ARC_L2_SIZE),
    ("hits", &ARC_HITS),
    ("iohits", &ARC_IOHITS),
    ("misses", &ARC_MISSES),
    ("demand_data_hits", &ARC_DD_HITS),
    ("demand_data_misses", &ARC_DD_MISSES),
    ("demand_metadata_hits", &ARC_DM_HITS),
    ("demand_metadata_misses", &ARC_DM_MISSES),
    ("prefetch_data_hits", &ARC_PD_HITS),
    ("prefetch_data_misses", &ARC_PD_MISSES),
    ("prefetch_metadata_hits", &ARC_PM_HITS),
    ("prefetch_metadata_misses", &ARC_PM_MISSES),
    ("mru_hits", &ARC_MRU_HITS),
    ("mfu_hits", &ARC_MFU_HITS),
    ("l2_hits", &ARC_L2_HITS),
    ("l2_misses", &ARC_L2_MISSES),
    ("memory_throttle_count", &ARC_THROTTLE),
];

pub static ZPOOL_STATE: MetricDesc = MetricDesc {
    name: "node_zfs_zpool_state",
    help: "1 for the pool's current state, 0 for the other known states (/proc/spl/kstat/zfs/<pool>/state).",
    kind: Kind::Gauge,
    unit: Unit::Ratio,
    labels: &["zpool", "state"],
    scope: Scope::Node,
    otel: None,
};

/// The states node_exporter exports a series for, in its order.
pub const KNOWN_STATES: [&str; 7] = [
    "online",
    "degraded",
    "faulted",
    "offline",
    "removed",
    "unavail",
    "suspended",
];

/// The `zfs` collector.
#[derive(Debug)]
pub struct ZfsCollector {
    /// `$PROC_PATH/spl/kstat/zfs`.
    kstat_dir: PathBuf,
    /// Whether that directory existed at start (for the notes).
    loaded_at_start: bool,
}

impl ZfsCollector {
    pub fn new(env: &Environment) -> Self {
        let kstat_dir = env.proc_path.join("spl/kstat/zfs");
        ZfsCollector {
            loaded_at_start: kstat_dir.is_dir(),
            kstat_dir,
        }
    }
}

/// The pools with a state file under `kstat_dir`, sorted by name; empty when the directory
/// does not exist (no ZFS module).
pub fn read_pool_names(kstat_dir: &Path) -> Result<Vec<String>, CollectError> {
    let entries = match std::fs::read_dir(kstat_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CollectError::io(kstat_dir, e)),
    };
    let mut pools = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CollectError::io(kstat_dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str())
            && entry.path().join("state").exists()
        {
            pools.push(name.to_owned());
        }
    }
    pools.sort();
    Ok(pools)
}

impl Collector for ZfsCollector {
    fn name(&self) -> &'static str {
        "zfs"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let mut errors = Vec::new();
        let arcstats = self.kstat_dir.join("arcstats");
        match read_optional(&arcstats) {
            Ok(Some(text)) => match zfs::parse_named(&text) {
                Ok(named) => {
                    for (entry, desc) in ARC {
                        if let Some(value) = named.get(entry) {
                            out.push(desc, [] as [&str; 0], value as f64);
                        }
                    }
                    if let [first, ..] = named.malformed.as_slice() {
                        errors.push(CollectError::parse(
                            &arcstats,
                            format!(
                                "{} malformed line(s) skipped, every other entry served; first: {first}",
                                named.malformed.len()
                            ),
                        ));
                    }
                }
                Err(e) => errors.push(CollectError::parse(&arcstats, e)),
            },
            // No ZFS module (or one without the ARC kstat): nothing to say.
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        match read_pool_names(&self.kstat_dir) {
            Ok(pools) => {
                for pool in pools {
                    let path = self.kstat_dir.join(&pool).join("state");
                    let text = match read_optional(&path) {
                        Ok(Some(text)) => text,
                        // Exported between the listing and the read: the pool is gone.
                        Ok(None) => continue,
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    };
                    let state = match zfs::parse_pool_state(&text) {
                        Ok(state) => state.to_ascii_lowercase(),
                        Err(e) => {
                            errors.push(CollectError::parse(&path, e));
                            continue;
                        }
                    };
                    let zpool = LabelValue::from(pool.as_str());
                    for known in KNOWN_STATES {
                        let labels: Arc<[LabelValue]> = Arc::new([zpool.clone(), LabelValue::from(known)]);
                        out.push_shared(&ZPOOL_STATE, &labels, if known == state { 1.0 } else { 0.0 });
                    }
                    if !KNOWN_STATES.contains(&state.as_str()) {
                        out.push(&ZPOOL_STATE, [zpool, LabelValue::from(state.as_str())], 1.0);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        crate::collectors::proxmox::guests::summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        if self.loaded_at_start {
            vec![format!(
                "ARC from {}/arcstats, pool health from {}/<pool>/state",
                self.kstat_dir.display(),
                self.kstat_dir.display()
            )]
        } else {
            vec![format!(
                "no ZFS series: {} did not exist at start (the ZFS module is not loaded); they appear when it is",
                self.kstat_dir.display()
            )]
        }
    }
}

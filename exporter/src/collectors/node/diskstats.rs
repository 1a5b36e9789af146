//! Collector `diskstats`: block device I/O of the host, under node_exporter's names and units.
//!
//! Reads `$PROC_PATH/diskstats` (parsed by [`crate::parse::diskstats`]) and the entries of
//! `$SYS_PATH/block`. Produces, labelled `device`: `node_disk_reads_completed_total`,
//! `node_disk_reads_merged_total`, `node_disk_read_bytes_total`,
//! `node_disk_read_time_seconds_total`, `node_disk_writes_completed_total`,
//! `node_disk_writes_merged_total`, `node_disk_written_bytes_total`,
//! `node_disk_write_time_seconds_total`, `node_disk_io_now`, `node_disk_io_time_seconds_total`,
//! `node_disk_io_time_weighted_seconds_total`; on kernels 4.18+ also
//! `node_disk_discards_completed_total`, `node_disk_discards_merged_total`,
//! `node_disk_discarded_sectors_total`, `node_disk_discard_time_seconds_total`; on 5.5+
//! `node_disk_flush_requests_total`, `node_disk_flush_requests_time_seconds_total`. Bytes are
//! sectors x 512 whatever the device's block size; times are the kernel's milliseconds / 1000.
//! Like node_exporter, discarded sectors stay sectors.
//!
//! Which devices: whole devices only, so that a disk's I/O is not counted again through its
//! partitions. sysfs decides, not the name: `/sys/block` lists every whole device (disks,
//! `dm-*`, `md*`, zvols `zd*`, `nbd*`) and none of their partitions, which live below their
//! disk (`/sys/block/sda/sda1`). Names would not do: a zvol's partition is `zd16p1` and a
//! device-mapper device can be partitioned too, which node_exporter's name pattern
//! `^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$` misses. Of the whole devices, `loop*`,
//! `ram*`, `zram*` and `fd*` are left out as node_exporter leaves them out, so the same
//! dashboards and alerts apply: a loop device repeats I/O of a file that the disk under it
//! already counts (a Proxmox container's raw image on directory storage is one; its I/O is the
//! guest's `io.stat` in the guests collector), and ram disks and floppies are not storage.
//!
//! Not in an LXC container (not a default there; enabled anyway it emits nothing and says
//! why): a container's `/proc/diskstats` is the host's, or lxcfs's view of it, which shows the
//! host's devices with the container's cgroup I/O, and sysfs is the host's.
//!
//! A malformed line (a truncated file, an unknown field count) costs that device only: every
//! other device is served and the collection reports an error naming the file and the line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_text};
use crate::model::{Kind, LabelValue, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse::diskstats::{self, SECTOR_BYTES};
use crate::platform::Platform;

macro_rules! disk_desc {
    ($ident:ident, $name:literal, $help:literal, $kind:expr, $unit:expr) => {
        disk_desc!($ident, $name, $help, $kind, $unit, None);
    };
    ($ident:ident, $name:literal, $help:literal, $kind:expr, $unit:expr, $otel:literal, $dir:literal) => {
        disk_desc!(
            $ident,
            $name,
            $help,
            $kind,
            $unit,
            Some(OtelName {
                name: $otel,
                attributes: &["system.device"],
                fixed: &[("disk.io.direction", $dir)],
            })
        );
    };
    ($ident:ident, $name:literal, $help:literal, $kind:expr, $unit:expr, $otel:expr) => {
        pub static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: $help,
            kind: $kind,
            unit: $unit,
            labels: &["device"],
            scope: Scope::Node,
            otel: $otel,
        };
    };
}

use Kind::{Counter, Gauge};

disk_desc!(
    READS_COMPLETED,
    "node_disk_reads_completed_total",
    "Reads completed (/proc/diskstats).",
    Counter,
    Unit::Count("{operation}"),
    "system.disk.operations",
    "read"
);
disk_desc!(
    READS_MERGED,
    "node_disk_reads_merged_total",
    "Adjacent reads merged into one (/proc/diskstats).",
    Counter,
    Unit::Count("{operation}"),
    "system.disk.merged",
    "read"
);
disk_desc!(
    READ_BYTES,
    "node_disk_read_bytes_total",
    "Bytes read: sectors read x 512 (/proc/diskstats).",
    Counter,
    Unit::Bytes,
    "system.disk.io",
    "read"
);
disk_desc!(
    READ_TIME,
    "node_disk_read_time_seconds_total",
    "Time spent by all reads (/proc/diskstats).",
    Counter,
    Unit::Seconds,
    "system.disk.operation_time",
    "read"
);
disk_desc!(
    WRITES_COMPLETED,
    "node_disk_writes_completed_total",
    "Writes completed (/proc/diskstats).",
    Counter,
    Unit::Count("{operation}"),
    "system.disk.operations",
    "write"
);
disk_desc!(
    WRITES_MERGED,
    "node_disk_writes_merged_total",
    "Adjacent writes merged into one (/proc/diskstats).",
    Counter,
    Unit::Count("{operation}"),
    "system.disk.merged",
    "write"
);
disk_desc!(
    WRITTEN_BYTES,
    "node_disk_written_bytes_total",
    "Bytes written: sectors written x 512 (/proc/diskstats).",
    Counter,
    Unit::Bytes,
    "system.disk.io",
    "write"
);
disk_desc!(
    WRITE_TIME,
    "node_disk_write_time_seconds_total",
    "Time spent by all writes (/proc/diskstats).",
    Counter,
    Unit::Seconds,
    "system.disk.operation_time",
    "write"
);
disk_desc!(
    IO_NOW,
    "node_disk_io_now",
    "I/Os in progress now (/proc/diskstats).",
    Gauge,
    Unit::Count("{operation}")
);
disk_desc!(
    IO_TIME,
    "node_disk_io_time_seconds_total",
    "Time the device had I/O in progress (/proc/diskstats).",
    Counter,
    Unit::Seconds,
    Some(OtelName {
        name: "system.disk.io_time",
        attributes: &["system.device"],
        fixed: &[],
    })
);
disk_desc!(
    IO_TIME_WEIGHTED,
    "node_disk_io_time_weighted_seconds_total",
    "I/O time weighted by the number of I/Os in progress (/proc/diskstats).",
    Counter,
    Unit::Seconds
);
disk_desc!(
    DISCARDS_COMPLETED,
    "node_disk_discards_completed_total",
    "Discards completed (/proc/diskstats, kernel 4.18+).",
    Counter,
    Unit::Count("{operation}")
);
disk_desc!(
    DISCARDS_MERGED,
    "node_disk_discards_merged_total",
    "Adjacent discards merged into one (/proc/diskstats, kernel 4.18+).",
    Counter,
    Unit::Count("{operation}")
);
disk_desc!(
    DISCARDED_SECTORS,
    "node_disk_discarded_sectors_total",
    "512-byte sectors discarded (/proc/diskstats, kernel 4.18+).",
    Counter,
    Unit::Count("{sector}")
);
disk_desc!(
    DISCARD_TIME,
    "node_disk_discard_time_seconds_total",
    "Time spent by all discards (/proc/diskstats, kernel 4.18+).",
    Counter,
    Unit::Seconds
);
disk_desc!(
    FLUSHES,
    "node_disk_flush_requests_total",
    "Flush requests completed (/proc/diskstats, kernel 5.5+).",
    Counter,
    Unit::Count("{operation}")
);
disk_desc!(
    FLUSH_TIME,
    "node_disk_flush_requests_time_seconds_total",
    "Time spent by all flush requests (/proc/diskstats, kernel 5.5+).",
    Counter,
    Unit::Seconds
);

/// The `diskstats` collector.
#[derive(Debug)]
pub struct DiskstatsCollector {
    /// `None` in a container: nothing there is the container's own disk I/O.
    diskstats: Option<PathBuf>,
    sys_block: PathBuf,
}

impl DiskstatsCollector {
    pub fn new(env: &Environment) -> Self {
        DiskstatsCollector {
            diskstats: (env.platform != Platform::Lxc).then(|| env.proc_path.join("diskstats")),
            sys_block: env.sys_path.join("block"),
        }
    }
}

/// The names of the whole block devices: the entries of `/sys/block` (sysfs spells a `/` in a
/// device name as `!`).
pub fn read_whole_devices(sys_block: &Path) -> Result<HashSet<String>, CollectError> {
    let entries = std::fs::read_dir(sys_block).map_err(|e| CollectError::io(sys_block, e))?;
    let mut names = HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| CollectError::io(sys_block, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.insert(name.to_owned());
        }
    }
    Ok(names)
}

/// Whole devices node_exporter leaves out by default and so do we (see the module comment):
/// `loop<N>`, `ram<N>`, `zram<N>`, `fd<N>`.
pub fn excluded(name: &str) -> bool {
    ["loop", "ram", "zram", "fd"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

impl Collector for DiskstatsCollector {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let Some(path) = &self.diskstats else {
            return Ok(());
        };
        let parsed = diskstats::parse(&read_text(path)?);
        let whole = read_whole_devices(&self.sys_block)?;
        let ms = |v: u64| v as f64 / 1000.0;
        let bytes = |sectors: u64| sectors as f64 * SECTOR_BYTES as f64;
        for d in &parsed.devices {
            let in_sysfs = if d.name.contains('/') {
                whole.contains(&d.name.replace('/', "!"))
            } else {
                whole.contains(&d.name)
            };
            if !in_sysfs || excluded(&d.name) {
                continue;
            }
            let device: Arc<[LabelValue]> = Arc::new([LabelValue::from(d.name.as_str())]);
            for (desc, value) in [
                (&READS_COMPLETED, d.reads_completed as f64),
                (&READS_MERGED, d.reads_merged as f64),
                (&READ_BYTES, bytes(d.sectors_read)),
                (&READ_TIME, ms(d.read_time_ms)),
                (&WRITES_COMPLETED, d.writes_completed as f64),
                (&WRITES_MERGED, d.writes_merged as f64),
                (&WRITTEN_BYTES, bytes(d.sectors_written)),
                (&WRITE_TIME, ms(d.write_time_ms)),
                (&IO_NOW, d.io_in_progress as f64),
                (&IO_TIME, ms(d.io_time_ms)),
                (&IO_TIME_WEIGHTED, ms(d.weighted_io_time_ms)),
            ] {
                out.push_shared(desc, &device, value);
            }
            if let Some(x) = d.discards {
                out.push_shared(&DISCARDS_COMPLETED, &device, x.completed as f64);
                out.push_shared(&DISCARDS_MERGED, &device, x.merged as f64);
                out.push_shared(&DISCARDED_SECTORS, &device, x.sectors as f64);
                out.push_shared(&DISCARD_TIME, &device, ms(x.time_ms));
            }
            if let Some(x) = d.flushes {
                out.push_shared(&FLUSHES, &device, x.completed as f64);
                out.push_shared(&FLUSH_TIME, &device, ms(x.time_ms));
            }
        }
        match parsed.malformed.as_slice() {
            [] => Ok(()),
            [first, ..] => Err(CollectError::parse(
                path,
                format!(
                    "{} malformed line(s) skipped, every other device served; first: {first}",
                    parsed.malformed.len()
                ),
            )),
        }
    }

    fn notes(&self) -> Vec<String> {
        match &self.diskstats {
            Some(path) => vec![format!(
                "from {}: whole devices listed in {} (no partitions), without loop, ram, zram and fd devices (node_exporter's default)",
                path.display(),
                self.sys_block.display()
            )],
            None => vec![
                "no disk series in an LXC container: /proc/diskstats there is the host's (or lxcfs's view of it), not the container's".into(),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::excluded;

    #[test]
    fn excluded_names() {
        for name in ["loop0", "loop12", "ram0", "zram0", "fd0"] {
            assert!(excluded(name), "{name}");
        }
        for name in [
            "loop",
            "loopback0",
            "sda",
            "dm-0",
            "zd0",
            "nvme0n1",
            "ramdisk",
            "fd0a",
            "md0",
        ] {
            assert!(!excluded(name), "{name}");
        }
    }
}
